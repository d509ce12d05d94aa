import { X509Certificate } from 'node:crypto';
import { isSpiffeId } from './spiffe.js';

/** What an operator needs to know about a served certificate. Never holds key material. */
export interface CertificateInfo {
  /** Hex serial number, upper case, no separators (as Envoy's admin /certs prints it). */
  serialNumber: string;
  subject: string;
  /** URI SAN that is a SPIFFE ID, if the leaf has one. */
  spiffeId?: string;
  dnsNames: string[];
  notBefore: Date;
  notAfter: Date;
}

export interface AltName {
  /** Node's prefix: `DNS`, `URI`, `IP Address`, `email`, `DirName`, `othername`, ... */
  type: string;
  value: string;
}

/** The operator-facing summary of a certificate (no key material). */
export function describeCertificate(cert: X509Certificate): CertificateInfo {
  const altNames = parseSubjectAltName(cert.subjectAltName ?? '');
  const spiffeId = altNames.find((n) => n.type === 'URI' && isSpiffeId(n.value))?.value;
  const info: CertificateInfo = {
    // Node already prints OpenSSL's BN_bn2hex form (e.g. `0A`); upper-case in case a version changes that.
    serialNumber: cert.serialNumber.toUpperCase(),
    // Node separates RDNs with newlines; one line reads better in logs and status output.
    subject: cert.subject.split('\n').join(', '),
    dnsNames: altNames.filter((n) => n.type === 'DNS').map((n) => n.value),
    notBefore: parseOpenSslTime(cert.validFrom),
    notAfter: parseOpenSslTime(cert.validTo),
  };
  if (spiffeId !== undefined) info.spiffeId = spiffeId;
  return info;
}

/**
 * Parses Node's `subjectAltName` string, e.g. `URI:spiffe://a/b, DNS:x.example`.
 * Since Node 17.3/16.14 (CVE-2021-44532) values with `,`, `"`, `\`, `'` or control characters are
 * printed as JSON strings (`DNS:"a\u002cb"`, older builds quote the whole entry), so a
 * `, ` outside quotes always separates entries.
 */
export function parseSubjectAltName(san: string): AltName[] {
  const names: AltName[] = [];
  for (const entry of splitOutsideQuotes(san)) {
    const unquoted = entry.startsWith('"') ? unjson(entry) : entry;
    const colon = unquoted.indexOf(':');
    if (colon === -1) continue;
    const type = unquoted.slice(0, colon);
    const raw = unquoted.slice(colon + 1);
    names.push({ type, value: raw.startsWith('"') ? unjson(raw) : raw });
  }
  return names;
}

function splitOutsideQuotes(s: string): string[] {
  const parts: string[] = [];
  let start = 0;
  let quoted = false;
  for (let i = 0; i < s.length; i++) {
    const c = s[i];
    if (quoted && c === '\\') i++; // skip the escaped character
    else if (c === '"') quoted = !quoted;
    else if (!quoted && c === ',' && s[i + 1] === ' ') {
      parts.push(s.slice(start, i));
      start = i + 2;
      i++;
    }
  }
  if (start < s.length) parts.push(s.slice(start));
  return parts.filter((p) => p !== '');
}

function unjson(quoted: string): string {
  try {
    const v: unknown = JSON.parse(quoted);
    return typeof v === 'string' ? v : quoted;
  } catch {
    return quoted; // not valid JSON after all: keep the text rather than drop the name
  }
}

const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];
// OpenSSL's ASN1_TIME_print format, as in X509Certificate.validFrom: `Jan  5 01:02:03 2024 GMT`.
const OPENSSL_TIME = /^([A-Z][a-z]{2}) +(\d{1,2}) (\d{2}):(\d{2}):(\d{2})(?:\.\d+)? (\d{4}) GMT$/;

/** Parses OpenSSL's time format explicitly rather than trusting Date.parse with a non-ISO string. */
export function parseOpenSslTime(s: string): Date {
  const m = OPENSSL_TIME.exec(s);
  const month = m ? MONTHS.indexOf(m[1] ?? '') : -1;
  if (!m || month === -1) return new Date(s);
  const [, , day, hh, mm, ss, year] = m.map(Number);
  return new Date(Date.UTC(year ?? 0, month, day, hh, mm, ss));
}

/**
 * True when `cert` (a parsed certificate, PEM or DER) is self-signed: issued by itself (names and
 * key identifiers match) and its signature verifies with its own public key. A root CA is; an
 * intermediate or a leaf is not. Input that does not parse as a certificate is not self-signed.
 */
export function isSelfSigned(cert: X509Certificate | string | Buffer): boolean {
  try {
    const c = cert instanceof X509Certificate ? cert : new X509Certificate(cert);
    return c.checkIssued(c) && c.verify(c.publicKey);
  } catch {
    return false;
  }
}
