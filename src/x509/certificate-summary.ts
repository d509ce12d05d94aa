/**
 * A certificate's public facts, as operators and `sds-server doctor` / `fetch` print them.
 * Built from the certificate alone: there is no private key anywhere in this module.
 */
import { X509Certificate } from 'node:crypto';
import { describeCertificate, parseSubjectAltName } from './certificate-info.js';
import { ENVOY_EC_CURVES, MIN_RSA_BITS } from './key-policy.js';

export interface CertificateSummary {
  /** Upper-case hex, as Envoy's admin /certs prints it. */
  serialNumber: string;
  subject: string;
  issuer: string;
  spiffeId?: string;
  /** Every URI SAN (SPIFFE ID included). */
  uris: string[];
  dnsNames: string[];
  /** ISO 8601. */
  notBefore: string;
  notAfter: string;
  /** SHA-256 of the DER, colon-separated upper-case hex (as `openssl x509 -fingerprint -sha256`). */
  fingerprintSha256: string;
  /** `RSA 2048`, `EC P-256`, `Ed25519`, ... (from the certificate's public key). */
  keyType: string;
  /** Undefined when Envoy loads this key type; else why it would refuse it. */
  keyTypeProblem?: string;
  isCa: boolean;
}

/** Summarises one certificate (PEM or DER). Throws when it is not a certificate. */
export function summarizeCertificate(cert: X509Certificate | string | Buffer): CertificateSummary {
  const x = cert instanceof X509Certificate ? cert : new X509Certificate(cert);
  const info = describeCertificate(x);
  const alt = parseSubjectAltName(x.subjectAltName ?? '');
  const { keyType, keyTypeProblem } = publicKeyType(x);
  return {
    serialNumber: info.serialNumber,
    subject: info.subject,
    issuer: x.issuer.split('\n').join(', '),
    ...(info.spiffeId ? { spiffeId: info.spiffeId } : {}),
    uris: alt.filter((n) => n.type === 'URI').map((n) => n.value),
    dnsNames: info.dnsNames,
    notBefore: info.notBefore.toISOString(),
    notAfter: info.notAfter.toISOString(),
    fingerprintSha256: x.fingerprint256,
    keyType,
    ...(keyTypeProblem ? { keyTypeProblem } : {}),
    isCa: x.ca,
  };
}

/**
 * The certificate's key type and, when Envoy refuses it, why. Rule as in
 * src/secrets/validate-tls-certificate.ts checkKeyType (Envoy `source/common/tls/context_impl.cc`).
 */
function publicKeyType(x: X509Certificate): { keyType: string; keyTypeProblem?: string } {
  const key = x.publicKey;
  const details = key.asymmetricKeyDetails ?? {};
  switch (key.asymmetricKeyType) {
    case 'rsa': {
      const bits = details.modulusLength ?? 0;
      return bits >= MIN_RSA_BITS
        ? { keyType: `RSA ${bits}` }
        : { keyType: `RSA ${bits}`, keyTypeProblem: `Envoy only loads RSA keys of ${MIN_RSA_BITS} bits or more` };
    }
    case 'ec': {
      const curve = details.namedCurve ?? 'unnamed curve';
      const name = ENVOY_EC_CURVES.get(curve);
      return name ? { keyType: `EC ${name}` } : { keyType: `EC ${curve}`, keyTypeProblem: 'Envoy only loads ECDSA keys on P-256, P-384 or P-521' };
    }
    case 'ed25519':
      return { keyType: 'Ed25519' };
    default: {
      const t = key.asymmetricKeyType ?? 'unknown';
      return { keyType: t, keyTypeProblem: `Envoy cannot load a ${t} key` };
    }
  }
}
