/**
 * The domain model of a secret, independent of any wire format.
 * Sources produce these values; the API layer renders them into Envoy's Secret message.
 */

import type { CertificateInfo } from '../x509/certificate-info.js';

export type { CertificateInfo };

export interface TlsCertificateValue {
  kind: 'tls-certificate';
  /** Leaf first, then intermediates, PEM. */
  certificateChainPem: string;
  /** PEM private key. Sensitive: never log, never put in status output. */
  privateKeyPem: string;
  leaf: CertificateInfo;
}

/** The roots of one trust domain (or of one anonymous CA set when the trust domain is unknown). */
export interface TrustDomainBundle {
  /** Trust domain name without scheme, e.g. `example.org`; undefined when not known. */
  trustDomain?: string;
  /** One PEM block per root, in file order, duplicates removed. */
  rootsPem: string[];
  roots: CertificateInfo[];
}

export interface TrustBundleValue {
  kind: 'trust-bundle';
  /** One entry for an ordinary bundle; several for the `ALL` bundle set. */
  bundles: TrustDomainBundle[];
}

export type SecretValue = TlsCertificateValue | TrustBundleValue;
