import { webcrypto } from 'node:crypto';
import * as x509 from '@peculiar/x509';
import './issue.js'; // sets @peculiar/x509's crypto provider
import { ErrorCode, SdsError } from '../core/errors.js';
import { importAlgorithm, signingAlgorithm } from './key-algorithms.js';
import { toPem } from './pem.js';

type CryptoKeyPair = webcrypto.CryptoKeyPair;
type CryptoKey = webcrypto.CryptoKey;

/** A PKCS#10 request for a SPIFFE identity: URI SAN = the SPIFFE ID, plus optional DNS SANs. */
export async function createCsr(keys: CryptoKeyPair, opts: { spiffeId: string; dnsNames?: string[] }): Promise<string> {
  const dnsNames = opts.dnsNames ?? [];
  const csr = await x509.Pkcs10CertificateRequestGenerator.create({
    // CN is informational for SPIFFE; keep it within the 64-character limit.
    name: [{ CN: [dnsNames[0] ?? 'spiffe workload'] }],
    keys: keys as Parameters<typeof x509.Pkcs10CertificateRequestGenerator.create>[0]['keys'],
    signingAlgorithm: signingAlgorithm(keys.privateKey),
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
  if (!(await csr.verify())) throw new SdsError(ErrorCode.CsrInvalid, 'the CSR signature does not verify');
  return { publicKey: (await csr.publicKey.export(importAlgorithm(csr.publicKey.algorithm), ['verify'])) as CryptoKey };
}
