/**
 * Validates a certificate chain + private key pair before it is served to Envoy, so that a broken
 * or half-written file is reported with its name instead of failing a TLS handshake later.
 * Messages never include key bytes, and refer to keys in lower case ("private key").
 */
import { X509Certificate, createPrivateKey, type KeyObject } from 'node:crypto';
import { ErrorCode, fail, ok, type Problem, type Result } from '../core/errors.js';
import { describeCertificate } from '../x509/certificate-info.js';
import { labelForMessage, parsePem, type PemBlock } from '../x509/pem.js';
import { ENVOY_EC_CURVES, MIN_RSA_BITS } from '../x509/key-policy.js';
import type { TlsCertificateValue } from './secret.js';

export interface TlsCertificateInput {
  certificateChainPem: string;
  privateKeyPem: string;
  /**
   * `privateKeyPem` already parsed, when the caller generated the key itself (CA-issued identities):
   * skips parsing the PEM again (about 1 ms with OpenSSL 3, more when threads contend).
   */
  privateKey?: KeyObject;
  /** File names, used only in messages. */
  certFile: string;
  keyFile: string;
  now?: Date;
  expectedSpiffeId?: string;
  /**
   * The last private key this caller had parsed, reused when `privateKeyPem` is the same text and
   * replaced otherwise. Parsing a PEM key through OpenSSL 3's decoders takes about a millisecond
   * of CPU, the largest part of a validation; a rotation re-reads a key it has already seen (the
   * files land one after the other). Holds one key per caller, never logged.
   */
  keyCache?: ParsedKeyCache;
}

/** See {@link TlsCertificateInput.keyCache}. */
export interface ParsedKeyCache {
  pem?: string;
  key?: KeyObject;
}

const KEY_LABELS = new Set(['PRIVATE KEY', 'EC PRIVATE KEY', 'RSA PRIVATE KEY', 'ENCRYPTED PRIVATE KEY']);
// `openssl ecparam -genkey` writes this next to the key; it is harmless.
const IGNORED_IN_KEY_FILE = new Set(['EC PARAMETERS']);

export function validateTlsCertificate(input: TlsCertificateInput): Result<TlsCertificateValue> {
  const { certFile, keyFile } = input;
  const now = input.now ?? new Date();
  const warnings: Problem[] = [];

  const chain = readChain(input.certificateChainPem, certFile, warnings);
  if (!chain.ok) return failWith(chain.problem);
  const key = input.privateKey ? ok(input.privateKey) : readKeyCached(input.privateKeyPem, keyFile, warnings, input.keyCache);
  if (!key.ok) return failWith(key.problem);
  const certs = chain.value.map((b) => b.cert);
  const leaf = certs[0];
  if (leaf === undefined) return fail(ErrorCode.PemInvalid, `${certFile}: contains no CERTIFICATE block`);

  const keyCheck = checkKeyMatchesLeaf(certs, key.value, certFile, keyFile);
  if (keyCheck) return failWith(keyCheck);
  const typeCheck = checkKeyType(key.value, keyFile);
  if (typeCheck) return failWith(typeCheck);
  const orderProblem = checkChainOrder(certs, certFile);
  if (orderProblem) return failWith(orderProblem);

  const info = describeCertificate(leaf);
  const window = `notBefore ${iso(info.notBefore)}, notAfter ${iso(info.notAfter)}, now ${iso(now)}`;
  if (now.getTime() > info.notAfter.getTime()) {
    return fail(ErrorCode.CertExpired, `${certFile}: leaf certificate (${info.subject}) has expired (${window})`);
  }
  if (now.getTime() < info.notBefore.getTime()) {
    return fail(ErrorCode.CertNotYetValid, `${certFile}: leaf certificate (${info.subject}) is not valid yet (${window})`);
  }
  if (input.expectedSpiffeId !== undefined && info.spiffeId !== input.expectedSpiffeId) {
    const actual = info.spiffeId === undefined ? 'no SPIFFE ID URI SAN' : `SPIFFE ID ${info.spiffeId}`;
    return fail(
      ErrorCode.SpiffeIdMismatch,
      `${certFile}: leaf certificate has ${actual}, expected ${input.expectedSpiffeId}`,
    );
  }

  certs.slice(1).forEach((cert, i) => {
    const problem = validityWarning(cert, `intermediate #${i + 2}`, certFile, now);
    if (problem) warnings.push(problem);
  });

  return ok(
    {
      kind: 'tls-certificate',
      certificateChainPem: chain.value.map((b) => b.block.pem).join(''),
      privateKeyPem: input.privateKeyPem.replace(/\r\n?/g, '\n'),
      leaf: info,
    },
    warnings,
  );
}

interface ParsedCert {
  block: PemBlock;
  cert: X509Certificate;
}

/** The CERTIFICATE blocks of the chain file, parsed; other blocks become warnings. */
function readChain(text: string, file: string, warnings: Problem[]): Result<ParsedCert[]> {
  if (text.trim() === '') return fail(ErrorCode.FileEmpty, `${file}: certificate chain file is empty`);
  const pem = parsePem(text);
  if (pem.malformed.length > 0) {
    return fail(ErrorCode.PemInvalid, `${file}: malformed PEM: ${pem.malformed.join('; ')}`);
  }
  const parsed: ParsedCert[] = [];
  for (const block of pem.blocks) {
    if (block.label !== 'CERTIFICATE') {
      const what = labelForMessage(block.label);
      warnings.push(warn(ErrorCode.PemInvalid, `${file}: ignored a ${what} block in the certificate chain`));
      continue;
    }
    try {
      parsed.push({ block, cert: new X509Certificate(block.der) });
    } catch {
      return fail(ErrorCode.PemInvalid, `${file}: certificate #${parsed.length + 1} is not a valid X.509 certificate`);
    }
  }
  if (parsed.length === 0) return fail(ErrorCode.PemInvalid, `${file}: contains no CERTIFICATE PEM block`);
  return ok(parsed);
}

function readKeyCached(text: string, file: string, warnings: Problem[], cache: ParsedKeyCache | undefined): Result<KeyObject> {
  if (cache?.key && cache.pem === text) return ok(cache.key);
  const before = warnings.length;
  const key = readKey(text, file, warnings);
  // Only keys that added no warning are kept, so a cache hit has none to repeat.
  if (cache && key.ok && warnings.length === before) {
    cache.pem = text;
    cache.key = key.value;
  }
  return key;
}

/** Exactly one unencrypted private key block, parsed. */
function readKey(text: string, file: string, warnings: Problem[]): Result<KeyObject> {
  if (text.trim() === '') return fail(ErrorCode.FileEmpty, `${file}: private key file is empty`);
  const pem = parsePem(text);
  if (pem.malformed.length > 0) {
    return fail(ErrorCode.PemInvalid, `${file}: malformed PEM: ${pem.malformed.join('; ')}`);
  }
  const keys = pem.blocks.filter((b) => KEY_LABELS.has(b.label));
  for (const b of pem.blocks) {
    if (!KEY_LABELS.has(b.label) && !IGNORED_IN_KEY_FILE.has(b.label)) {
      warnings.push(warn(ErrorCode.PemInvalid, `${file}: ignored a ${b.label} block in the private key file`));
    }
  }
  const [block, ...extra] = keys;
  if (block === undefined) return fail(ErrorCode.PemInvalid, `${file}: contains no private key PEM block`);
  if (extra.length > 0) {
    return fail(ErrorCode.KeyInvalid, `${file}: contains ${keys.length} private keys; expected exactly one`);
  }
  if (block.label === 'ENCRYPTED PRIVATE KEY' || /^Proc-Type:.*ENCRYPTED/im.test(block.pem)) {
    return fail(ErrorCode.KeyEncrypted, `${file}: private key is encrypted; Envoy needs an unencrypted key (protect the file by permissions)`);
  }
  try {
    return ok(createPrivateKey({ key: block.pem, format: 'pem' }));
  } catch (err) {
    // Only the error code: the message of a decoder error is not worth the risk of echoing input.
    const code = (err as { code?: unknown }).code;
    const detail = typeof code === 'string' ? ` (${code})` : '';
    return fail(ErrorCode.KeyInvalid, `${file}: private key cannot be parsed${detail}`);
  }
}

/** KeyMismatch, or ChainOrder when the key belongs to a later certificate (leaf not first). */
function checkKeyMatchesLeaf(
  certs: X509Certificate[],
  key: KeyObject,
  certFile: string,
  keyFile: string,
): Problem | undefined {
  const matches = (cert: X509Certificate): boolean => {
    try {
      return cert.checkPrivateKey(key);
    } catch {
      return false; // e.g. a key type the certificate cannot use
    }
  };
  if (certs[0] && matches(certs[0])) return undefined;
  const owner = certs.findIndex(matches);
  if (owner > 0) {
    return {
      code: ErrorCode.ChainOrder,
      message:
        `${certFile}: the private key in ${keyFile} matches certificate #${owner + 1}, ` +
        'not the first one; the leaf must come first',
    };
  }
  return {
    code: ErrorCode.KeyMismatch,
    message:
      `${keyFile}: private key does not match the leaf certificate ` +
      `in ${certFile} (${oneLine(certs[0]?.subject ?? '?')})`,
  };
}


/** SDS_ERR_KEY_UNSUPPORTED for a key Envoy would refuse, naming the key type (never the key). */
export function checkKeyType(key: KeyObject, keyFile: string): Problem | undefined {
  const type = key.asymmetricKeyType ?? 'unknown';
  const details = key.asymmetricKeyDetails ?? {};
  const refuse = (what: string): Problem => ({
    code: ErrorCode.KeyUnsupported,
    message:
      `${keyFile}: private key is ${what}, which Envoy cannot load; ` +
      `use RSA >= ${MIN_RSA_BITS} bits, ECDSA P-256/P-384/P-521, or Ed25519`,
  });
  switch (type) {
    case 'rsa': {
      const bits = details.modulusLength ?? 0;
      return bits >= MIN_RSA_BITS ? undefined : refuse(`RSA ${bits} bits`);
    }
    case 'ec': {
      const curve = details.namedCurve ?? 'an unnamed curve';
      return ENVOY_EC_CURVES.has(curve) ? undefined : refuse(`EC on curve ${curve}`);
    }
    case 'ed25519':
      return undefined;
    default:
      return refuse(type === 'rsa-pss' ? 'RSA-PSS (restricted RSA key)' : type);
  }
}

/** Each certificate must be issued (name/key identifiers and signature) by the next one. */
function checkChainOrder(certs: X509Certificate[], file: string): Problem | undefined {
  for (let i = 0; i + 1 < certs.length; i++) {
    const child = certs[i];
    const issuer = certs[i + 1];
    if (!child || !issuer || issuedBy(child, issuer)) continue;
    const actual = certs.findIndex((c, j) => j !== i && issuedBy(child, c));
    const hint = actual === -1 ? '' : `; it is issued by certificate #${actual + 1}, so the file is out of order`;
    return {
      code: ErrorCode.ChainOrder,
      message:
        `${file}: certificate #${i + 1} (${oneLine(child.subject)}) is not issued by certificate #${i + 2} ` +
        `(${oneLine(issuer.subject)}); the chain must be leaf first, then each issuer${hint}`,
    };
  }
  return undefined;
}

function issuedBy(child: X509Certificate, issuer: X509Certificate): boolean {
  try {
    return child.checkIssued(issuer) && child.verify(issuer.publicKey);
  } catch {
    return false;
  }
}

function validityWarning(cert: X509Certificate, what: string, file: string, now: Date): Problem | undefined {
  const info = describeCertificate(cert);
  const window = `notBefore ${iso(info.notBefore)}, notAfter ${iso(info.notAfter)}, now ${iso(now)}`;
  if (now.getTime() > info.notAfter.getTime()) {
    return warn(ErrorCode.CertExpired, `${file}: ${what} (${info.subject}) has expired (${window})`);
  }
  if (now.getTime() < info.notBefore.getTime()) {
    return warn(ErrorCode.CertNotYetValid, `${file}: ${what} (${info.subject}) is not valid yet (${window})`);
  }
  return undefined;
}

const failWith = (problem: Problem): { ok: false; problem: Problem } => ({ ok: false, problem });
const warn = (code: ErrorCode, message: string): Problem => ({ code, message });
const iso = (d: Date): string => d.toISOString();
const oneLine = (subject: string): string => subject.split('\n').join(', ');
