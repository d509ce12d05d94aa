/**
 * The one interface every certificate authority backend implements (compare Istio's
 * `CSRSign` / `GetRootCertBundle` / `Close`). Key generation, validation, renewal and rollover are
 * written once above it (src/sources/ca-source.ts); adding a CA is adding a folder beside this file.
 */
import type { KeyObject } from 'node:crypto';

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

/** A {@link SignRequest} with the public key itself instead of a CSR (a CA in this process). */
export interface PublicKeySignRequest extends Omit<SignRequest, 'csrPem'> {
  publicKey: KeyObject;
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
  /**
   * Optional, for a CA inside this process: signs a public key as it is. A CSR proves possession of
   * the private key to a CA elsewhere; in-process it would only be encoded, signed, parsed and
   * verified again, about half of the embedded CA's issuance time (BENCHMARKS.md, "Issuance").
   * Same rules and errors as `sign`.
   */
  signPublicKey?(request: PublicKeySignRequest, signal: AbortSignal): Promise<SignedCertificate>;
  /** The CA's current root certificates (PEM, one per entry); several during a CA rollover. */
  trustBundle(signal: AbortSignal): Promise<string[]>;
  close(): Promise<void>;
}
