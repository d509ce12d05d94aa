import { status as GrpcStatus } from '@grpc/grpc-js';
import { ErrorCode } from '../ops/errors.js';
import type { BundleFormat, DeltaRequest, NodeInfo } from './types.js';
import type { StreamContext } from './sotw-stream.js';
import { describeDenied, describeUnknown } from './versions.js';

const WILDCARD = '*';

/**
 * One incremental DeltaSecrets stream. The client tells us what it subscribes to and, after a
 * reconnect, which versions it already holds (`initial_resource_versions`); we send only what it
 * lacks, and `removed_resources` when a secret it holds is no longer configured.
 */
export class DeltaStream {
  private node: NodeInfo | undefined;
  private format: BundleFormat | undefined;
  private readonly subscribed = new Set<string>();
  private wildcard = false;
  private first = true;
  private closed = false;
  private lastNonce = '';
  private systemVersion = 0;
  /** What the client holds: name -> version (from initial_resource_versions, then from what we sent). */
  private readonly clientHas = new Map<string, string>();
  /** Names the client explicitly (re)subscribed to: must be sent even if it already holds them. */
  private readonly mustSend = new Set<string>();
  private readonly unwatchers = new Map<string, () => void>();
  private writeBlocked = false;
  private flushWanted = false;

  constructor(private readonly ctx: StreamContext) {}

  onRequest(request: DeltaRequest): void {
    if (this.closed) return;
    if (!this.node && request.node) {
      this.node = request.node;
      this.format = this.ctx.bundleFormat(request.node);
    }
    if (request.typeUrl !== '' && request.typeUrl !== this.ctx.encoder.typeUrl) {
      this.fail(GrpcStatus.INVALID_ARGUMENT, `${ErrorCode.WrongTypeUrl}: this service serves ${this.ctx.encoder.typeUrl}, the request asked for ${request.typeUrl}`);
      return;
    }

    // Subscription changes are applied whatever the nonce: a Delta client may piggyback them on
    // any request, and dropping one would leave a secret unserved.
    if (request.responseNonce !== '' && request.responseNonce === this.lastNonce) {
      if (request.errorDetail) {
        const reason = request.errorDetail.message;
        this.ctx.log.warn('Envoy rejected secret (NACK); keeping its previous version, not resending this one', {
          secrets: [...this.subscribed],
          rejectedNonce: request.responseNonce,
          reason,
          node: this.node?.id,
        });
        this.ctx.hooks.onNack?.({ streamId: this.ctx.streamId, names: [...this.subscribed], nonce: request.responseNonce, reason, node: this.node });
      } else {
        this.ctx.hooks.onAck?.({ streamId: this.ctx.streamId, names: [...this.subscribed], versionInfo: String(this.systemVersion), node: this.node });
      }
    }

    const initial = this.first;
    if (this.first) {
      this.first = false;
      for (const [name, version] of Object.entries(request.initialResourceVersions)) this.clientHas.set(name, version);
      // A first request that names nothing (or `*`) is a wildcard subscription.
      if (request.subscribe.length === 0 || request.subscribe.includes(WILDCARD)) this.startWildcard();
    } else if (request.subscribe.includes(WILDCARD)) {
      this.startWildcard();
    }

    for (const name of request.unsubscribe) {
      if (name === WILDCARD) this.stopWildcard();
      this.subscribed.delete(name);
      this.clientHas.delete(name);
      this.mustSend.delete(name);
      this.unwatchers.get(name)?.();
      this.unwatchers.delete(name);
    }
    for (const name of request.subscribe) {
      if (name === WILDCARD) continue;
      if (!this.subscribed.has(name)) {
        this.subscribed.add(name);
        this.unwatchers.set(name, this.ctx.catalog.watch(name, (n) => this.onChange(n)));
      }
      // The protocol requires answering every (re)subscription, except for what the client
      // already reported holding on a reconnected stream.
      if (!initial || !this.clientHas.has(name)) this.mustSend.add(name);
    }
    this.sendPending();
  }

  close(): void {
    this.closed = true;
    this.stopWildcard();
    for (const stop of this.unwatchers.values()) stop();
    this.unwatchers.clear();
  }

  private startWildcard(): void {
    if (this.wildcard) return;
    this.wildcard = true;
    this.unwatchers.set(WILDCARD, this.ctx.catalog.watchAll((n) => this.onChange(n)));
  }

  private stopWildcard(): void {
    this.wildcard = false;
    this.unwatchers.get(WILDCARD)?.();
    this.unwatchers.delete(WILDCARD);
  }

  private onChange(name: string): void {
    if (this.subscribed.has(name) || (this.wildcard && this.ctx.catalog.names().includes(name)) || this.clientHas.has(name)) {
      this.sendPending();
    }
  }

  private tracked(): string[] {
    const names = new Set(this.subscribed);
    if (this.wildcard) for (const n of this.ctx.catalog.names()) names.add(n);
    for (const n of this.clientHas.keys()) names.add(n);
    return [...names];
  }

  /** Sends every tracked secret whose version differs from what the client holds. */
  private sendPending(): void {
    if (this.closed) return;
    for (const n of this.subscribed) {
      const resolution = this.ctx.catalog.resolve(n);
      if (resolution.kind === 'denied') {
        this.fail(GrpcStatus.PERMISSION_DENIED, describeDenied(resolution.reason));
        return;
      }
    }
    const unknown = [...this.subscribed].filter((n) => this.ctx.catalog.resolve(n).kind === 'unknown' && !this.clientHas.has(n));
    if (unknown.length > 0) {
      this.fail(GrpcStatus.INVALID_ARGUMENT, describeUnknown(unknown));
      return;
    }
    this.flushWanted = true;
    this.flush();
  }

  private flush(): void {
    if (!this.flushWanted || this.writeBlocked || this.closed) return;
    this.flushWanted = false;
    const format = this.format ?? this.ctx.bundleFormat(this.node);
    const resources: { name: string; version: string; resource: Buffer }[] = [];
    const removed: string[] = [];
    for (const name of this.tracked()) {
      const resolution = this.ctx.catalog.resolve(name);
      if (resolution.kind === 'ready') {
        const { entry } = resolution;
        if (this.clientHas.get(name) === entry.version && !this.mustSend.has(name)) continue;
        resources.push({ name, version: entry.version, resource: this.ctx.encoder.encodeResource(entry, name, format) });
      } else if (resolution.kind === 'unknown' && this.clientHas.has(name)) {
        removed.push(name);
      }
    }
    if (resources.length === 0 && removed.length === 0) return;
    for (const r of resources) {
      this.clientHas.set(r.name, r.version);
      this.mustSend.delete(r.name);
    }
    for (const name of removed) this.clientHas.delete(name);
    this.systemVersion += 1;
    const nonce = this.ctx.nonces.next();
    this.lastNonce = nonce;
    const accepted = this.ctx.sink.write(
      this.ctx.encoder.encodeDeltaResponse({ systemVersionInfo: String(this.systemVersion), resources, removed, nonce }),
    );
    this.ctx.hooks.onResponse?.({ streamId: this.ctx.streamId, names: resources.map((r) => r.name), versionInfo: String(this.systemVersion), nonce, node: this.node });
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
}
