import { beforeAll, describe, expect, it } from 'vitest';
import { ErrorCode, type Problem, type Result } from '../src/core/errors.js';
import { validateTlsCertificate, type TlsCertificateInput } from '../src/secrets/validate-tls-certificate.js';
import { validateTrustBundle } from '../src/secrets/validate-trust-bundle.js';
import { checkLeafInBundle } from '../src/secrets/validate-leaf-in-bundle.js';
import {
  createIntermediateCa,
  createRootCa,
  issueLeaf,
  type CertificateAuthority,
  type IssuedLeaf,
} from '../src/x509/issue.js';
import { MAX_PEM_PROBLEMS, parsePem, toPem } from '../src/x509/pem.js';
import { createPrivateKey } from 'node:crypto';
import { issueLeafWithKeyType } from './helpers/key-types.js';

const CERT_FILE = '/etc/sds/web/cert.pem';
const KEY_FILE = '/etc/sds/web/key.pem';
const SPIFFE_ID = 'spiffe://example.org/ns/web';

let root: CertificateAuthority;
let inter: CertificateAuthority;
let leaf: IssuedLeaf;
let other: IssuedLeaf;
let rsaLeaf: IssuedLeaf;

/** Every failure/warning produced in this file, checked at the end for leaked key material. */
const allProblems: Problem[] = [];
const allKeys: string[] = [];

function record<T>(result: Result<T>): Result<T> {
  if (result.ok) allProblems.push(...result.warnings);
  else allProblems.push(result.problem);
  return result;
}

function tls(overrides: Partial<TlsCertificateInput> = {}): ReturnType<typeof validateTlsCertificate> {
  return record(
    validateTlsCertificate({
      certificateChainPem: leaf.chainPem,
      privateKeyPem: leaf.keyPem,
      certFile: CERT_FILE,
      keyFile: KEY_FILE,
      ...overrides,
    }),
  );
}

function expectProblem<T>(result: Result<T>, code: string, ...fragments: string[]): string {
  if (result.ok) throw new Error(`expected ${code}, got ok`);
  expect(result.problem.code).toBe(code);
  for (const f of fragments) expect(result.problem.message).toContain(f);
  return result.problem.message;
}

function okValue<T>(result: Result<T>): { value: T; warnings: Problem[] } {
  if (!result.ok) throw new Error(`expected ok, got ${result.problem.code}: ${result.problem.message}`);
  return result;
}

beforeAll(async () => {
  root = await createRootCa({ trustDomain: 'example.org', commonName: 'Example Root' });
  inter = await createIntermediateCa(root, { commonName: 'Example Intermediate' });
  leaf = await issueLeaf(inter, { spiffeId: SPIFFE_ID, dnsNames: ['web.example'] });
  other = await issueLeaf(inter, { spiffeId: SPIFFE_ID });
  rsaLeaf = await issueLeaf(inter, { spiffeId: SPIFFE_ID, keyType: 'rsa-2048' });
  allKeys.push(leaf.keyPem, other.keyPem, root.keyPem, inter.keyPem);
});

describe('validateTlsCertificate', () => {
  it('accepts leaf + intermediate with the matching key', () => {
    const { value, warnings } = okValue(tls({ expectedSpiffeId: SPIFFE_ID }));
    expect(warnings).toEqual([]);
    expect(value.kind).toBe('tls-certificate');
    expect(value.certificateChainPem).toBe(leaf.certPem + inter.certPem);
    expect(value.privateKeyPem).toBe(leaf.keyPem);
    expect(value.leaf.spiffeId).toBe(SPIFFE_ID);
    expect(value.leaf.dnsNames).toEqual(['web.example']);
    expect(value.leaf.serialNumber).toBe(leaf.serialNumber);
  });

  it('normalises CRLF, surrounding text and a trailing root', () => {
    const crlf = (s: string): string => s.replace(/\n/g, '\r\n');
    const { value } = okValue(
      tls({
        certificateChainPem: `# web cert\r\n${crlf(leaf.chainPem)}${crlf(root.certPem)}`,
        privateKeyPem: crlf(leaf.keyPem),
      }),
    );
    expect(value.certificateChainPem).toBe(leaf.certPem + inter.certPem + root.certPem);
    expect(value.privateKeyPem).toBe(leaf.keyPem);
  });

  it('warns about (and drops) a private key block inside the chain file', () => {
    const { value, warnings } = okValue(tls({ certificateChainPem: leaf.chainPem + leaf.keyPem }));
    expect(value.certificateChainPem).toBe(leaf.chainPem);
    expect(warnings).toHaveLength(1);
    expect(warnings[0]?.message).toContain(CERT_FILE);
    expect(warnings[0]?.message).toContain('private key');
  });

  it('fails on empty files, naming the file', () => {
    expectProblem(tls({ certificateChainPem: '' }), ErrorCode.FileEmpty, CERT_FILE);
    expectProblem(tls({ certificateChainPem: ' \n\r\n' }), ErrorCode.FileEmpty, CERT_FILE);
    expectProblem(tls({ privateKeyPem: '' }), ErrorCode.FileEmpty, KEY_FILE);
  });

  it('fails on text without PEM and on garbled PEM', () => {
    expectProblem(tls({ certificateChainPem: 'not a certificate\n' }), ErrorCode.PemInvalid, CERT_FILE, 'no CERTIFICATE');
    const garbled = leaf.chainPem.replace(/\n(.{20})./, '\n$1!');
    expectProblem(tls({ certificateChainPem: garbled }), ErrorCode.PemInvalid, CERT_FILE, 'invalid base64');
    const garbledKey = leaf.keyPem.replace(/\n(.{20})./, '\n$1!');
    expectProblem(tls({ privateKeyPem: garbledKey }), ErrorCode.PemInvalid, KEY_FILE, 'invalid base64');
    expectProblem(tls({ privateKeyPem: leaf.certPem }), ErrorCode.PemInvalid, KEY_FILE, 'no private key');
  });

  it('fails on a truncated chain or key (cut in half)', () => {
    const half = (s: string): string => s.slice(0, Math.floor(s.length / 2));
    expectProblem(tls({ certificateChainPem: half(leaf.chainPem) }), ErrorCode.PemInvalid, CERT_FILE, 'truncated');
    // Cut inside the intermediate: the leaf alone would be well-formed, the file is not.
    const cutInter = leaf.certPem + half(inter.certPem);
    expectProblem(tls({ certificateChainPem: cutInter }), ErrorCode.PemInvalid, CERT_FILE, 'truncated');
    expectProblem(tls({ privateKeyPem: half(leaf.keyPem) }), ErrorCode.PemInvalid, KEY_FILE, 'truncated');
  });

  it('fails on a key that does not parse, and on an encrypted key', () => {
    const notAKey = toPem('PRIVATE KEY', Buffer.from([0x30, 0x03, 0x02, 0x01, 0x00]));
    expectProblem(tls({ privateKeyPem: notAKey }), ErrorCode.KeyInvalid, KEY_FILE);
    const encrypted = toPem('ENCRYPTED PRIVATE KEY', Buffer.from([0x30, 0x03, 0x02, 0x01, 0x00]));
    expectProblem(tls({ privateKeyPem: encrypted }), ErrorCode.KeyEncrypted, KEY_FILE, 'private key is encrypted');
    expectProblem(tls({ privateKeyPem: leaf.keyPem + other.keyPem }), ErrorCode.KeyInvalid, KEY_FILE, '2 private keys');
  });

  it('refuses an encrypted key, legacy (Proc-Type: 4,ENCRYPTED) or PKCS#8, as SDS_ERR_KEY_ENCRYPTED (not as truncated DER)', () => {
    for (const type of ['sec1', 'pkcs8', 'pkcs1'] as const) {
      const keyPem = type === 'pkcs1' ? rsaLeaf.keyPem : leaf.keyPem;
      const encrypted = createPrivateKey(keyPem).export({ type, format: 'pem', cipher: 'aes-256-cbc', passphrase: 'pw' }).toString();
      expect(encrypted).toMatch(type === 'pkcs8' ? /ENCRYPTED PRIVATE KEY/ : /Proc-Type: 4,ENCRYPTED/);
      const message = expectProblem(tls({ privateKeyPem: encrypted, ...(type === 'pkcs1' ? { certificateChainPem: rsaLeaf.chainPem } : {}) }), ErrorCode.KeyEncrypted, KEY_FILE, 'private key is encrypted');
      expect(message).not.toContain('truncated');
    }
  });

  it.each([
    ['rsa-2048', true],
    ['rsa-3072', true],
    ['p-256', true],
    ['p-384', true],
    ['p-521', true],
    ['ed25519', true],
    ['rsa-1024', false],
    ['secp256k1', false],
  ] as const)('key type %s: accepted=%s (the set Envoy 1.40 loads; test/envoy/key-types.test.ts)', async (type, accepted) => {
    const l = await issueLeafWithKeyType(inter, type, { spiffeId: SPIFFE_ID });
    const result = tls({ certificateChainPem: l.chainPem, privateKeyPem: l.keyPem });
    if (accepted) okValue(result);
    else expect(expectProblem(result, ErrorCode.KeyUnsupported, KEY_FILE)).not.toContain('PRIVATE KEY');
  });

  it('parses 1 MB of certificate header lines in linear time, with a bounded problem list', () => {
    const text = '-----BEGIN CERTIFICATE-----\n'.repeat(Math.floor(1_000_000 / 28));
    const started = performance.now();
    const parsed = parsePem(text);
    const ms = performance.now() - started;
    // Was about 11 s (quadratic line counting); linear takes tens of milliseconds. A guard, not a benchmark.
    expect(ms).toBeLessThan(1000);
    expect(parsed.malformed).toHaveLength(MAX_PEM_PROBLEMS + 1);
    expect(parsed.malformed.at(-1)).toMatch(/^and \d+ more problems$/);
    const message = expectProblem(tls({ certificateChainPem: text }), ErrorCode.PemInvalid, CERT_FILE);
    expect(message.length).toBeLessThan(1000);
  });

  it('fails when the key belongs to another issuance', () => {
    expectProblem(tls({ privateKeyPem: other.keyPem }), ErrorCode.KeyMismatch, KEY_FILE, CERT_FILE);
  });

  it('fails on a wrong chain order (intermediate first)', () => {
    const message = expectProblem(
      tls({ certificateChainPem: inter.certPem + leaf.certPem }),
      ErrorCode.ChainOrder,
      CERT_FILE,
      'leaf must come first',
    );
    expect(message).toContain(KEY_FILE);
  });

  it('fails when the next certificate did not issue the previous one', async () => {
    const otherInter = await createIntermediateCa(root, { commonName: 'Example Intermediate' });
    allKeys.push(otherInter.keyPem);
    expectProblem(
      tls({ certificateChainPem: leaf.certPem + otherInter.certPem }),
      ErrorCode.ChainOrder,
      CERT_FILE,
      'certificate #1',
      'not issued by certificate #2',
    );
    expectProblem(
      tls({ certificateChainPem: leaf.certPem + root.certPem + inter.certPem }),
      ErrorCode.ChainOrder,
      'certificate #1',
      'issued by certificate #3',
    );
  });

  it('fails on an expired leaf, naming both dates and the file', async () => {
    const notBefore = new Date('2020-01-01T00:00:00Z');
    const notAfter = new Date('2020-02-01T00:00:00Z');
    const old = await issueLeaf(inter, { spiffeId: SPIFFE_ID, notBefore, notAfter });
    allKeys.push(old.keyPem);
    expectProblem(
      tls({ certificateChainPem: old.chainPem, privateKeyPem: old.keyPem }),
      ErrorCode.CertExpired,
      CERT_FILE,
      '2020-01-01T00:00:00.000Z',
      '2020-02-01T00:00:00.000Z',
    );
  });

  it('fails on a not-yet-valid leaf, naming both dates and the file', async () => {
    const notBefore = new Date(Date.now() + 86_400_000);
    const notAfter = new Date(Date.now() + 2 * 86_400_000);
    const future = await issueLeaf(inter, { notBefore, notAfter });
    allKeys.push(future.keyPem);
    const iso = (d: Date): string => new Date(Math.floor(d.getTime() / 1000) * 1000).toISOString();
    expectProblem(
      tls({ certificateChainPem: future.chainPem, privateKeyPem: future.keyPem }),
      ErrorCode.CertNotYetValid,
      CERT_FILE,
      iso(notBefore),
      iso(notAfter),
    );
  });

  it('uses the given clock', () => {
    expectProblem(tls({ now: new Date(Date.now() + 2 * 3_600_000) }), ErrorCode.CertExpired);
    expectProblem(tls({ now: new Date(Date.now() - 3_600_000) }), ErrorCode.CertNotYetValid);
  });

  it('fails on a SPIFFE ID mismatch', async () => {
    expectProblem(
      tls({ expectedSpiffeId: 'spiffe://example.org/ns/api' }),
      ErrorCode.SpiffeIdMismatch,
      CERT_FILE,
      SPIFFE_ID,
      'spiffe://example.org/ns/api',
    );
    const noId = await issueLeaf(inter, { dnsNames: ['x.example'] });
    allKeys.push(noId.keyPem);
    expectProblem(
      tls({ certificateChainPem: noId.chainPem, privateKeyPem: noId.keyPem, expectedSpiffeId: SPIFFE_ID }),
      ErrorCode.SpiffeIdMismatch,
      'no SPIFFE ID',
    );
  });

  it('warns about an intermediate outside its validity window', async () => {
    const oldInter = await createIntermediateCa(root, {
      notBefore: new Date('2020-01-01T00:00:00Z'),
      notAfter: new Date('2021-01-01T00:00:00Z'),
    });
    const l = await issueLeaf(oldInter, { spiffeId: SPIFFE_ID });
    allKeys.push(oldInter.keyPem, l.keyPem);
    const { warnings } = okValue(tls({ certificateChainPem: l.chainPem, privateKeyPem: l.keyPem }));
    expect(warnings).toHaveLength(1);
    expect(warnings[0]?.code).toBe(ErrorCode.CertExpired);
    expect(warnings[0]?.message).toContain('intermediate #2');
    expect(warnings[0]?.message).toContain('2021-01-01T00:00:00.000Z');
  });
});

describe('validateTrustBundle', () => {
  it('accepts roots from several files', async () => {
    const root2 = await createRootCa({ commonName: 'Second Root' });
    const result = record(
      validateTrustBundle({
        files: [
          { file: 'a.pem', text: root.certPem },
          { file: 'b.pem', text: root2.certPem.replace(/\n/g, '\r\n') },
        ],
        trustDomain: 'example.org',
      }),
    );
    const { value, warnings } = okValue(result);
    expect(warnings).toEqual([]);
    expect(value).toEqual({
      kind: 'trust-bundle',
      bundles: [
        {
          trustDomain: 'example.org',
          rootsPem: [root.certPem, root2.certPem],
          roots: [
            expect.objectContaining({ subject: 'CN=Example Root', serialNumber: root.serialNumber }),
            expect.objectContaining({ subject: 'CN=Second Root', serialNumber: root2.serialNumber }),
          ],
        },
      ],
    });
  });

  it('omits the trust domain when not given', () => {
    const { value } = okValue(record(validateTrustBundle({ files: [{ file: 'a.pem', text: root.certPem }] })));
    expect(value.bundles[0]).not.toHaveProperty('trustDomain');
  });

  it('fails on an empty bundle', () => {
    expectProblem(record(validateTrustBundle({ files: [] })), ErrorCode.BundleEmpty);
  });

  it('fails on an empty file or a file without certificates, naming it', () => {
    const good = { file: 'good.pem', text: root.certPem };
    expectProblem(record(validateTrustBundle({ files: [good, { file: 'empty.pem', text: '\n' }] })), ErrorCode.FileEmpty, 'empty.pem');
    expectProblem(
      record(validateTrustBundle({ files: [good, { file: 'key.pem', text: leaf.keyPem }] })),
      ErrorCode.PemInvalid,
      'key.pem',
      'no CERTIFICATE',
    );
  });

  it('fails on a garbled or truncated file, naming it', () => {
    const good = { file: 'good.pem', text: root.certPem };
    const garbled = root.certPem.replace(/\n(.{30})./, '\n$1#');
    expectProblem(record(validateTrustBundle({ files: [good, { file: 'bad.pem', text: garbled }] })), ErrorCode.PemInvalid, 'bad.pem');
    const truncated = root.certPem + inter.certPem.slice(0, 200);
    expectProblem(
      record(validateTrustBundle({ files: [{ file: 'cut.pem', text: truncated }] })),
      ErrorCode.PemInvalid,
      'cut.pem',
      'truncated',
    );
  });

  it('collapses duplicate roots within and across files', () => {
    const { value } = okValue(
      record(
        validateTrustBundle({
          files: [
            { file: 'a.pem', text: root.certPem + root.certPem },
            { file: 'b.pem', text: `${inter.certPem}${root.certPem.replace(/\n/g, '\r\n')}` },
          ],
        }),
      ),
    );
    expect(value.bundles[0]?.rootsPem).toEqual([root.certPem, inter.certPem]);
    expect(value.bundles[0]?.roots).toHaveLength(2);
  });

  it('keeps an expired root with a warning, fails when all roots expired', async () => {
    const expired = await createRootCa({
      commonName: 'Old Root',
      notBefore: new Date('2019-01-01T00:00:00Z'),
      notAfter: new Date('2020-01-01T00:00:00Z'),
    });
    allKeys.push(expired.keyPem);
    const mixed = okValue(
      record(
        validateTrustBundle({
          files: [
            { file: 'old.pem', text: expired.certPem },
            { file: 'new.pem', text: root.certPem },
          ],
        }),
      ),
    );
    expect(mixed.value.bundles[0]?.rootsPem).toHaveLength(2);
    expect(mixed.warnings).toHaveLength(1);
    expect(mixed.warnings[0]?.code).toBe(ErrorCode.CertExpired);
    expect(mixed.warnings[0]?.message).toContain('old.pem');
    expect(mixed.warnings[0]?.message).toContain('2020-01-01T00:00:00.000Z');

    expectProblem(
      record(validateTrustBundle({ files: [{ file: 'old.pem', text: expired.certPem }] })),
      ErrorCode.CertExpired,
      'old.pem',
      '2020-01-01T00:00:00.000Z',
    );
  });

  it('rejects an invalid trust domain name', () => {
    expectProblem(
      record(validateTrustBundle({ files: [{ file: 'a.pem', text: root.certPem }], trustDomain: 'spiffe://Example.org' })),
      ErrorCode.ConfigInvalid,
    );
  });
});

describe('key material in problems', () => {
  it('never appears in any failure or warning message above', () => {
    expect(allProblems.length).toBeGreaterThan(20);
    const keyLines = allKeys.flatMap((pem) => pem.split('\n').filter((l) => l !== '' && !l.startsWith('-----')));
    expect(keyLines.length).toBeGreaterThan(10);
    for (const p of allProblems) {
      expect(p.message).not.toContain('PRIVATE KEY');
      for (const line of keyLines) expect(p.message).not.toContain(line);
      // Not even fragments: no long base64-looking run at all.
      expect(p.message).not.toMatch(/[A-Za-z0-9+/]{40,}/);
    }
  });
});

describe('checkLeafInBundle', () => {
  const bundle = (name: string, trustDomain: string, ...cas: CertificateAuthority[]) => ({
    name,
    value: { kind: 'trust-bundle' as const, bundles: [{ trustDomain, rootsPem: cas.map((c) => c.certPem), roots: [] }] },
  });
  const value = (l: IssuedLeaf) => okValue(tls({ certificateChainPem: l.chainPem, privateKeyPem: l.keyPem })).value;

  it('accepts a chain through an intermediate to a root of its own trust domain bundle; ignores other trust domains and leaves without a SPIFFE ID', async () => {
    const otherRoot = await createRootCa({ trustDomain: 'example.org', commonName: 'Other Root' });
    expect(checkLeafInBundle(value(leaf), CERT_FILE, [bundle('spiffe://example.org', 'example.org', otherRoot, root)])).toBeUndefined();
    expect(checkLeafInBundle(value(leaf), CERT_FILE, [bundle('spiffe://partner.test', 'partner.test', otherRoot)])).toBeUndefined();
    const noId = await issueLeaf(inter, { dnsNames: ['web.example'] });
    expect(checkLeafInBundle(value(noId), CERT_FILE, [bundle('spiffe://example.org', 'example.org', otherRoot)])).toBeUndefined();
  });

  it('warns when the chain reaches no root of its trust domain bundle, naming the issuer, the bundle and its roots', async () => {
    const otherRoot = await createRootCa({ trustDomain: 'example.org', commonName: 'Other Root' });
    const problem = checkLeafInBundle(value(leaf), CERT_FILE, [bundle('spiffe://example.org', 'example.org', otherRoot)]);
    expect(problem?.code).toBe(ErrorCode.LeafNotInBundle);
    expect(problem?.message).toContain(`${CERT_FILE}: leaf ${leaf.serialNumber} (${SPIFFE_ID}) is issued by CN=Example Intermediate via 1 intermediate(s) up to CN=Example Root`);
    expect(problem?.message).toContain('not a root of bundle spiffe://example.org (trust domain example.org; roots: CN=Other Root)');
  });
});
