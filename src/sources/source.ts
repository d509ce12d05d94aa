import type { Problem } from '../core/errors.js';
import type { SecretKind } from '../secrets/store.js';

/** What every source reports per secret, for logs, /status and /ready. Never holds key material. */
export interface SecretSourceStatus {
  name: string;
  kind: SecretKind;
  /** Where it comes from: file paths, or a description such as "embedded CA". */
  files: string[];
  state: 'pending' | 'ok' | 'error';
  version?: string;
  lastError?: Problem;
  lastChangeAt?: Date;
  warnings: Problem[];
  /** CA-issued secrets: when the next renewal (or retry) is due. */
  nextRenewalAt?: Date;
}

/** A source of secrets: it declares and publishes into the store, and reports per-secret status. */
export interface SecretSource {
  /** Makes the first attempt at every secret; resolves after it, whatever the outcome. */
  start(): Promise<void>;
  close(): Promise<void>;
  status(): SecretSourceStatus[];
  /** Re-reads everything now (SIGHUP). */
  reloadAll?(): Promise<void>;
}
