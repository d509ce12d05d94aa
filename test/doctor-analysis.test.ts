/**
 * `sds-server doctor`'s analysis functions, table-driven: served certificates and bundles (real
 * certificates, fixed clocks) in, the exact causes out.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import type { CertificatesView } from '../src/ops/certificates-view.js';
import { checkEnvoy, checkPair, correlateEnvoyFindings, envoyHoldings, checkServed, clockSkewFindings, dnsMatches, formatReport, parseEnvoyStats, report, type Cause } from '../src/ops/doctor.js';
import { summarizeCertificate } from '../src/x509/certificate-summary.js';
import { createRootCa, issueLeaf, type CertificateAuthority, type IssuedLeaf } from '../src/x509/issue.js';
import { splitPem } from '../src/x509/pem.js';
import { issueLeafWithKeyType, type LeafKeyType } from './helpers/key-types.js';

const TD = 'example.org';
const SERVER = `spiffe://${TD}/server`;
const CLIENT = `spiffe://${TD}/client`;
const NOW = new Date('2026-06-01T12:00:00Z');
const HOUR = 3600_000;
const DAY = 24 * HOUR;

function chain(name: string, leaf: IssuedLeaf): CertificatesView['certificates'][number] {
  const chainPem = splitPem(leaf.chainPem).map((b) => b.pem);
  return { name, aliases: [], version: `v-${name}`, chainPem, chain: chainPem.map((p) => summarizeCertificate(p)) };
}
function bundle(name: string, trustDomain: string, cas: CertificateAuthority[]): CertificatesView['bundles'][number] {
  return { name, aliases: [], version: 'b1', trustDomains: [{ trustDomain, rootsPem: cas.map((c) => c.certPem), roots: cas.map((c) => summarizeCertificate(c.certPem)) }] };
}
const causes = (fs: Array<{ cause: Cause }>): Cause[] => fs.map((f) => f.cause).sort();

let ca: CertificateAuthority;
let foreign: CertificateAuthority;
const valid = { notBefore: new Date(NOW.getTime() - DAY), notAfter: new Date(NOW.getTime() + 30 * DAY) };
let leaves: Record<string, IssuedLeaf>;

beforeAll(async () => {
  const caDates = { notBefore: new Date(NOW.getTime() - 365 * DAY), notAfter: new Date(NOW.getTime() + 365 * DAY) };
  ca = await createRootCa({ commonName: 'example.org root', trustDomain: TD, ...caDates });
  foreign = await createRootCa({ commonName: 'foreign root', trustDomain: TD, ...caDates });
  leaves = {
    server: await issueLeaf(ca, { spiffeId: SERVER, dnsNames: ['server.apps.local'], ...valid }),
    wildcard: await issueLeaf(ca, { spiffeId: SERVER, dnsNames: ['*.apps.local'], ...valid }),
    client: await issueLeaf(ca, { spiffeId: CLIENT, ...valid }),
    foreignServer: await issueLeaf(foreign, { spiffeId: SERVER, ...valid }),
    foreignClient: await issueLeaf(foreign, { spiffeId: CLIENT, ...valid }),
    expired: await issueLeaf(ca, { spiffeId: SERVER, notBefore: new Date(NOW.getTime() - 2 * DAY), notAfter: new Date(NOW.getTime() - HOUR) }),
    notYet: await issueLeaf(ca, { spiffeId: SERVER, notBefore: new Date(NOW.getTime() + HOUR), notAfter: new Date(NOW.getTime() + 2 * DAY) }),
    expiring: await issueLeaf(ca, { spiffeId: SERVER, notBefore: new Date(NOW.getTime() - 30 * DAY), notAfter: new Date(NOW.getTime() + HOUR) }),
    otherDomain: await issueLeaf(ca, { spiffeId: 'spiffe://other.org/server', ...valid }),
  };
});

function view(certs: Array<[string, string]>, bundles = [bundle(`spiffe://${TD}`, TD, [ca])]): CertificatesView {
  return { now: NOW.toISOString(), certificates: certs.map(([name, leaf]) => chain(name, leaves[leaf]!)), bundles };
}

describe('checkServed: every served certificate against the bundle of its trust domain', () => {
  const rows: Array<{ name: string; certs: Array<[string, string]>; bundles?: () => CertificatesView['bundles']; expected: Cause[] }> = [
    { name: 'healthy', certs: [[SERVER, 'server'], [CLIENT, 'client']], expected: [] },
    { name: 'leaf from a foreign CA', certs: [[SERVER, 'foreignServer']], expected: ['untrusted-ca'] },
    { name: 'expired leaf', certs: [[SERVER, 'expired']], expected: ['expired'] },
    { name: 'not-yet-valid leaf', certs: [[SERVER, 'notYet']], expected: ['not-yet-valid'] },
    { name: 'leaf in its last hour', certs: [[SERVER, 'expiring']], expected: ['expiring-soon'] },
    { name: 'no bundle for its trust domain', certs: [['spiffe://other.org/server', 'otherDomain']], expected: ['no-bundle'] },
    { name: 'bundle holds the foreign CA too', certs: [[SERVER, 'foreignServer']], bundles: () => [bundle(`spiffe://${TD}`, TD, [ca, foreign])], expected: [] },
  ];
  it.each(rows)('$name', ({ certs, bundles, expected }) => {
    const findings = checkServed(view(certs, bundles?.()));
    expect(causes(findings)).toEqual(expected);
  });

  it('names the issuer and the bundle CAs for an untrusted leaf', () => {
    const [f] = checkServed(view([[SERVER, 'foreignServer']]));
    expect(f?.summary).toContain('CN=foreign root');
    expect(f?.details.join('\n')).toContain('bundle spiffe://example.org CA: CN=example.org root');
  });
});

describe('checkServed: key types Envoy loads (Envoy context_impl.cc, confirmed by test/envoy/key-types.test.ts)', () => {
  it.each<[LeafKeyType, string, Cause[]]>([
    ['rsa-2048', 'RSA 2048', []],
    ['p-384', 'EC P-384', []],
    ['ed25519', 'Ed25519', []],
    ['rsa-1024', 'RSA 1024', ['key-type']],
    ['secp256k1', 'EC secp256k1', ['key-type']],
  ])('%s', async (type, keyType, expected) => {
    const leaf = await issueLeafWithKeyType(ca, type, { spiffeId: SERVER, ...valid });
    const v: CertificatesView = { now: NOW.toISOString(), certificates: [chain(SERVER, leaf)], bundles: [bundle(`spiffe://${TD}`, TD, [ca])] };
    expect(v.certificates[0]?.chain[0]?.keyType).toBe(keyType);
    expect(causes(checkServed(v))).toEqual(expected);
  });
});

describe('checkPair: would the client accept the server, and the server the client', () => {
  const rows: Array<{ name: string; certs: Array<[string, string]>; client?: string; server?: string; san?: string; expected: Array<[Cause, string]> }> = [
    { name: 'healthy, URI SAN expected', certs: [[SERVER, 'server'], [CLIENT, 'client']], san: SERVER, expected: [] },
    { name: 'healthy, exact DNS SAN', certs: [[SERVER, 'server'], [CLIENT, 'client']], san: 'server.apps.local', expected: [] },
    { name: 'URI SAN mismatch', certs: [[SERVER, 'server'], [CLIENT, 'client']], san: 'spiffe://example.org/payments', expected: [['san-mismatch', `${CLIENT} -> ${SERVER}`]] },
    { name: 'DNS SAN mismatch', certs: [[SERVER, 'server'], [CLIENT, 'client']], san: 'front.apps.local', expected: [['san-mismatch', `${CLIENT} -> ${SERVER}`]] },
    { name: 'DNS name matched only by a wildcard', certs: [[SERVER, 'wildcard'], [CLIENT, 'client']], san: 'server.apps.local', expected: [['wildcard-san', `${CLIENT} -> ${SERVER}`]] },
    { name: 'server leaf from a foreign CA', certs: [[SERVER, 'foreignServer'], [CLIENT, 'client']], expected: [['untrusted-ca', `${CLIENT} -> ${SERVER}`]] },
    { name: 'client leaf from a foreign CA (the other way)', certs: [[SERVER, 'server'], [CLIENT, 'foreignClient']], expected: [['untrusted-ca', `${SERVER} -> ${CLIENT}`]] },
    { name: 'expired server leaf', certs: [[SERVER, 'expired'], [CLIENT, 'client']], expected: [['expired', `${CLIENT} -> ${SERVER}`]] },
    { name: 'unknown client name', certs: [[SERVER, 'server']], expected: [['unknown-secret', CLIENT]] },
  ];
  it.each(rows)('$name', ({ certs, san, expected }) => {
    const findings = checkPair(view(certs), CLIENT, SERVER, san);
    expect(findings.map((f) => [f.cause, f.subject])).toEqual(expected);
  });

  it('prints expected and present SANs for a mismatch', () => {
    const [f] = checkPair(view([[SERVER, 'server'], [CLIENT, 'client']]), CLIENT, SERVER, 'front.apps.local');
    expect(f?.details).toEqual(['expected: front.apps.local', `present: URI:${SERVER}, DNS:server.apps.local`]);
  });
});

describe('dnsMatches (RFC 6125 6.4.3)', () => {
  it.each([
    ['a.example', 'a.example', true, false],
    ['A.Example.', 'a.example', true, false],
    ['*.example', 'a.example', true, true],
    ['*.example', 'a.b.example', false, true],
    ['*.example', 'example', false, true],
    ['b.example', 'a.example', false, false],
  ])('%s vs %s', (san, name, match, wildcard) => {
    expect(dnsMatches(san, name)).toEqual({ match, wildcard });
  });
});

describe('clockSkewFindings', () => {
  it.each([
    [0, []],
    [29_000, []],
    [-29_000, []],
    [31_000, ['clock-skew']],
    [-3600_000, ['clock-skew']],
  ])('skew %i ms', (skew, expected) => {
    expect(causes(clockSkewFindings(new Date(NOW.getTime() + skew), NOW))).toEqual(expected);
  });
});

describe('checkEnvoy: ssl counters and /certs', () => {
  const L = 'listener.127.0.0.1_10000.ssl';
  const C = 'cluster.backend.ssl';
  const rows: Array<{ name: string; stats: string; expected: Array<[Cause, string]> }> = [
    { name: 'healthy', stats: `${L}.handshake: 5\n${L}.connection_error: 0\n${C}.handshake: 5\n`, expected: [] },
    { name: 'fail_verify_error on the client side', stats: `${C}.fail_verify_error: 2\n${C}.connection_error: 2\n`, expected: [['envoy-verify-error', `E ${C.slice(0, -4)}`]] },
    { name: 'fail_verify_san', stats: `${C}.fail_verify_san: 1\n${C}.connection_error: 1\n`, expected: [['envoy-verify-san', `E ${C.slice(0, -4)}`]] },
    { name: 'fail_verify_no_cert on a listener', stats: `${L}.fail_verify_no_cert: 3\n`, expected: [['envoy-no-peer-certificate', `E ${L.slice(0, -4)}`]] },
    { name: 'connection errors with no verify failure: plaintext / bypass', stats: `${L}.connection_error: 4\n${L}.handshake: 1\n`, expected: [['envoy-handshake-error', `E ${L.slice(0, -4)}`]] },
    { name: 'histograms and other stats are ignored', stats: `${L}.handshake: 1\ncluster.backend.upstream_cx_length_ms: P0(nan,1)\nserver.live: 1\n`, expected: [] },
  ];
  it.each(rows)('$name', ({ stats, expected }) => {
    const findings = checkEnvoy('E', { certificates: [] }, parseEnvoyStats(stats), undefined);
    expect(findings.map((f) => [f.cause, f.subject])).toEqual(expected);
  });

  it('says when the Envoy holds another serial than the one we serve', () => {
    const v = view([[SERVER, 'server']]);
    const served = v.certificates[0]!.chain[0]!;
    const holds = (serial: string) => ({ certificates: [{ cert_chain: [{ serial_number: serial, subject_alt_names: [{ uri: SERVER }] }] }] });
    expect(checkEnvoy('E', holds(served.serialNumber.toLowerCase()), new Map(), v)).toEqual([]);
    expect(envoyHoldings(holds(served.serialNumber.toLowerCase()), v)).toEqual([`holds ${SERVER} serial ${served.serialNumber}: the version we serve (v-${SERVER})`]);
    expect(envoyHoldings(holds('0abc'), v)).toEqual([`holds ${SERVER} serial 0ABC, not the serial we serve (${served.serialNumber})`]);
    expect(causes(checkEnvoy('E', holds('0abc'), new Map(), v))).toEqual(['envoy-stale-certificate']);
    // A certificate that is not ours (another SPIFFE ID, static config) is not judged.
    expect(checkEnvoy('E', { certificates: [{ cert_chain: [{ serial_number: '01', subject_alt_names: [{ uri: 'spiffe://x/y' }] }] }] }, new Map(), v)).toEqual([]);
  });
});

describe("checkEnvoy: Envoy's trust bundle (/certs ca_cert) against the roots we serve", () => {
  // Envoy 1.40 shows a SPIFFE validator's CA with path "<trust domain>: <source>" (test/envoy/mtls.test.ts).
  const caCert = (c: () => CertificateAuthority, o: { path?: string; uri?: string } = {}) => () => ({
    serial_number: summarizeCertificate(c().certPem).serialNumber.toLowerCase(),
    ...(o.path !== undefined ? { path: o.path } : {}),
    ...(o.uri !== undefined ? { subject_alt_names: [{ uri: o.uri }] } : {}),
  });
  const rows: Array<{ name: string; cas: Array<() => { serial_number: string }>; expected: Cause[] }> = [
    { name: 'Envoy trusts our root', cas: [caCert(() => ca, { path: `${TD}: sds`, uri: `spiffe://${TD}` })], expected: [] },
    { name: "Envoy trusts only another server's root for our trust domain (by path)", cas: [caCert(() => foreign, { path: `${TD}: sds` })], expected: ['envoy-stale-bundle'] },
    { name: "Envoy trusts only another server's root for our trust domain (by URI SAN)", cas: [caCert(() => foreign, { path: '<inline>', uri: `spiffe://${TD}` })], expected: ['envoy-stale-bundle'] },
    { name: 'Envoy holds one of our roots next to a foreign one (rollover)', cas: [caCert(() => foreign, { path: `${TD}: sds` }), caCert(() => ca, { path: `${TD}: sds` })], expected: [] },
    { name: 'a ca_cert for a trust domain we do not serve', cas: [caCert(() => foreign, { path: 'other.org: sds', uri: 'spiffe://other.org' })], expected: [] },
    { name: 'a static trusted_ca that is not ours', cas: [caCert(() => foreign, { path: '/etc/ssl/ca.pem' })], expected: [] },
  ];
  it.each(rows)('$name', ({ cas, expected }) => {
    const v = view([[SERVER, 'server']]);
    const certs = { certificates: [{ ca_cert: cas.map((c) => c()) }] };
    expect(causes(checkEnvoy('E', certs, new Map(), v))).toEqual(expected);
  });

  it("names Envoy's serial and ours", () => {
    const v = view([[SERVER, 'server']]);
    const theirs = summarizeCertificate(foreign.certPem).serialNumber;
    const ours = summarizeCertificate(ca.certPem).serialNumber;
    const [f] = checkEnvoy('E', { certificates: [{ ca_cert: [{ serial_number: theirs.toLowerCase(), path: `${TD}: sds` }] }] }, new Map(), v);
    expect(f?.summary).toBe(`trusts for trust domain ${TD} CA serial(s) ${theirs}, none of the roots we serve for it (serial(s) ${ours})`);
    expect(formatReport(report([], [f!]))).toContain('PROBLEM [envoy-stale-bundle] E');
  });
});

describe('correlateEnvoyFindings: listener handshake errors explained by a peer refusing a certificate', () => {
  const L = 'listener.127.0.0.1_10000.ssl';
  const C = 'cluster.backend.ssl';
  it.each([
    { name: 'plaintext alone stays a problem', server: `${L}.connection_error: 1\n`, client: '', expected: [['envoy-handshake-error', 'problem']] },
    {
      name: 'the client refused our certificate: the listener errors become a warning',
      server: `${L}.connection_error: 1\n`,
      client: `${C}.fail_verify_error: 1\n${C}.connection_error: 1\n`,
      expected: [['envoy-handshake-error', 'warning'], ['envoy-verify-error', 'problem']],
    },
  ])('$name', ({ server, client, expected }) => {
    const findings = [...checkEnvoy('S', {}, parseEnvoyStats(server), undefined), ...checkEnvoy('C', {}, parseEnvoyStats(client), undefined)];
    expect(correlateEnvoyFindings(findings).map((f) => [f.cause, f.severity])).toEqual(expected);
  });
});

describe('report and formatReport', () => {
  it('is ok with warnings only, not ok with a problem, and prints the cause in plain words', () => {
    expect(report([], clockSkewFindings(new Date(NOW.getTime() + 60_000), NOW)).ok).toBe(true);
    const r = report(['x'], checkServed(view([[SERVER, 'foreignServer']])));
    expect(r.ok).toBe(false);
    const text = formatReport(r);
    expect(text).toContain('PROBLEM [untrusted-ca] spiffe://example.org/server');
    expect(text).toContain('Cause: The certificate is not signed by a CA in the trust bundle');
  });
});
