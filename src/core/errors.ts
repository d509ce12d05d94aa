/**
 * Stable error codes for everything an operator can see in logs, status and gRPC errors.
 * Each code is documented in docs/errors.md; never rename one, only add.
 */
export const ErrorCode = {
  // Secret material read from files.
  FileMissing: 'SDS_ERR_FILE_MISSING',
  FileUnreadable: 'SDS_ERR_FILE_UNREADABLE',
  NotAFile: 'SDS_ERR_NOT_A_FILE',
  FileEmpty: 'SDS_ERR_FILE_EMPTY',
  FileTooLarge: 'SDS_ERR_FILE_TOO_LARGE',
  PemInvalid: 'SDS_ERR_PEM_INVALID',
  KeyInvalid: 'SDS_ERR_KEY_INVALID',
  KeyEncrypted: 'SDS_ERR_KEY_ENCRYPTED',
  KeyUnsupported: 'SDS_ERR_KEY_UNSUPPORTED',
  KeyMismatch: 'SDS_ERR_KEY_MISMATCH',
  ChainOrder: 'SDS_ERR_CHAIN_ORDER',
  CertExpired: 'SDS_ERR_CERT_EXPIRED',
  CertNotYetValid: 'SDS_ERR_CERT_NOT_YET_VALID',
  CertExpiringSoon: 'SDS_ERR_CERT_EXPIRING_SOON',
  LeafNotInBundle: 'SDS_ERR_LEAF_NOT_IN_BUNDLE',
  SpiffeIdMismatch: 'SDS_ERR_SPIFFE_ID_MISMATCH',
  BundleEmpty: 'SDS_ERR_BUNDLE_EMPTY',
  // Certificate authorities.
  CaUnavailable: 'SDS_ERR_CA_UNAVAILABLE',
  CaDataDir: 'SDS_ERR_CA_DATA_DIR',
  ChainUntrusted: 'SDS_ERR_CHAIN_UNTRUSTED',
  SanMissing: 'SDS_ERR_SAN_MISSING',
  // Configuration and command line.
  ConfigInvalid: 'SDS_ERR_CONFIG_INVALID',
  /** A config reload changed settings that only take effect at restart (a warning). */
  ConfigNeedsRestart: 'SDS_ERR_CONFIG_NEEDS_RESTART',
  // Socket.
  SocketInUse: 'SDS_ERR_SOCKET_IN_USE',
  SocketPathNotSocket: 'SDS_ERR_SOCKET_PATH_NOT_SOCKET',
  SocketSetup: 'SDS_ERR_SOCKET_SETUP',
  SocketPathTooLong: 'SDS_ERR_SOCKET_PATH_TOO_LONG',
  SocketPathUnsupported: 'SDS_ERR_SOCKET_PATH_UNSUPPORTED',
  SocketDirUnsafe: 'SDS_ERR_SOCKET_DIR_UNSAFE',
  // Protocol, as seen by clients.
  UnknownSecret: 'SDS_ERR_UNKNOWN_SECRET',
  SecretNotReady: 'SDS_ERR_SECRET_NOT_READY',
  WrongTypeUrl: 'SDS_ERR_WRONG_TYPE_URL',
  BadRequest: 'SDS_ERR_BAD_REQUEST',
  PermissionDenied: 'SDS_ERR_PERMISSION_DENIED',
  // Caller attestation (who is on the other end of a socket connection).
  PeerCredentials: 'SDS_ERR_PEER_CREDENTIALS',
  CallerGone: 'SDS_ERR_CALLER_GONE',
  PidReused: 'SDS_ERR_PID_REUSED',
  AttestationFailed: 'SDS_ERR_ATTESTATION_FAILED',
  KubeletUnavailable: 'SDS_ERR_KUBELET_UNAVAILABLE',
  // Added for one error type everywhere (issue 13).
  CsrInvalid: 'SDS_ERR_CSR_INVALID',
  AdminUnreachable: 'SDS_ERR_ADMIN_UNREACHABLE',
  FetchFailed: 'SDS_ERR_FETCH_FAILED',
  Internal: 'SDS_ERR_INTERNAL',
  AdminListen: 'SDS_ERR_ADMIN_LISTEN',
} as const;

export type ErrorCode = (typeof ErrorCode)[keyof typeof ErrorCode];

/** A problem described for an operator: a stable code, a message naming the file/secret/field. */
export interface Problem {
  code: ErrorCode;
  message: string;
}

/**
 * The one error type thrown in src/: a stable code (docs/errors.md) and a message naming the
 * file, secret, field or address concerned. `cause` keeps the underlying error for debugging; the
 * message never quotes secret material. Validation returns the same thing as data (`Result`).
 */
export class SdsError extends Error {
  readonly code: ErrorCode;
  constructor(code: ErrorCode, message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = 'SdsError';
    this.code = code;
  }
  toProblem(): Problem {
    return { code: this.code, message: this.message };
  }
}

/** `err`'s code when it is an SdsError, else `fallback`: how a catch site names what it caught. */
export function errorCode(err: unknown, fallback: ErrorCode): ErrorCode {
  return err instanceof SdsError ? err.code : fallback;
}

/** `CODE: message` for an SdsError, the message (or string form) of anything else: for stderr. */
export function describeError(err: unknown): string {
  return err instanceof SdsError ? `${err.code}: ${err.message}` : errorMessage(err);
}

/** `err`'s message (or its string form when it is not an Error). */
export function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

export type Result<T> = { ok: true; value: T; warnings: Problem[] } | { ok: false; problem: Problem };

export const ok = <T>(value: T, warnings: Problem[] = []): Result<T> => ({ ok: true, value, warnings });
export const fail = <T = never>(code: ErrorCode, message: string): Result<T> => ({
  ok: false,
  problem: { code, message },
});
