import { status as GrpcStatus } from '@grpc/grpc-js';
import type { SecretCatalog, SecretEntry } from '../secrets/store.js';
import { ErrorCode } from '../core/errors.js';
import type { BundleFormat, ResourceEncoder, SotwRequest, StreamFailure } from './types.js';
import type { NonceSource } from './nonce.js';
import { combinedVersion, describeDenied, describeOverlongName, describeUnknown, describeWrongTypeUrl } from './versions.js';
import { describeNames, firstOverlongName } from './bounded.js';
import { Subscription } from './subscription.js';

export type FetchResult = { ok: true; response: Buffer; names: string[] } | { ok: false; failure: StreamFailure };

/**
 * Unary FetchSecrets: the current state of the requested names (all secrets when none are named).
 * Nothing to wait on here, so a configured-but-not-ready secret is UNAVAILABLE (retry later); an
 * unknown name is INVALID_ARGUMENT, a denied one PERMISSION_DENIED (checked first). Messages name
 * at most a few names, each bounded (see bounded.ts).
 */
export function fetchSecrets(
  request: SotwRequest,
  deps: { catalog: SecretCatalog; encoder: ResourceEncoder; nonces: NonceSource; format: BundleFormat },
): FetchResult {
  if (request.typeUrl !== '' && request.typeUrl !== deps.encoder.typeUrl) {
    return fail(GrpcStatus.INVALID_ARGUMENT, describeWrongTypeUrl(deps.encoder.typeUrl, request.typeUrl));
  }
  const overlong = firstOverlongName(request.resourceNames);
  if (overlong !== undefined) return fail(GrpcStatus.INVALID_ARGUMENT, describeOverlongName(overlong));
  // The same rules as a stream's first request: no names or `*` = every secret the caller may see.
  const subscription = new Subscription();
  subscription.setSotw(request.resourceNames);
  const wildcard = subscription.wildcard;
  const names = wildcard ? [...new Set([...deps.catalog.names(), ...subscription.names])] : subscription.names;
  const ready: Array<{ name: string; entry: SecretEntry }> = [];
  const unknown: string[] = [];
  const pending: string[] = [];
  let deniedReason: string | undefined;
  for (const name of names) {
    const r = deps.catalog.resolve(name);
    if (r.kind === 'ready') ready.push({ name, entry: r.entry });
    else if (wildcard && !subscription.has(name)) continue; // a wildcard only brings in what the caller may see
    else if (r.kind === 'unknown') unknown.push(name);
    else if (r.kind === 'denied') deniedReason ??= r.reason;
    else pending.push(name);
  }
  if (deniedReason !== undefined) return fail(GrpcStatus.PERMISSION_DENIED, describeDenied(deniedReason));
  if (unknown.length > 0) return fail(GrpcStatus.INVALID_ARGUMENT, describeUnknown(unknown));
  if (pending.length > 0) {
    return fail(GrpcStatus.UNAVAILABLE, `${ErrorCode.SecretNotReady}: secret ${describeNames(pending)} is configured but not available yet`);
  }
  if (ready.length === 0) return fail(GrpcStatus.UNAVAILABLE, `${ErrorCode.SecretNotReady}: no secret is available yet`);
  const versions = new Map(ready.map(({ name, entry }) => [name, entry.version]));
  const response = deps.encoder.encodeSotwResponse({
    versionInfo: combinedVersion(versions),
    resources: ready.map(({ name, entry }) => deps.encoder.encodeResource(entry, name, deps.format)),
    nonce: deps.nonces.next(),
  });
  return { ok: true, response, names: [...versions.keys()] };
}

function fail(code: number, message: string): FetchResult {
  return { ok: false, failure: { code, message } };
}
