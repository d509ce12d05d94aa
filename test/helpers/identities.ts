import { createRootCa, issueLeaf, type CertificateAuthority, type IssuedLeaf } from '../../src/x509/issue.js';
import { validateTlsCertificate } from '../../src/secrets/validate-tls-certificate.js';
import { validateTrustBundle } from '../../src/secrets/validate-trust-bundle.js';
import type { TlsCertificateValue, TrustBundleValue } from '../../src/secrets/secret.js';

/** Real certificates turned into validated domain values, for tests that publish straight into a store. */
export async function tlsValue(ca: CertificateAuthority, spiffeId: string): Promise<{ value: TlsCertificateValue; leaf: IssuedLeaf }> {
  const leaf = await issueLeaf(ca, { spiffeId });
  const result = validateTlsCertificate({ certificateChainPem: leaf.chainPem, privateKeyPem: leaf.keyPem, certFile: 'test.crt', keyFile: 'test.key' });
  if (!result.ok) throw new Error(result.problem.message);
  return { value: result.value, leaf };
}

export function bundleValue(trustDomain: string, ...cas: CertificateAuthority[]): TrustBundleValue {
  const result = validateTrustBundle({ files: cas.map((ca, i) => ({ file: `ca${i}.pem`, text: ca.certPem })), trustDomain });
  if (!result.ok) throw new Error(result.problem.message);
  return result.value;
}

export async function rootCa(trustDomain: string): Promise<CertificateAuthority> {
  return createRootCa({ commonName: `${trustDomain} root`, trustDomain });
}
