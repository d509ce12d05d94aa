import { execFileSync } from 'node:child_process';
import { X509Certificate, createPrivateKey } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { describeCertificate, parseOpenSslTime, parseSubjectAltName } from '../src/x509/certificate-info.js';
import {
  createIntermediateCa,
  createRootCa,
  issueLeaf,
  type CertificateAuthority,
  type KeyType,
} from '../src/x509/issue.js';
import { parsePem, splitPem, toPem } from '../src/x509/pem.js';
import { isSpiffeId, isTrustDomainId, parseSpiffeId, trustDomainId } from '../src/x509/spiffe.js';

const OPENSSL = '/usr/bin/openssl';

describe('spiffe', () => {
  it('parses valid SPIFFE IDs', () => {
    expect(parseSpiffeId('spiffe://example.org/ns/default/sa/web')).toEqual({
      trustDomain: 'example.org',
      path: '/ns/default/sa/web',
    });
    expect(parseSpiffeId('spiffe://example.org')).toEqual({ trustDomain: 'example.org', path: '' });
    expect(parseSpiffeId('spiffe://a-b_c.9/x.y-z_/Upper')).toEqual({ trustDomain: 'a-b_c.9', path: '/x.y-z_/Upper' });
  });

  it.each([
    'SPIFFE://example.org/x',
    'spiffe://Example.org/x',
    'spiffe://example.org:8443/x',
    'spiffe://user@example.org/x',
    'spiffe://example.org/x?q=1',
    'spiffe://example.org/x#frag',
    'spiffe://example.org/',
    'spiffe://example.org//x',
    'spiffe://example.org/x/',
    'spiffe://example.org/./x',
    'spiffe://example.org/x/..',
    'spiffe://example.org/a%20b',
    'spiffe:///path',
    'spiffe://',
    'https://example.org/x',
    '',
    `spiffe://${'a'.repeat(256)}`,
  ])('rejects %j', (s) => {
    expect(parseSpiffeId(s)).toBeUndefined();
    expect(isSpiffeId(s)).toBe(false);
  });

  it('recognises trust-domain IDs', () => {
    expect(trustDomainId('example.org')).toBe('spiffe://example.org');
    expect(isTrustDomainId('spiffe://example.org')).toBe(true);
    expect(isTrustDomainId('spiffe://example.org/x')).toBe(false);
    expect(isTrustDomainId('spiffe://example.org/')).toBe(false);
    expect(isTrustDomainId('example.org')).toBe(false);
  });
});

describe('pem', () => {
  let ca: CertificateAuthority;
  beforeAll(async () => {
    ca = await createRootCa({});
  });

  it('splits blocks with CRLF and surrounding text into normalised PEM', async () => {
    const leaf = await issueLeaf(ca, { dnsNames: ['a.example'] });
    const text = `subject=CN=a\r\n${leaf.certPem.replace(/\n/g, '\r\n')}junk between\r\n${ca.certPem.replace(/\n/g, '\r\n')}trailer`;
    const blocks = splitPem(text);
    expect(blocks.map((b) => b.label)).toEqual(['CERTIFICATE', 'CERTIFICATE']);
    expect(blocks[0]?.pem).toBe(leaf.certPem);
    expect(blocks[1]?.pem).toBe(ca.certPem);
    expect(blocks[0]?.der.equals(new X509Certificate(leaf.certPem).raw)).toBe(true);
    expect(parsePem(text).malformed).toEqual([]);
  });

  it('re-wraps one-line base64 at 64 columns', () => {
    const der = new X509Certificate(ca.certPem).raw;
    const oneLine = `-----BEGIN CERTIFICATE-----\n${der.toString('base64')}\n-----END CERTIFICATE-----`;
    expect(splitPem(oneLine)[0]?.pem).toBe(ca.certPem);
    expect(toPem('CERTIFICATE', der)).toBe(ca.certPem);
  });

  it('returns nothing for text without PEM', () => {
    expect(splitPem('')).toEqual([]);
    expect(parsePem('hello\nworld\n')).toEqual({ blocks: [], malformed: [] });
  });

  it('reports a truncated block (cut in the middle)', () => {
    const cut = ca.certPem.slice(0, Math.floor(ca.certPem.length / 2));
    const result = parsePem(cut);
    expect(result.blocks).toEqual([]);
    expect(result.malformed).toHaveLength(1);
    expect(result.malformed[0]).toMatch(/line 1: BEGIN CERTIFICATE block has no END marker \(file truncated\?\)/);
  });

  it('reports a truncated second block but keeps the first', () => {
    const text = ca.certPem + ca.certPem.slice(0, 100);
    const result = parsePem(text);
    expect(result.blocks).toHaveLength(1);
    expect(result.malformed[0]).toMatch(/no END marker/);
  });

  it('reports a cut inside the END marker', () => {
    expect(parsePem(ca.certPem.slice(0, -10)).malformed[0]).toMatch(/no END marker/);
  });

  it('reports invalid base64', () => {
    const lines = ca.certPem.split('\n');
    lines[2] = `${lines[2]?.slice(0, 10)}*${lines[2]?.slice(11)}`;
    const result = parsePem(lines.join('\n'));
    expect(result.blocks).toEqual([]);
    expect(result.malformed[0]).toMatch(/CERTIFICATE block has invalid base64/);
  });

  it('reports a body that lost a whole line (DER length check)', () => {
    const lines = ca.certPem.split('\n');
    lines.splice(2, 1);
    expect(parsePem(lines.join('\n')).malformed[0]).toMatch(/truncated or has trailing bytes/);
  });

  it('reports stray END markers, mismatched labels and empty bodies', () => {
    expect(parsePem('-----END CERTIFICATE-----\n').malformed[0]).toMatch(/END CERTIFICATE marker without a matching BEGIN/);
    const mismatched = ca.certPem.replace('END CERTIFICATE', 'END X509 CRL');
    expect(parsePem(mismatched).malformed[0]).toMatch(/BEGIN CERTIFICATE block is closed by END X509 CRL/);
    expect(parsePem('-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n').malformed[0]).toMatch(/is empty/);
  });
});

describe('describeCertificate', () => {
  let dir: string;
  let inter: CertificateAuthority;
  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'x509-test-'));
    inter = await createIntermediateCa(await createRootCa({ trustDomain: 'example.org' }), { commonName: 'Inter, Inc.' });
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('describes a leaf: serial, subject, SPIFFE ID, DNS names, dates', async () => {
    const notBefore = new Date('2025-01-02T03:04:05Z');
    const notAfter = new Date('2049-12-31T23:59:59Z');
    const leaf = await issueLeaf(inter, {
      spiffeId: 'spiffe://example.org/ns/web',
      dnsNames: ['web.example', 'www.web.example'],
      commonName: 'web',
      notBefore,
      notAfter,
    });
    const cert = new X509Certificate(leaf.certPem);
    const info = describeCertificate(cert);
    expect(info).toEqual({
      serialNumber: leaf.serialNumber,
      subject: 'CN=web',
      spiffeId: 'spiffe://example.org/ns/web',
      dnsNames: ['web.example', 'www.web.example'],
      notBefore,
      notAfter,
    });
    expect(info.serialNumber).toBe(cert.serialNumber.toUpperCase());
    const file = join(dir, 'leaf.pem');
    writeFileSync(file, leaf.certPem);
    const serial = execFileSync(OPENSSL, ['x509', '-noout', '-serial', '-in', file], { encoding: 'utf8' });
    expect(serial.trim()).toBe(`serial=${info.serialNumber}`);
  });

  it('describes a certificate without SANs; keeps escaping in the subject', async () => {
    const leaf = await issueLeaf(inter, { commonName: 'plain' });
    const info = describeCertificate(new X509Certificate(leaf.certPem));
    expect(info.spiffeId).toBeUndefined();
    expect(info.dnsNames).toEqual([]);
    expect(describeCertificate(new X509Certificate(inter.certPem)).subject).toBe('CN=Inter\\, Inc.');
  });

  it('parses quoted SAN values containing commas from a real certificate', async () => {
    const leaf = await issueLeaf(inter, { dnsNames: ['a,b.example', 'c.example'], spiffeId: 'spiffe://example.org/x' });
    const cert = new X509Certificate(leaf.certPem);
    expect(cert.subjectAltName).toContain('\\u002c'); // Node quoted it; the parser must undo that
    expect(describeCertificate(cert).dnsNames).toEqual(['a,b.example', 'c.example']);
  });

  it('parses subjectAltName strings in both quoting styles', () => {
    expect(parseSubjectAltName('URI:https://x/y, URI:spiffe://td/a, DNS:x.example, IP Address:10.0.0.1')).toEqual([
      { type: 'URI', value: 'https://x/y' },
      { type: 'URI', value: 'spiffe://td/a' },
      { type: 'DNS', value: 'x.example' },
      { type: 'IP Address', value: '10.0.0.1' },
    ]);
    expect(parseSubjectAltName('DNS:"a\\u002c b", "URI:spiffe://td/q\\"x", DNS:z')).toEqual([
      { type: 'DNS', value: 'a, b' },
      { type: 'URI', value: 'spiffe://td/q"x' },
      { type: 'DNS', value: 'z' },
    ]);
    expect(parseSubjectAltName('')).toEqual([]);
  });

  it('picks the first spiffe:// URI SAN as the SPIFFE ID', async () => {
    const leaf = await issueLeaf(inter, { spiffeId: 'spiffe://example.org/first' });
    expect(describeCertificate(new X509Certificate(leaf.certPem)).spiffeId).toBe('spiffe://example.org/first');
  });

  it("parses OpenSSL's time format", () => {
    expect(parseOpenSslTime('Jan  5 01:02:03 2024 GMT').toISOString()).toBe('2024-01-05T01:02:03.000Z');
    expect(parseOpenSslTime('Dec 31 23:59:59 2099 GMT').toISOString()).toBe('2099-12-31T23:59:59.000Z');
  });
});

describe('issue', () => {
  let dir: string;
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'issue-test-'));
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  const write = (name: string, text: string): string => {
    const file = join(dir, name);
    writeFileSync(file, text);
    return file;
  };

  it.each<KeyType>(['ec-p256', 'ec-p384', 'rsa-2048'])('issues root -> intermediate -> leaf (%s) that OpenSSL verifies', async (keyType) => {
    const root = await createRootCa({ trustDomain: 'example.org', keyType });
    const inter = await createIntermediateCa(root, { keyType });
    const leaf = await issueLeaf(inter, { spiffeId: 'spiffe://example.org/svc', dnsNames: ['svc.example'], keyType });

    const leafCert = new X509Certificate(leaf.certPem);
    const interCert = new X509Certificate(inter.certPem);
    const rootCert = new X509Certificate(root.certPem);
    expect(leafCert.checkPrivateKey(createPrivateKey(leaf.keyPem))).toBe(true);
    expect(interCert.checkPrivateKey(createPrivateKey(inter.keyPem))).toBe(true);
    expect(leafCert.checkIssued(interCert) && leafCert.verify(interCert.publicKey)).toBe(true);
    expect(interCert.checkIssued(rootCert) && interCert.verify(rootCert.publicKey)).toBe(true);
    expect(rootCert.ca && interCert.ca && !leafCert.ca).toBe(true);
    expect(leaf.chainPem).toBe(leaf.certPem + inter.certPem);
    expect(leaf.keyPem).toMatch(/^-----BEGIN PRIVATE KEY-----\n/);
    expect(leaf.serialNumber).toBe(leafCert.serialNumber.toUpperCase());
    expect(leaf.serialNumber).toMatch(/^[0-7][0-9A-F]{31}$/);

    const rootFile = write(`root-${keyType}.pem`, root.certPem);
    const interFile = write(`inter-${keyType}.pem`, inter.certPem);
    const leafFile = write(`leaf-${keyType}.pem`, leaf.certPem);
    const out = execFileSync(OPENSSL, ['verify', '-CAfile', rootFile, '-untrusted', interFile, leafFile], {
      encoding: 'utf8',
    });
    expect(out.trim()).toBe(`${leafFile}: OK`);
    // The leaf must also pass as a TLS server and client certificate (extended key usage).
    for (const purpose of ['sslserver', 'sslclient']) {
      execFileSync(OPENSSL, ['verify', '-purpose', purpose, '-CAfile', rootFile, '-untrusted', interFile, leafFile], {
        stdio: 'pipe',
      });
    }
    execFileSync(OPENSSL, ['pkey', '-noout', '-in', write(`key-${keyType}.pem`, leaf.keyPem)], { stdio: 'pipe' });
  });

  it('sets the expected extensions (checked with openssl x509 -text)', async () => {
    const root = await createRootCa({ trustDomain: 'example.org' });
    const leaf = await issueLeaf(root, { spiffeId: 'spiffe://example.org/a', dnsNames: ['a.example'] });
    const text = (pem: string, name: string): string =>
      execFileSync(OPENSSL, ['x509', '-noout', '-text', '-in', write(name, pem)], { encoding: 'utf8' });
    const rootText = text(root.certPem, 'ext-root.pem');
    expect(rootText).toMatch(/Basic Constraints: critical\s+CA:TRUE/);
    expect(rootText).toMatch(/Key Usage: critical\s+Certificate Sign, CRL Sign/);
    expect(rootText).toContain('Subject Key Identifier');
    expect(rootText).toContain('URI:spiffe://example.org');
    const leafText = text(leaf.certPem, 'ext-leaf.pem');
    expect(leafText).toMatch(/Basic Constraints: critical\s+CA:FALSE/);
    expect(leafText).toMatch(/Key Usage: critical\s+Digital Signature, Key Encipherment/);
    expect(leafText).toContain('TLS Web Server Authentication, TLS Web Client Authentication');
    expect(leafText).toContain('Authority Key Identifier');
    expect(leafText).toContain('URI:spiffe://example.org/a, DNS:a.example');
    expect(leafText).toContain('ecdsa-with-SHA256');
  });

  it('uses the default lifetimes: leaf 1 hour from now - 1 min, CA 1 year', async () => {
    const before = Date.now();
    const root = await createRootCa({});
    const leaf = describeCertificate(new X509Certificate((await issueLeaf(root, {})).certPem));
    const ca = describeCertificate(new X509Certificate(root.certPem));
    const slack = 5_000;
    expect(Math.abs(leaf.notBefore.getTime() - (before - 60_000))).toBeLessThan(slack);
    expect(Math.abs(leaf.notAfter.getTime() - (before + 3_600_000))).toBeLessThan(slack);
    expect(Math.abs(ca.notAfter.getTime() - (before + 365 * 86_400_000))).toBeLessThan(slack);
  });

  it('puts only the leaf in chainPem when the CA is a root', async () => {
    const root = await createRootCa({});
    const leaf = await issueLeaf(root, { dnsNames: ['x.example'] });
    expect(leaf.chainPem).toBe(leaf.certPem);
  });

  it('makes OpenSSL reject a leaf against an unrelated root', async () => {
    const root = await createRootCa({});
    const inter = await createIntermediateCa(root, {});
    const leaf = await issueLeaf(inter, {});
    const other = await createRootCa({});
    expect(() =>
      execFileSync(
        OPENSSL,
        ['verify', '-CAfile', write('other.pem', other.certPem), '-untrusted', write('i.pem', inter.certPem), write('l.pem', leaf.certPem)],
        { stdio: 'pipe' },
      ),
    ).toThrow();
  });
});
