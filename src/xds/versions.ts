import { createHash } from 'node:crypto';
import { ErrorCode } from '../core/errors.js';
import { boundText, describeNames, MAX_RESOURCE_NAME, quoteName } from './bounded.js';

/**
 * version_info of a response: the resource's own content version when there is one resource
 * (what Envoy always asks for), else a hash over the name/version pairs. Content-derived, so a
 * changed secret or a changed name set always yields a new version_info.
 */
export function combinedVersion(sent: ReadonlyMap<string, string>): string {
  if (sent.size === 1) {
    const [only] = sent.values();
    return only ?? '';
  }
  const hash = createHash('sha256');
  for (const [name, version] of [...sent].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) {
    hash.update(name).update('\0').update(version).update('\0');
  }
  return hash.digest('hex').slice(0, 16);
}

/**
 * `SDS_ERR_UNKNOWN_SECRET: secret "a", "b", "c" and 9997 more (10000 names) is not configured on
 * this server`. Bounded: at most a few names, each cut to 100 characters, then the count, so the
 * status always fits in a `grpc-message` header.
 */
export function describeUnknown(names: readonly string[]): string {
  const noun = names.length === 1 ? 'secret' : 'secrets';
  const verb = names.length === 1 ? 'is' : 'are';
  return `${ErrorCode.UnknownSecret}: ${noun} ${describeNames(names)} ${verb} not configured on this server`;
}

/** `SDS_ERR_PERMISSION_DENIED: <reason>` with the reason bounded (contract 1 of the brief). */
export function describeDenied(reason: string): string {
  return `${ErrorCode.PermissionDenied}: ${boundText(reason)}`;
}

/** `SDS_ERR_WRONG_TYPE_URL: ...` with the client's type URL bounded. */
export function describeWrongTypeUrl(served: string, asked: string): string {
  return `${ErrorCode.WrongTypeUrl}: this service serves ${served}, the request asked for ${boundText(asked, 200)}`;
}

/** `SDS_ERR_BAD_REQUEST: resource name of N characters is longer than 2048: "spiffe://...(N more chars)"`. */
export function describeOverlongName(name: string): string {
  return `${ErrorCode.BadRequest}: resource name of ${name.length} characters is longer than ${MAX_RESOURCE_NAME} (the SPIFFE ID limit): ${quoteName(name)}`;
}
