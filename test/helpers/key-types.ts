/**
 * Leaves with every private key type an operator might bring (including ones Envoy refuses),
 * signed by one of our test CAs. WebCrypto cannot make secp256k1 or RSA-1024 keys for
 * @peculiar/x509, so the key pair comes from node:crypto and the CA signs its SPKI bytes.
 */
import { generateKeyPair, type KeyObject } from 'node:crypto';
import { promisify } from 'node:util';
import * as x509 from '@peculiar/x509';
import type { CertificateAuthority, IssuedLeaf } from '../../src/x509/issue.js';
import { signingAlgorithm } from '../../src/x509/key-algorithms.js';
import { toPem } from '../../src/x509/pem.js';

export type LeafKeyType = 'rsa-1024' | 'rsa-2048' | 'rsa-3072' | 'rsa-4096' | 'p-256' | 'p-384' | 'p-521' | 'ed25519' | 'secp256k1';

export const LEAF_KEY_TYPES: readonly LeafKeyType[] = ['rsa-2048', 'rsa-3072', 'rsa-4096', 'p-256', 'p-384', 'p-521', 'ed25519', 'rsa-1024', 'secp256k1'];

const generate = promisify(generateKeyPair) as (type: string, options: Record<string, unknown>) => Promise<{ publicKey: KeyObject; privateKey: KeyObject }>;

async function keyPair(type: LeafKeyType): Promise<{ publicKey: KeyObject; privateKey: KeyObject }> {
  if (type.startsWith('rsa-')) return generate('rsa', { modulusLength: Number(type.slice(4)) });
  if (type === 'ed25519') return generate('ed25519', {});
  const curves: Partial<Record<LeafKeyType, string>> = { 'p-256': 'prime256v1', 'p-384': 'secp384r1', 'p-521': 'secp521r1', secp256k1: 'secp256k1' };
  const namedCurve = curves[type];
  return generate('ec', { namedCurve });
}

/** A leaf for `spiffeId` (and DNS names) whose key is of `type`, issued by `ca` (1 h lifetime). */
export async function issueLeafWithKeyType(
  ca: CertificateAuthority,
  type: LeafKeyType,
  opts: { spiffeId: string; dnsNames?: string[]; notBefore?: Date; notAfter?: Date },
): Promise<IssuedLeaf> {
  const { publicKey, privateKey } = await keyPair(type);
  const spki = publicKey.export({ type: 'spki', format: 'der' });
  const serialNumber = Buffer.from(crypto.getRandomValues(new Uint8Array(16))).toString('hex').replace(/^[89a-f]/, '1').toUpperCase();
  const now = Date.now();
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber,
    subject: `CN=${opts.dnsNames?.[0] ?? `leaf ${type}`}`,
    issuer: ca.cert.subjectName,
    publicKey: new Uint8Array(spki),
    signingKey: ca.keys.privateKey,
    signingAlgorithm: signingAlgorithm(ca.keys.privateKey),
    notBefore: opts.notBefore ?? new Date(now - 60_000),
    notAfter: opts.notAfter ?? new Date(now + 3_600_000),
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature | (type.startsWith('rsa-') ? x509.KeyUsageFlags.keyEncipherment : 0), true),
      new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth, x509.ExtendedKeyUsage.clientAuth]),
      new x509.SubjectAlternativeNameExtension([
        { type: 'url', value: opts.spiffeId },
        ...(opts.dnsNames ?? []).map((value) => ({ type: 'dns' as const, value })),
      ]),
    ],
  });
  const certPem = toPem('CERTIFICATE', cert.rawData);
  const selfSigned = ca.cert.subject === ca.cert.issuer;
  return {
    certPem,
    keyPem: privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(),
    serialNumber,
    chainPem: selfSigned ? certPem : certPem + ca.certPem,
  };
}
