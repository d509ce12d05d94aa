import { webcrypto } from 'node:crypto';
import * as x509 from '@peculiar/x509';
import './issue.js'; // sets @peculiar/x509's crypto provider
import { toPem } from './pem.js';

type CryptoKeyPair = webcrypto.CryptoKeyPair;
type CryptoKey = webcrypto.CryptoKey;

/** A PKCS#10 request for a SPIFFE identity: URI SAN = the SPIFFE ID, plus optional DNS SANs. */
export async function createCsr(keys: CryptoKeyPair, opts: { spiffeId: string; dnsNames?: string[] }): Promise<string> {
  const alg = keys.privateKey.algorithm as webcrypto.KeyAlgorithm & { namedCurve?: string };
  const signingAlgorithm = alg.name === 'ECDSA' ? { name: 'ECDSA', hash: alg.namedCurve === 'P-384' ? 'SHA-384' : 'SHA-256' } : alg;
  const dnsNames = opts.dnsNames ?? [];
  const csr = await x509.Pkcs10CertificateRequestGenerator.create({
    // CN is informational for SPIFFE; keep it within the 64-character limit.
    name: [{ CN: [dnsNames[0] ?? 'spiffe workload'] }],
    keys: keys as Parameters<typeof x509.Pkcs10CertificateRequestGenerator.create>[0]['keys'],
    signingAlgorithm,
    extensions: [
      new x509.SubjectAlternativeNameExtension([
        { type: 'url', value: opts.spiffeId },
        ...dnsNames.map((value) => ({ type: 'dns' as const, value })),
      ]),
    ],
  });
  return toPem('CERTIFICATE REQUEST', csr.rawData);
}

/** Parses a CSR and checks its self-signature; returns its public key for signing. */
export async function readCsr(csrPem: string): Promise<{ publicKey: CryptoKey }> {
  const csr = new x509.Pkcs10CertificateRequest(csrPem);
  if (!(await csr.verify())) throw new Error('the CSR signature does not verify');
  const alg = csr.publicKey.algorithm as webcrypto.KeyAlgorithm & { namedCurve?: string };
  const importAlg = alg.name === 'ECDSA' ? { name: 'ECDSA', namedCurve: alg.namedCurve ?? 'P-256' } : { name: 'RSASSA-PKCS1-v1_5', hash: 'SHA-256' };
  return { publicKey: (await csr.publicKey.export(importAlg, ['verify'])) as CryptoKey };
}
