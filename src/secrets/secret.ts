/**
 * The domain model of a secret, independent of any wire format.
 * Sources produce these values; the API layer renders them into Envoy's Secret message.
 */

/** What an operator needs to know about a served certificate. Never holds key material. */
export interface CertificateInfo {
  /** Hex serial number, upper case, no separators (as Envoy's admin /certs prints it). */
  serialNumber: string;
  subject: string;
  /** URI SAN that is a SPIFFE ID, if the leaf has one. */
  spiffeId?: string;
  dnsNames: string[];
  notBefore: Date;
  notAfter: Date;
}

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
