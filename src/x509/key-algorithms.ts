/**
 * WebCrypto algorithm parameters chosen from a key: one place for the rule, used when signing
 * certificates and CSRs and when importing a certificate's or a CSR's public key.
 */
import type { webcrypto } from 'node:crypto';

type KeyAlgorithm = webcrypto.KeyAlgorithm & { namedCurve?: string };

/**
 * The signature algorithm for what `key` signs: ECDSA with SHA-384 on P-384 and SHA-256 on the
 * other curves (hash strength matched to the curve, RFC 5480 section 4); an RSA key's own algorithm,
 * which carries its hash.
 */
export function signingAlgorithm(key: webcrypto.CryptoKey): webcrypto.EcdsaParams | webcrypto.Algorithm {
  const alg = key.algorithm as KeyAlgorithm;
  if (alg.name === 'ECDSA') return { name: 'ECDSA', hash: alg.namedCurve === 'P-384' ? 'SHA-384' : 'SHA-256' };
  return alg;
}

/**
 * The import parameters for a public key of algorithm `alg` (a certificate's or a CSR's, as
 * @peculiar/x509 reports it): ECDSA on its curve (P-256 when none is named), otherwise
 * RSASSA-PKCS1-v1_5 with SHA-256, the only other kind our CAs issue for.
 */
export function importAlgorithm(alg: webcrypto.KeyAlgorithm): webcrypto.EcKeyImportParams | webcrypto.RsaHashedImportParams {
  const a = alg as KeyAlgorithm;
  return a.name === 'ECDSA' ? { name: 'ECDSA', namedCurve: a.namedCurve ?? 'P-256' } : { name: 'RSASSA-PKCS1-v1_5', hash: 'SHA-256' };
}
