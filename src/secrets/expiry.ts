/**
 * When a served certificate counts as expiring soon, or expired. One rule for the store (which
 * stops handing an expired certificate to new streams), /status and /ready, and the log.
 *
 * The warning window is the shorter of `expiryWarningMs` (config `expiryWarning`, default 24 h)
 * and the last third of the certificate's lifetime, so a short-lived CA-issued certificate that is
 * renewed on time (at half its lifetime) never warns, and a 90-day file certificate warns a day
 * ahead.
 */
import type { CertificateInfo } from './secret.js';

export const DEFAULT_EXPIRY_WARNING_MS = 24 * 3600 * 1000;
/** Fraction of the lifetime at whose end the warning starts, when that is shorter than the setting. */
export const EXPIRY_WARNING_LIFETIME_FRACTION = 1 / 3;

export type ExpiryState = 'valid' | 'expiring' | 'expired';

/** When the expiry warning for `cert` starts (ms since epoch). */
export function expiryWarningStartsAt(cert: Pick<CertificateInfo, 'notBefore' | 'notAfter'>, expiryWarningMs: number): number {
  const lifetime = cert.notAfter.getTime() - cert.notBefore.getTime();
  return cert.notAfter.getTime() - Math.min(expiryWarningMs, Math.max(0, lifetime) * EXPIRY_WARNING_LIFETIME_FRACTION);
}

/** `expired` from notAfter on (inclusive), `expiring` inside the warning window, else `valid`. */
export function expiryState(cert: Pick<CertificateInfo, 'notBefore' | 'notAfter'>, now: Date, expiryWarningMs: number): ExpiryState {
  if (now.getTime() >= cert.notAfter.getTime()) return 'expired';
  if (now.getTime() >= expiryWarningStartsAt(cert, expiryWarningMs)) return 'expiring';
  return 'valid';
}
