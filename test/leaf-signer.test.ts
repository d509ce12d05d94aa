import { describe, expect, it } from 'vitest';
import { X509Certificate } from 'node:crypto';
import * as x509 from '@peculiar/x509';
import { createIntermediateCa, createRootCa, issueLeaf, type CertificateAuthority } from '../src/x509/issue.js';
import { LeafSigner } from '../src/x509/leaf-signer.js';

const SPIFFE_ID = 'spiffe://example.org/front';
const EKU_SERVER = '1.3.6.1.5.5.7.3.1';
const EKU_CLIENT = '1.3.6.1.5.5.7.3.2';

/** The leaves the embedded CA writes as DER by hand, read back by OpenSSL (node:crypto) and by @peculiar/x509. */
describe('LeafSigner (leaf DER written directly)', () => {
  const cases: Array<{ name: string; ca: () => Promise<CertificateAuthority>; hash: string; chainLength: number }> = [
    { name: 'ECDSA P-256 root', ca: () => createRootCa({ trustDomain: 'example.org' }), hash: 'SHA-256', chainLength: 1 },
    { name: 'ECDSA P-384 root', ca: () => createRootCa({ trustDomain: 'example.org', keyType: 'ec-p384' }), hash: 'SHA-384', chainLength: 1 },
    { name: 'RSA-2048 root', ca: () => createRootCa({ trustDomain: 'example.org', keyType: 'rsa-2048' }), hash: 'SHA-256', chainLength: 1 },
    { name: 'P-256 intermediate under a P-256 root', ca: async () => createIntermediateCa(await createRootCa({ trustDomain: 'example.org' })), hash: 'SHA-256', chainLength: 2 },
  ];

  for (const c of cases) {
    it(`issues a leaf OpenSSL and @peculiar/x509 both read: ${c.name}`, async () => {
      const ca = await c.ca();
      const before = Date.now();
      const leaf = await issueLeaf(ca, { spiffeId: SPIFFE_ID, dnsNames: ['front.apps.local'] });
      const cert = new X509Certificate(leaf.certPem);
      const caCert = new X509Certificate(ca.certPem);
      expect(cert.checkIssued(caCert)).toBe(true);
      expect(cert.verify(caCert.publicKey)).toBe(true);
      expect(cert.ca).toBe(false);
      expect(cert.subject).toBe('CN=front.apps.local');
      expect(cert.subjectAltName).toBe(`URI:${SPIFFE_ID}, DNS:front.apps.local`);
      expect(cert.keyUsage).toEqual([EKU_SERVER, EKU_CLIENT]);
      expect(cert.serialNumber.toUpperCase()).toBe(leaf.serialNumber);
      // Back-dated a minute for clock skew; one hour by default (second precision in the DER).
      expect(Date.parse(cert.validFrom)).toBeGreaterThanOrEqual(before - 61_000);
      expect(Date.parse(cert.validFrom)).toBeLessThanOrEqual(Date.now() - 59_000);
      expect(Date.parse(cert.validTo) - Date.parse(cert.validFrom)).toBe(61 * 60_000);
      expect(leaf.chainPem.match(/BEGIN CERTIFICATE/g)).toHaveLength(c.chainLength);

      const parsed = new x509.X509Certificate(leaf.certPem);
      expect((parsed.signatureAlgorithm as { hash: { name: string } }).hash.name).toBe(c.hash);
      const bc = parsed.getExtension(x509.BasicConstraintsExtension)!;
      expect([bc.ca, bc.critical]).toEqual([false, true]);
      const ku = parsed.getExtension(x509.KeyUsagesExtension)!;
      expect([ku.usages, ku.critical]).toEqual([x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyEncipherment, true]);
      const aki = parsed.getExtension(x509.AuthorityKeyIdentifierExtension)!;
      expect(aki.keyId).toBe(ca.cert.getExtension(x509.SubjectKeyIdentifierExtension)!.keyId);
      expect(await parsed.verify({ publicKey: ca.cert.publicKey, date: new Date() })).toBe(true);
    });
  }

  it('writes GeneralizedTime from 2050 on and UTCTime before (RFC 5280 4.1.2.5)', async () => {
    const ca = await createRootCa({ notAfter: new Date('2060-01-01T00:00:00Z') });
    const leaf = await issueLeaf(ca, { spiffeId: SPIFFE_ID, notBefore: new Date('2049-12-31T23:59:59Z'), notAfter: new Date('2050-01-01T00:00:01Z') });
    const cert = new X509Certificate(leaf.certPem);
    expect(new Date(cert.validFrom).toISOString()).toBe('2049-12-31T23:59:59.000Z');
    expect(new Date(cert.validTo).toISOString()).toBe('2050-01-01T00:00:01.000Z');
  });

  it('omits the SAN extension when there is no name, and keeps the CN', async () => {
    const ca = await createRootCa();
    const leaf = await issueLeaf(ca, { commonName: 'plain' });
    const cert = new X509Certificate(leaf.certPem);
    expect(cert.subjectAltName).toBeUndefined();
    expect(cert.subject).toBe('CN=plain');
  });

  it('refuses a private key that is not the CA certificate’s', async () => {
    const ca = await createRootCa();
    const other = await createRootCa();
    expect(() => LeafSigner.fromPem(ca.certPem, other.keyPem)).toThrow('the private key does not belong to the CA certificate');
  });

  it('signs any SubjectPublicKeyInfo it is given (RSA leaf key under an EC CA)', async () => {
    const ca = await createRootCa();
    const leaf = await issueLeaf(ca, { spiffeId: SPIFFE_ID, keyType: 'rsa-2048' });
    expect(new X509Certificate(leaf.certPem).publicKey.asymmetricKeyType).toBe('rsa');
  });
});
