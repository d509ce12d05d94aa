/**
 * `sds-server doctor`'s analysis: pure functions from what we serve (the admin's /certificates
 * view) and what an Envoy reports (its admin /certs and /stats) to findings in plain words.
 *
 * The causes are those of the App Mesh and Anthos Service Mesh TLS troubleshooting guides for
 * `CERTIFICATE_VERIFY_FAILED` (peer certificate not signed by a CA in the trust bundle; expired or
 * not yet valid; no SAN matches the expected name, a wildcard SAN refused where TLS is enforced)
 * and for `WRONG_VERSION_NUMBER` (plaintext where TLS is expected: traffic bypassing the proxy).
 * Envoy counter meanings: Envoy `source/common/tls/stats.h` (`fail_verify_error`,
 * `fail_verify_san`, `fail_verify_no_cert`, `connection_error`, `handshake`).
 */
import { X509Certificate } from 'node:crypto';
import { DEFAULT_EXPIRY_WARNING_MS, expiryState } from '../secrets/expiry.js';
import { parseSpiffeId } from '../x509/spiffe.js';
import type { CertificateSummary } from '../x509/certificate-summary.js';
import type { CertificatesView, ServedBundle, ServedChain } from './certificates-view.js';

export type Cause =
  | 'untrusted-ca'
  | 'no-bundle'
  | 'chain-order'
  | 'expired'
  | 'not-yet-valid'
  | 'expiring-soon'
  | 'key-type'
  | 'san-mismatch'
  | 'wildcard-san'
  | 'clock-skew'
  | 'unknown-secret'
  | 'admin-unreachable'
  | 'envoy-unreachable'
  | 'envoy-stale-certificate'
  | 'envoy-stale-bundle'
  | 'envoy-verify-error'
  | 'envoy-verify-san'
  | 'envoy-no-peer-certificate'
  | 'envoy-handshake-error';

/** The guides' cause behind each finding, in plain words (printed under each finding). */
export const CAUSE_TEXT: Record<Cause, string> = {
  'untrusted-ca':
    'The certificate is not signed by a CA in the trust bundle its peers verify with, so they refuse it (CERTIFICATE_VERIFY_FAILED). Serve a certificate issued by a CA of the bundle, or add its CA to the bundle.',
  'no-bundle': 'No trust bundle is served for this trust domain, so no peer can verify the certificate with one from us.',
  'chain-order': 'The certificate chain is not leaf first, then each issuer; peers cannot build a path to a root.',
  expired: 'The certificate has expired; peers refuse it (CERTIFICATE_VERIFY_FAILED). Renew it.',
  'not-yet-valid':
    'The certificate is not valid yet (notBefore is in the future); peers refuse it (CERTIFICATE_VERIFY_FAILED). Check the issuing clock, or wait.',
  'expiring-soon': 'The certificate expires soon; renew it before peers start refusing it.',
  'key-type': 'Envoy cannot load this key type and NACKs the secret; it keeps serving the previous certificate.',
  'san-mismatch':
    'No subject alternative name of the certificate matches the name the peer expects, so the peer refuses it (CERTIFICATE_VERIFY_FAILED, counted in ssl.fail_verify_san).',
  'wildcard-san':
    'The name only matches through a wildcard SAN; App Mesh refuses wildcard SANs where the client policy enforces TLS. Issue a certificate with the exact name.',
  'clock-skew':
    "The admin's clock and this machine's clock differ; a certificate can look valid here and expired (or not yet valid) to an Envoy there.",
  'unknown-secret': 'The named secret is not served by this sds-server.',
  'admin-unreachable':
    "The sds-server admin endpoint could not be read (SDS_ERR_ADMIN_UNREACHABLE): nothing listens there, it did not answer in time, or another program answered. Check --admin and that the server runs with its admin endpoint on (admin.address).",
  'envoy-unreachable': "The Envoy's admin endpoint could not be read.",
  'envoy-stale-certificate':
    'The Envoy does not hold the certificate version we serve: it has not received the update, or it refused (NACKed) it; see /status for NACKs.',
  'envoy-stale-bundle':
    "The Envoy's trust bundle for this trust domain holds none of the root CAs we serve for it (e.g. it was configured against another server or CA), so it refuses certificates we issue (CERTIFICATE_VERIFY_FAILED). Point its validation context at our bundle, or check /status for a NACKed bundle.",
  'envoy-verify-error':
    "The Envoy refused a peer certificate: not signed by a CA in its trust bundle, or expired / not yet valid (CERTIFICATE_VERIFY_FAILED).",
  'envoy-verify-san': "The Envoy refused a peer certificate because no SAN matched the name it expects (CERTIFICATE_VERIFY_FAILED).",
  'envoy-no-peer-certificate': 'A peer connected without presenting a certificate although one is required (mTLS not configured on that side).',
  'envoy-handshake-error':
    'TLS handshakes failed without any certificate verification failure: most often plaintext (HTTP) sent to a TLS listener, i.e. the application spoke past its proxy (WRONG_VERSION_NUMBER), or the other side refused the handshake.',
};

export interface Finding {
  severity: 'problem' | 'warning';
  cause: Cause;
  /** What it is about: a secret name, a pair, an Envoy admin URL and stat prefix. */
  subject: string;
  /** One line: what was found, with the names, dates and serials involved. */
  summary: string;
  /** Supporting facts, one per line. */
  details: string[];
}

export interface DoctorReport {
  /** False when any finding is a problem. */
  ok: boolean;
  /** What was looked at, one line each. */
  checked: string[];
  findings: Finding[];
}

/** Finalises a report: `ok` unless a problem was found. */
export function report(checked: string[], findings: Finding[]): DoctorReport {
  return { ok: !findings.some((f) => f.severity === 'problem'), checked, findings };
}

// ---------------------------------------------------------------------------------------------
// What we serve

/** Roots the bundles of `view` hold for `trustDomain` (every root when it is undefined). */
export function rootsFor(view: CertificatesView, trustDomain: string | undefined): Array<{ bundle: ServedBundle; pem: string; root: CertificateSummary }> {
  const out: Array<{ bundle: ServedBundle; pem: string; root: CertificateSummary }> = [];
  for (const bundle of view.bundles) {
    for (const d of bundle.trustDomains) {
      if (trustDomain !== undefined && d.trustDomain !== undefined && d.trustDomain !== trustDomain) continue;
      d.rootsPem.forEach((pem, i) => {
        const root = d.roots[i];
        if (root && !out.some((o) => o.root.fingerprintSha256 === root.fingerprintSha256)) out.push({ bundle, pem, root });
      });
    }
  }
  return out;
}

/** The SPIFFE trust domain of a chain's leaf, if it has a SPIFFE ID. */
export function trustDomainOf(chain: ServedChain): string | undefined {
  const id = chain.chain[0]?.spiffeId;
  return id ? parseSpiffeId(id)?.trustDomain : undefined;
}

function issuedBy(child: X509Certificate, issuer: X509Certificate): boolean {
  try {
    return child.checkIssued(issuer) && child.verify(issuer.publicKey);
  } catch {
    return false;
  }
}

/**
 * Does `chainPem` (leaf first) lead to one of `rootsPem`? Each certificate must be issued by the
 * next, and the last must be a root or be issued by one.
 */
export function chainVerifies(chainPem: string[], rootsPem: string[]): { ok: true } | { ok: false; reason: 'order' | 'untrusted'; at: number } {
  const chain = chainPem.map((p) => new X509Certificate(p));
  const roots = rootsPem.map((p) => new X509Certificate(p));
  for (let i = 0; i + 1 < chain.length; i++) {
    if (!issuedBy(chain[i]!, chain[i + 1]!)) return { ok: false, reason: 'order', at: i };
  }
  const top = chain.at(-1);
  if (!top) return { ok: false, reason: 'untrusted', at: 0 };
  const trusted = roots.some((r) => r.raw.equals(top.raw) || issuedBy(top, r) || chain.some((c) => c.raw.equals(r.raw)));
  return trusted ? { ok: true } : { ok: false, reason: 'untrusted', at: chain.length - 1 };
}

/** Validity findings for one certificate at `now` (ISO dates in the summary). */
export function dateFindings(
  cert: CertificateSummary,
  what: string,
  subject: string,
  now: Date,
  expiryWarningMs = DEFAULT_EXPIRY_WARNING_MS,
): Finding[] {
  const notBefore = new Date(cert.notBefore);
  const notAfter = new Date(cert.notAfter);
  const dates = `notBefore ${cert.notBefore}, notAfter ${cert.notAfter}, now ${now.toISOString()}`;
  if (now < notBefore) {
    return [problem('not-yet-valid', subject, `${what} ${cert.serialNumber} is not valid until ${cert.notBefore} (${secondsText(notBefore.getTime() - now.getTime())} from now)`, [dates])];
  }
  const state = expiryState({ notBefore, notAfter }, now, expiryWarningMs);
  if (state === 'expired') {
    return [problem('expired', subject, `${what} ${cert.serialNumber} expired at ${cert.notAfter} (${secondsText(now.getTime() - notAfter.getTime())} ago)`, [dates])];
  }
  if (state === 'expiring') {
    return [warning('expiring-soon', subject, `${what} ${cert.serialNumber} expires at ${cert.notAfter} (in ${secondsText(notAfter.getTime() - now.getTime())})`, [dates])];
  }
  return [];
}

/**
 * Every served certificate against the bundles of its trust domain: the chain verifies to a root,
 * every certificate of the chain is within its dates (with the expiry warning window of
 * src/secrets/expiry.ts), and the leaf's key type is one Envoy loads. `now` is the admin's clock.
 */
export function checkServed(view: CertificatesView, now: Date = new Date(view.now)): Finding[] {
  const findings: Finding[] = [];
  for (const served of view.certificates) {
    findings.push(...checkChainAgainstBundles(served, view, now, served.name));
    const leaf = served.chain[0];
    if (leaf?.keyTypeProblem) findings.push(problem('key-type', served.name, `leaf ${leaf.serialNumber} has a ${leaf.keyType} key: ${leaf.keyTypeProblem}`, []));
  }
  for (const bundle of view.bundles) {
    for (const d of bundle.trustDomains) {
      for (const root of d.roots) findings.push(...dateFindings(root, `root CA (${root.subject})`, bundle.name, now));
    }
  }
  return findings;
}

/** Chain to the roots of the presenter's trust domain, and dates of every chain certificate. */
function checkChainAgainstBundles(served: ServedChain, view: CertificatesView, now: Date, subject: string, verifier?: string): Finding[] {
  const findings: Finding[] = [];
  const leaf = served.chain[0];
  if (!leaf) return findings;
  const td = trustDomainOf(served);
  const roots = rootsFor(view, td);
  const whose = verifier ? ` (as ${verifier} would verify it)` : '';
  if (roots.length === 0) {
    findings.push(problem('no-bundle', subject, `no trust bundle is served for ${td ? `trust domain ${td}` : 'this certificate'}${whose}`, [`leaf ${leaf.serialNumber} issued by ${leaf.issuer}`]));
  } else {
    const result = chainVerifies(served.chainPem, roots.map((r) => r.pem));
    if (!result.ok && result.reason === 'order') {
      findings.push(problem('chain-order', subject, `certificate #${result.at + 1} of the chain is not issued by certificate #${result.at + 2}`, served.chain.map((c, i) => `#${i + 1}: ${c.subject} (issuer ${c.issuer})`)));
    } else if (!result.ok) {
      const top = served.chain.at(-1) ?? leaf;
      findings.push(
        problem('untrusted-ca', subject, `leaf ${leaf.serialNumber} (${leaf.spiffeId ?? leaf.subject}) is issued by ${top.issuer}, which is not a CA in the bundle${whose}`, [
          `issuer: ${top.issuer}`,
          ...bundleLines(roots),
        ]),
      );
    }
  }
  served.chain.forEach((c, i) => findings.push(...dateFindings(c, i === 0 ? 'leaf' : `intermediate #${i} (${c.subject})`, subject, now)));
  return findings;
}

function bundleLines(roots: Array<{ bundle: ServedBundle; root: CertificateSummary }>): string[] {
  return roots.map((r) => `bundle ${r.bundle.name} CA: ${r.root.subject} (serial ${r.root.serialNumber}, fingerprint ${r.root.fingerprintSha256})`);
}

/** A served certificate by canonical name or alias. */
export function findChain(view: CertificatesView, name: string): ServedChain | undefined {
  return view.certificates.find((c) => c.name === name || c.aliases.includes(name) || c.chain[0]?.spiffeId === name);
}

/**
 * Does a DNS name match a SAN (RFC 6125 6.4.3: a wildcard only as the whole left-most label,
 * matching exactly one label)? `wildcard` tells whether the match needed the wildcard.
 */
export function dnsMatches(san: string, name: string): { match: boolean; wildcard: boolean } {
  const a = san.toLowerCase().replace(/\.$/, '');
  const b = name.toLowerCase().replace(/\.$/, '');
  if (a === b) return { match: true, wildcard: false };
  if (a.startsWith('*.')) {
    const dot = b.indexOf('.');
    return { match: dot > 0 && b.slice(dot + 1) === a.slice(2), wildcard: true };
  }
  return { match: false, wildcard: false };
}

/** SAN check: `expected` (a URI such as a SPIFFE ID, or a DNS name) against the leaf's SANs. */
export function sanFindings(leaf: CertificateSummary, expected: string, subject: string): Finding[] {
  const present = [...leaf.uris.map((u) => `URI:${u}`), ...leaf.dnsNames.map((d) => `DNS:${d}`)];
  const details = [`expected: ${expected}`, `present: ${present.length > 0 ? present.join(', ') : '(no SANs)'}`];
  if (expected.includes('://')) {
    return leaf.uris.includes(expected) ? [] : [problem('san-mismatch', subject, `no URI SAN of leaf ${leaf.serialNumber} is ${expected}`, details)];
  }
  const exact = leaf.dnsNames.some((d) => dnsMatches(d, expected).match && !dnsMatches(d, expected).wildcard);
  if (exact) return [];
  const wild = leaf.dnsNames.find((d) => dnsMatches(d, expected).match);
  if (wild) return [problem('wildcard-san', subject, `${expected} matches leaf ${leaf.serialNumber} only through the wildcard SAN ${wild}`, details)];
  return [problem('san-mismatch', subject, `no DNS SAN of leaf ${leaf.serialNumber} matches ${expected}`, details)];
}

/**
 * Would the client's Envoy accept the server's certificate, and the server's Envoy the client's?
 * Each side verifies with the bundle of the peer's trust domain (as the SPIFFE validator does);
 * `expectSan` is the name the client expects of the server (URI or DNS).
 */
export function checkPair(view: CertificatesView, clientName: string, serverName: string, expectSan: string | undefined, now: Date = new Date(view.now)): Finding[] {
  const client = findChain(view, clientName);
  const server = findChain(view, serverName);
  const findings: Finding[] = [];
  for (const [name, chain] of [
    [clientName, client],
    [serverName, server],
  ] as const) {
    if (!chain) findings.push(problem('unknown-secret', name, `no certificate named ${name} is served (served: ${view.certificates.map((c) => c.name).join(', ') || 'none'})`, []));
  }
  if (!client || !server) return findings;
  findings.push(...checkChainAgainstBundles(server, view, now, `${clientName} -> ${serverName}`, `the client ${clientName}`));
  if (expectSan !== undefined && server.chain[0]) findings.push(...sanFindings(server.chain[0], expectSan, `${clientName} -> ${serverName}`));
  findings.push(...checkChainAgainstBundles(client, view, now, `${serverName} -> ${clientName}`, `the server ${serverName}`));
  return findings;
}

/** Clock skew between the admin and this machine; a warning beyond `toleranceMs` (default 30 s). */
export function clockSkewFindings(adminNow: Date, localNow: Date, toleranceMs = 30_000): Finding[] {
  const skew = adminNow.getTime() - localNow.getTime();
  if (Math.abs(skew) <= toleranceMs) return [];
  return [
    warning('clock-skew', 'clocks', `the admin's clock is ${secondsText(Math.abs(skew))} ${skew > 0 ? 'ahead of' : 'behind'} this machine's`, [
      `admin: ${adminNow.toISOString()}`,
      `here: ${localNow.toISOString()}`,
      'dates above are judged by the admin clock (the one next to the Envoys)',
    ]),
  ];
}

// ---------------------------------------------------------------------------------------------
// What an Envoy reports

/** Envoy admin `/certs` (JSON), the fields used here. */
export interface EnvoyCertsDump {
  certificates?: Array<{
    ca_cert?: Array<{ path?: string; serial_number?: string; subject_alt_names?: Array<Record<string, string>>; days_until_expiration?: string }>;
    cert_chain?: Array<{ serial_number?: string; subject_alt_names?: Array<Record<string, string>>; days_until_expiration?: string }>;
  }>;
}

/** Parses Envoy admin `/stats` text (`name: value` lines); histograms and non-numbers are skipped. */
export function parseEnvoyStats(text: string): Map<string, number> {
  const stats = new Map<string, number>();
  for (const line of text.split('\n')) {
    const m = /^([^:\s]+): (\d+)$/.exec(line.trim());
    if (m) stats.set(m[1]!, Number(m[2]));
  }
  return stats;
}

/** Serials compared as Envoy (lower case, no leading zeros) and Node (upper case) print them. */
export function normalizeSerial(serial: string): string {
  return serial.replace(/:/g, '').toLowerCase().replace(/^0+(?=.)/, '');
}

/**
 * What one Envoy holds of ours, one line per certificate in its `/certs` whose URI SAN is one of
 * our served SPIFFE IDs: `holds <id> serial <s>: the version we serve (<version>)`, or `..., not
 * the serial we serve (<s>)`. Certificates that are not ours (static config) are left out.
 */
export function envoyHoldings(certs: EnvoyCertsDump, view: CertificatesView): string[] {
  const lines: string[] = [];
  for (const entry of certs.certificates ?? []) {
    const leaf = entry.cert_chain?.[0];
    if (!leaf?.serial_number) continue;
    const uris = (leaf.subject_alt_names ?? []).map((s) => s.uri).filter((u): u is string => typeof u === 'string');
    const ours = view.certificates.find((c) => c.chain[0]?.spiffeId !== undefined && uris.includes(c.chain[0].spiffeId));
    if (!ours) continue;
    const served = ours.chain[0]?.serialNumber ?? '';
    lines.push(
      normalizeSerial(served) === normalizeSerial(leaf.serial_number)
        ? `holds ${ours.chain[0]?.spiffeId} serial ${served}: the version we serve (${ours.version})`
        : `holds ${ours.chain[0]?.spiffeId} serial ${leaf.serial_number.toUpperCase()}, not the serial we serve (${served})`,
    );
  }
  return lines;
}

/**
 * One Envoy: does it hold a certificate version we serve (leaf serials in `/certs` against our
 * served leaves; its trust bundles against our roots), and what do its `*.ssl.*` counters say (counts since the Envoy started)?
 */
export function checkEnvoy(url: string, certs: EnvoyCertsDump, stats: Map<string, number>, view: CertificatesView | undefined): Finding[] {
  const findings: Finding[] = [];
  if (view) {
    const served = new Map(view.certificates.map((c) => [normalizeSerial(c.chain[0]?.serialNumber ?? ''), c]));
    const servedIds = new Map(view.certificates.map((c) => [c.chain[0]?.spiffeId, c]));
    for (const entry of certs.certificates ?? []) {
      const leaf = entry.cert_chain?.[0];
      if (!leaf?.serial_number) continue;
      if (served.has(normalizeSerial(leaf.serial_number))) continue;
      const uris = (leaf.subject_alt_names ?? []).map((s) => s.uri).filter((u): u is string => typeof u === 'string');
      const ours = uris.map((u) => servedIds.get(u)).find((c) => c !== undefined);
      if (!ours) continue; // a certificate we do not serve (static config): not ours to judge
      findings.push(
        problem('envoy-stale-certificate', url, `holds ${uris.join(', ')} serial ${leaf.serial_number}, but we serve serial ${ours.chain[0]?.serialNumber} (version ${ours.version})`, [
          `secret ${ours.name}`,
        ]),
      );
    }
  }
  if (view) findings.push(...staleBundleFindings(url, certs, view));
  // Group the ssl counters by owner: listener.<addr>.ssl.* (downstream) and cluster.<name>.ssl.* (upstream).
  const owners = new Map<string, Map<string, number>>();
  for (const [name, value] of stats) {
    const m = /^((?:listener|cluster)\..+)\.ssl\.([a-z_]+)$/.exec(name);
    if (!m) continue;
    const counters = owners.get(m[1]!) ?? new Map<string, number>();
    counters.set(m[2]!, value);
    owners.set(m[1]!, counters);
  }
  for (const [owner, c] of owners) {
    const subject = `${url} ${owner}`;
    const n = (k: string): number => c.get(k) ?? 0;
    const side = owner.startsWith('cluster.') ? 'the upstream server' : 'a downstream client';
    const counts = `handshake ${n('handshake')}, connection_error ${n('connection_error')}, fail_verify_error ${n('fail_verify_error')}, fail_verify_san ${n('fail_verify_san')}, fail_verify_no_cert ${n('fail_verify_no_cert')} (since the Envoy started or POST /reset_counters)`;
    if (n('fail_verify_error') > 0) findings.push(problem('envoy-verify-error', subject, `${n('fail_verify_error')} certificate(s) from ${side} failed verification (untrusted CA, or expired / not yet valid)`, [counts]));
    if (n('fail_verify_san') > 0) findings.push(problem('envoy-verify-san', subject, `${n('fail_verify_san')} certificate(s) from ${side} had no SAN matching the expected name`, [counts]));
    if (n('fail_verify_no_cert') > 0) findings.push(problem('envoy-no-peer-certificate', subject, `${n('fail_verify_no_cert')} connection(s) from ${side} presented no certificate`, [counts]));
    const verifyFailures = n('fail_verify_error') + n('fail_verify_san') + n('fail_verify_no_cert');
    if (n('connection_error') > 0 && verifyFailures === 0) {
      const summary = owner.startsWith('listener.')
        ? `${n('connection_error')} TLS handshake(s) failed with no certificate verification failure: plaintext (HTTP) sent to this TLS listener, traffic bypassing the client's proxy (WRONG_VERSION_NUMBER); unless a client Envoy refused our certificate (check its fail_verify_* counters, or pass its admin too)`
        : `${n('connection_error')} TLS handshake(s) to the upstream failed with no verification failure here: the upstream refused our certificate or is not speaking TLS`;
      findings.push(problem('envoy-handshake-error', subject, summary, [counts]));
    }
  }
  return findings;
}

/**
 * The roots we serve that one of Envoy's `ca_cert` entries stands for: by the trust domain Envoy
 * 1.40 prefixes a SPIFFE validator's CA source with (`path` "<trust domain>: <source>"), by the
 * CA's URI SAN `spiffe://<trust domain>`, or by a source that is one of our bundle names. Undefined
 * when it is for nothing we serve (another trust domain, static config): not ours to judge.
 */
function servedRootsForCa(ca: { path?: string; subject_alt_names?: Array<Record<string, string>> }, view: CertificatesView): { label: string; roots: Array<{ bundle: ServedBundle; root: CertificateSummary }> } | undefined {
  const byDomain = (td: string): Array<{ bundle: ServedBundle; root: CertificateSummary }> =>
    view.bundles.flatMap((bundle) => bundle.trustDomains.filter((d) => d.trustDomain?.toLowerCase() === td.toLowerCase()).flatMap((d) => d.roots.map((root) => ({ bundle, root }))));
  const candidates: string[] = [];
  const pathTd = /^([^\s:/]+): /.exec(ca.path ?? '')?.[1];
  if (pathTd) candidates.push(pathTd);
  for (const san of ca.subject_alt_names ?? []) {
    const m = typeof san.uri === 'string' ? /^spiffe:\/\/([^/]+)\/?$/i.exec(san.uri) : null;
    if (m) candidates.push(m[1]!);
  }
  for (const td of candidates) {
    const roots = byDomain(td);
    if (roots.length > 0) return { label: `trust domain ${td.toLowerCase()}`, roots };
  }
  const source = ca.path?.replace(/^[^\s:/]+: /, '');
  const bundle = view.bundles.find((b) => source !== undefined && (b.name === source || b.aliases.includes(source)));
  if (bundle) return { label: `bundle ${bundle.name}`, roots: bundle.trustDomains.flatMap((d) => d.roots.map((root) => ({ bundle, root }))) };
  return undefined;
}

/**
 * Envoy's trust bundles (`ca_cert` of each context in `/certs`) against the roots we serve for the
 * same trust domain: a problem when Envoy holds none of ours (holding one is enough: a rollover
 * bundle keeps the old root next to the new).
 */
function staleBundleFindings(url: string, certs: EnvoyCertsDump, view: CertificatesView): Finding[] {
  const findings: Finding[] = [];
  const seen = new Set<string>();
  for (const entry of certs.certificates ?? []) {
    const groups = new Map<string, { roots: Array<{ bundle: ServedBundle; root: CertificateSummary }>; serials: string[]; paths: string[] }>();
    for (const ca of entry.ca_cert ?? []) {
      if (!ca.serial_number) continue;
      const ours = servedRootsForCa(ca, view);
      if (!ours) continue;
      const g = groups.get(ours.label) ?? { roots: ours.roots, serials: [], paths: [] };
      g.serials.push(ca.serial_number);
      if (ca.path && !g.paths.includes(ca.path)) g.paths.push(ca.path);
      groups.set(ours.label, g);
    }
    for (const [label, g] of groups) {
      const servedSerials = new Set(g.roots.map((r) => normalizeSerial(r.root.serialNumber)));
      if (g.serials.some((s) => servedSerials.has(normalizeSerial(s)))) continue;
      const envoySerials = g.serials.map((s) => s.toUpperCase());
      const key = `${label} ${[...envoySerials].sort().join(',')}`;
      if (seen.has(key)) continue;
      seen.add(key);
      findings.push(
        problem('envoy-stale-bundle', url, `trusts for ${label} CA serial(s) ${envoySerials.join(', ')}, none of the roots we serve for it (serial(s) ${g.roots.map((r) => r.root.serialNumber).join(', ')})`, [
          ...g.paths.map((p) => `Envoy ca_cert source: ${p}`),
          ...bundleLines(g.roots),
        ]),
      );
    }
  }
  return findings;
}

/**
 * Across the Envoys checked together: when one Envoy's cluster refused a peer certificate
 * (`fail_verify_*`), the peer's listener counts the aborted handshake as `connection_error` with
 * no verify failure of its own. Those listener findings are then explained, not a bypass: they
 * become warnings saying so. With no verify failure anywhere, they stay problems.
 */
export function correlateEnvoyFindings(findings: Finding[]): Finding[] {
  const refusedSomewhere = findings.some((f) => f.cause === 'envoy-verify-error' || f.cause === 'envoy-verify-san' || f.cause === 'envoy-no-peer-certificate');
  if (!refusedSomewhere) return findings;
  return findings.map((f) =>
    f.cause === 'envoy-handshake-error' && / listener\./.test(f.subject)
      ? {
          ...f,
          severity: 'warning' as const,
          summary: `${f.summary.replace(/:.*$/, '')}: explained by the certificate verification failures reported above (the client aborted the handshake)`,
        }
      : f,
  );
}

// ---------------------------------------------------------------------------------------------
// Output

/** The text a person pastes into a ticket. */
export function formatReport(r: DoctorReport): string {
  const problems = r.findings.filter((f) => f.severity === 'problem').length;
  const warnings = r.findings.length - problems;
  const lines = [`sds-server doctor: ${r.ok ? 'OK' : 'PROBLEMS FOUND'} (${problems} problem(s), ${warnings} warning(s))`, '', 'Checked:'];
  for (const c of r.checked) lines.push(`  - ${c}`);
  for (const f of r.findings) {
    lines.push('', `${f.severity.toUpperCase()} [${f.cause}] ${f.subject}`, `  ${f.summary}`);
    for (const d of f.details) lines.push(`    ${d}`);
    lines.push(`  Cause: ${CAUSE_TEXT[f.cause]}`);
  }
  if (r.findings.length === 0) lines.push('', 'No problems found.');
  return lines.join('\n') + '\n';
}

function problem(cause: Cause, subject: string, summary: string, details: string[]): Finding {
  return { severity: 'problem', cause, subject, summary, details };
}
function warning(cause: Cause, subject: string, summary: string, details: string[]): Finding {
  return { severity: 'warning', cause, subject, summary, details };
}

function secondsText(ms: number): string {
  const s = Math.round(ms / 1000);
  if (s < 120) return `${s} s`;
  if (s < 7200) return `${Math.round(s / 60)} min`;
  if (s < 172800) return `${Math.round(s / 3600)} h`;
  return `${Math.round(s / 86400)} days`;
}
