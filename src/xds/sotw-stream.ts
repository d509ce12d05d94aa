import { status as GrpcStatus } from '@grpc/grpc-js';
import type { SecretCatalog } from '../secrets/store.js';
import type { Logger } from '../ops/logger.js';
import { ErrorCode } from '../ops/errors.js';
import type { BundleFormat, NodeInfo, ResourceEncoder, SotwRequest, StreamHooks, StreamSink } from './types.js';
import type { NonceSource } from './nonce.js';
import type { SharedResponses } from './shared-responses.js';
import { combinedVersion, describeDenied, describeUnknown } from './versions.js';

export interface StreamContext {
  streamId: number;
  catalog: SecretCatalog;
  encoder: ResourceEncoder;
  sink: StreamSink;
  nonces: NonceSource;
  log: Logger;
  hooks: StreamHooks;
  bundleFormat: (node: NodeInfo | undefined) => BundleFormat;
  /** Responses shared by the streams of one service (encode once per push); optional. */
  responses?: SharedResponses;
}

/**
 * One state-of-the-world StreamSecrets stream, following Envoy's rules:
 * answer the first request (empty nonce) and every change of `resource_names`; treat a request
 * with the last nonce as ACK (no reply) or NACK (`error_detail`: log, do not resend); ignore a
 * stale nonce; push when a subscribed secret changes; never send zero resources or a resource
 * that was not asked for.
 */
export class SotwStream {
  private node: NodeInfo | undefined;
  private format: BundleFormat | undefined;
  /** Requested names; empty with `wildcard` = every secret this caller may see. */
  private names: string[] = [];
  private wildcard = false;
  private started = false;
  private closed = false;
  private lastNonce = '';
  /** name -> version of the last response written; pushes happen only when this would change. */
  private sent = new Map<string, string>();
  private unwatch: Array<() => void> = [];
  private writeBlocked = false;
  private flushWanted = false;

  constructor(private readonly ctx: StreamContext) {}

  onRequest(request: SotwRequest): void {
    if (this.closed) return;
    if (!this.node && request.node) {
      this.node = request.node;
      this.format = this.ctx.bundleFormat(request.node);
    }
    if (request.typeUrl !== '' && request.typeUrl !== this.ctx.encoder.typeUrl) {
      this.fail(GrpcStatus.INVALID_ARGUMENT, `${ErrorCode.WrongTypeUrl}: this service serves ${this.ctx.encoder.typeUrl}, the request asked for ${request.typeUrl}`);
      return;
    }

    if (request.responseNonce !== '') {
      if (request.responseNonce !== this.lastNonce) {
        this.ctx.log.debug('ignoring request with stale nonce', { nonce: request.responseNonce, current: this.lastNonce });
        return;
      }
      if (request.errorDetail) {
        this.onNack(request);
        return;
      }
      this.ctx.hooks.onAck?.({ streamId: this.ctx.streamId, names: this.namesForLog(), versionInfo: request.versionInfo, node: this.node });
      if (this.started && sameNames(request.resourceNames, this.names)) return;
    }

    this.subscribe(request.resourceNames);
    this.started = true;
    this.respond(true);
  }

  /** Stops watching the store; called when the transport stream ends. */
  close(): void {
    this.closed = true;
    for (const stop of this.unwatch) stop();
    this.unwatch = [];
  }

  /** The names and versions this stream last sent (for status output). */
  get sentVersions(): ReadonlyMap<string, string> {
    return this.sent;
  }

  get nodeInfo(): NodeInfo | undefined {
    return this.node;
  }

  private onNack(request: SotwRequest): void {
    const reason = request.errorDetail?.message ?? '';
    this.ctx.log.warn('Envoy rejected secret (NACK); keeping its previous version, not resending this one', {
      secrets: this.namesForLog(),
      rejectedNonce: request.responseNonce,
      keptVersion: request.versionInfo,
      reason,
      node: this.node?.id,
    });
    this.ctx.hooks.onNack?.({ streamId: this.ctx.streamId, names: this.namesForLog(), nonce: request.responseNonce, reason, node: this.node });
  }

  private subscribe(requested: string[]): void {
    for (const stop of this.unwatch) stop();
    this.unwatch = [];
    this.names = [...new Set(requested)];
    this.wildcard = this.names.length === 0;
    const onChange = (): void => this.respond(false);
    if (this.wildcard) {
      this.unwatch.push(this.ctx.catalog.watchAll(onChange));
    } else {
      for (const name of this.names) this.unwatch.push(this.ctx.catalog.watch(name, onChange));
    }
  }

  /**
   * Sends the current state of the requested names. `force` answers even when nothing changed
   * since the last response (a new stream, a reconnect, a changed name set).
   */
  private respond(force: boolean): void {
    if (this.closed || !this.started) return;
    const names = this.wildcard ? this.ctx.catalog.names() : this.names;
    // One pass, no per-name allocations: this runs for every subscribed stream on every push.
    let ready = 0;
    let changed = false;
    let unknown: string[] | undefined;
    for (const name of names) {
      const resolution = this.ctx.catalog.resolve(name);
      if (resolution.kind === 'ready') {
        ready += 1;
        if (this.sent.get(name) !== resolution.entry.version) changed = true;
      } else if (resolution.kind === 'unknown' && !this.wildcard) (unknown ??= []).push(name);
      else if (resolution.kind === 'denied' && !this.wildcard) {
        this.fail(GrpcStatus.PERMISSION_DENIED, describeDenied(resolution.reason));
        return;
      }
    }
    if (unknown) {
      this.fail(GrpcStatus.INVALID_ARGUMENT, describeUnknown(unknown));
      return;
    }
    // Zero resources would be NACKed by Envoy: wait until something is available.
    if (ready === 0) return;
    if (!force && !changed && ready === this.sent.size) return;
    this.flushWanted = true;
    this.flush();
  }

  /** Writes the latest state; under back-pressure, only the newest state is written on drain. */
  private flush(): void {
    if (!this.flushWanted || this.writeBlocked || this.closed) return;
    this.flushWanted = false;
    const format = this.format ?? this.ctx.bundleFormat(this.node);
    // The common case (Envoy asks for one secret per stream): the response every stream of this
    // secret sends in this event-loop turn, encoded once.
    if (!this.wildcard && this.names.length === 1 && this.ctx.responses) {
      const name = this.names[0]!;
      const resolution = this.ctx.catalog.resolve(name);
      if (resolution.kind !== 'ready') return;
      const shared = this.ctx.responses.get(resolution.entry, name, format);
      if (shared.nonce !== this.lastNonce) {
        // Reuse the one-entry map of the previous response to this name (no allocation per push).
        const sent = this.sent.size === 1 && this.sent.has(name) ? this.sent : new Map<string, string>();
        sent.set(name, shared.versionInfo);
        this.send(shared.bytes, shared.versionInfo, shared.nonce, sent, this.names);
        return;
      }
    }
    const names = this.wildcard ? this.ctx.catalog.names() : this.names;
    const resources: Buffer[] = [];
    const sent = new Map<string, string>();
    for (const name of names) {
      const resolution = this.ctx.catalog.resolve(name);
      if (resolution.kind !== 'ready') continue;
      resources.push(this.ctx.encoder.encodeResource(resolution.entry, name, format));
      sent.set(name, resolution.entry.version);
    }
    if (resources.length === 0) return;
    const versionInfo = combinedVersion(sent);
    const nonce = this.ctx.nonces.next();
    this.send(this.ctx.encoder.encodeSotwResponse({ versionInfo, resources, nonce }), versionInfo, nonce, sent, [...sent.keys()]);
  }

  private send(bytes: Buffer, versionInfo: string, nonce: string, sent: Map<string, string>, names: string[]): void {
    this.lastNonce = nonce;
    this.sent = sent;
    const accepted = this.ctx.sink.write(bytes);
    this.ctx.hooks.onResponse?.({ streamId: this.ctx.streamId, names, versionInfo, nonce, node: this.node });
    if (!accepted) {
      this.writeBlocked = true;
      this.ctx.sink.onDrain(() => {
        this.writeBlocked = false;
        this.flush();
      });
    }
  }

  private fail(code: number, message: string): void {
    this.ctx.log.warn('ending stream', { code, error: message, node: this.node?.id });
    this.close();
    this.ctx.sink.fail({ code, message });
  }

  private namesForLog(): string[] {
    return this.wildcard ? [...this.sent.keys()] : this.names;
  }
}

function sameNames(a: string[], b: string[]): boolean {
  // Fast path: Envoy repeats the same list in every ACK.
  if (a.length === b.length && a.every((x, i) => x === b[i])) return true;
  const setA = new Set(a);
  const setB = new Set(b);
  if (setA.size !== setB.size) return false;
  for (const x of setA) if (!setB.has(x)) return false;
  return true;
}
