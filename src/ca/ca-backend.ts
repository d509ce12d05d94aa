/**
 * The one interface every certificate authority backend implements (compare Istio's
 * `CSRSign` / `GetRootCertBundle` / `Close`). Key generation, validation, renewal and rollover are
 * written once above it (src/sources/ca-source.ts); adding a CA is adding a folder beside this file.
 */

export interface SignRequest {
  /** PKCS#10 CSR in PEM. The private key never leaves the server's memory. */
  csrPem: string;
  /** The identity: must end up as the leaf's URI SAN. */
  spiffeId: string;
  /** Extra DNS SANs (App Mesh matches SANs against names such as `front.apps.local`). */
  dnsNames: string[];
  /** Requested lifetime; a backend may shorten it (the validator reads the real notAfter). */
  lifetimeSeconds: number;
}

export interface SignedCertificate {
  /** Leaf first, then any intermediates, PEM. Roots are not required here. */
  chainPem: string;
}

export interface CaBackend {
  /** Short name for logs and status: `embedded`, `aws-pca`, `step-ca`, ... */
  readonly kind: string;
  /** Signs a CSR. Rejects with an Error whose message says what the CA answered. */
  sign(request: SignRequest, signal: AbortSignal): Promise<SignedCertificate>;
  /** The CA's current root certificates (PEM, one per entry); several during a CA rollover. */
  trustBundle(signal: AbortSignal): Promise<string[]>;
  close(): Promise<void>;
}
