import { createHash } from 'node:crypto';
import { ErrorCode } from '../ops/errors.js';

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

/** Contract 1: the message of the PERMISSION_DENIED that ends a stream asking for a `denied` name. */
export function describeDenied(reason: string): string {
  const message = `${ErrorCode.PermissionDenied}: ${reason}`;
  return message.length <= 1000 ? message : `${message.slice(0, 997)}...`;
}

export function describeUnknown(names: string[]): string {
  const list = names.map((n) => JSON.stringify(n)).join(', ');
  return `${ErrorCode.UnknownSecret}: secret ${list} is not configured on this server`;
}
