import { status as GrpcStatus } from '@grpc/grpc-js';
import type { DeltaRequest } from './types.js';
import { StreamCore, type NonceVerdict, type StreamContext } from './stream-core.js';
import { Subscription } from './subscription.js';
import { describeDenied } from './versions.js';
import { MAX_SUBSCRIBED_NAMES } from './bounded.js';
import { ErrorCode } from '../core/errors.js';

/**
 * One incremental DeltaSecrets stream. The client tells us what it subscribes to and, after a
 * reconnect, which versions it already holds (`initial_resource_versions`); we send only what it
 * lacks, and `removed_resources` for a name it holds or asked for that is not configured.
 *
 * Rules:
 * - subscribe / unsubscribe are applied on every request, whatever its nonce (a Delta client may
 *   carry them on an ACK, a NACK or a fresh request; dropping one would leave a secret unserved);
 * - every subscribe is answered, except for a name the client reported holding at the current
 *   version on its first request;
 * - an unknown name never ends the stream: the client is told with `removed_resources` (as the xDS
 *   spec says for "resource does not exist" in the incremental variants, and as go-control-plane
 *   does); the name stays subscribed and is sent if it is configured later;
 * - a denied name ends the stream with PERMISSION_DENIED;
 * - NACKs are logged (rate-limited) and the rejected version is not resent;
 * - the first request is always answered once nothing it names is pending, with an empty response
 *   when the client already holds every current version (Envoy's reconnect back-off resets only
 *   when a message arrives).
 */
export class DeltaStream extends StreamCore<DeltaRequest> {
  private readonly subscription = new Subscription();
  private first = true;
  private systemVersion = 0;
  /** What the client holds: name -> version (from initial_resource_versions, then from what we sent). */
  private readonly clientHas = new Map<string, string>();
  /** Names the client (re)subscribed to and has not been answered for yet. */
  private readonly mustAnswer = new Set<string>();
  /** Nothing written yet on this stream: the first request gets an answer even when the client lacks nothing. */
  private answeredOnce = false;

  constructor(ctx: StreamContext) {
    super(ctx);
  }

  protected handle(request: DeltaRequest, verdict: NonceVerdict): void {
    if (verdict === 'nack') this.noteNack(request, [...this.clientHas.keys()]);
    else if (verdict === 'ack') this.ctx.hooks.onAck?.({ streamId: this.ctx.streamId, names: [...this.clientHas.keys()], versionInfo: String(this.systemVersion), node: this.node });
    else if (verdict === 'stale') this.logStale(request);

    if (this.rejectOverlongNames(request.subscribe)) return;
    const initial = this.first;
    this.first = false;
    const change = this.subscription.updateDelta(request.subscribe, request.unsubscribe);
    if (this.subscription.names.length > MAX_SUBSCRIBED_NAMES) {
      this.fail(GrpcStatus.RESOURCE_EXHAUSTED, `${ErrorCode.BadRequest}: a stream may subscribe at most ${MAX_SUBSCRIBED_NAMES} names; this one asked for ${this.subscription.names.length}`);
      return;
    }
    if (initial) {
      // Only what the stream subscribes to: a held version of anything else means nothing here.
      for (const [name, version] of Object.entries(request.initialResourceVersions)) {
        if (this.interestedIn(name)) this.clientHas.set(name, version);
      }
    }
    if (change) {
      for (const name of change.added) this.watch(name);
      for (const name of change.removed) {
        this.unwatch(name);
        this.mustAnswer.delete(name);
        // Still covered by a wildcard: answer again (the current version, or removed).
        if (this.subscription.wildcard) this.mustAnswer.add(name);
        else this.clientHas.delete(name);
      }
      if (change.wildcardChanged) {
        if (this.subscription.wildcard) this.watchAll();
        else {
          this.unwatch('*');
          for (const name of [...this.clientHas.keys()]) if (!this.subscription.has(name)) this.clientHas.delete(name);
        }
      }
    }
    for (const name of request.subscribe) {
      if (name === '*') continue;
      // The protocol answers every (re)subscription, except what the client reported holding on
      // its first request (sent again only if the version differs).
      if (!initial || !this.clientHas.has(name)) this.mustAnswer.add(name);
    }
    this.requestFlush();
  }

  protected storeChanged(name: string): void {
    if (this.subscription.wildcard || this.subscription.has(name) || this.clientHas.has(name)) this.requestFlush();
  }

  private interestedIn(name: string): boolean {
    return this.subscription.has(name) || this.subscription.wildcard;
  }

  /** Every name this stream tracks: explicit names, the catalog's under a wildcard, and what the client holds. */
  private tracked(): Set<string> {
    const names = new Set(this.subscription.names);
    if (this.subscription.wildcard) for (const n of this.ctx.catalog.names()) names.add(n);
    for (const n of this.clientHas.keys()) names.add(n);
    return names;
  }

  /** Sends every tracked secret whose version differs from what the client holds, and removals. */
  protected writeNewest(): void {
    const format = this.format ?? this.ctx.bundleFormat(this.node);
    const resources: { name: string; version: string; resource: Buffer }[] = [];
    const removed: string[] = [];
    let pending = false;
    for (const name of this.tracked()) {
      const resolution = this.ctx.catalog.resolve(name);
      switch (resolution.kind) {
        case 'ready': {
          const { entry } = resolution;
          if (this.clientHas.get(name) === entry.version && !this.mustAnswer.has(name)) continue;
          resources.push({ name, version: entry.version, resource: this.ctx.encoder.encodeResource(entry, name, format) });
          break;
        }
        case 'denied':
          if (this.subscription.has(name)) {
            this.fail(GrpcStatus.PERMISSION_DENIED, describeDenied(resolution.reason));
            return;
          }
          // A name only a wildcard brought in: gone, as far as this caller is concerned.
          if (this.clientHas.has(name) || this.mustAnswer.has(name)) removed.push(name);
          break;
        case 'unknown':
          if (this.clientHas.has(name) || this.mustAnswer.has(name)) removed.push(name);
          break;
        case 'pending':
          pending = true; // answered once it is published
          break;
      }
    }
    // A reconnect where the client already holds every current version: answer anyway, with an
    // empty response. Envoy resets its reconnect back-off (and its "stream closed since" timer)
    // only when a message arrives on the new stream; without one, every server restart made the
    // next reconnect of an up-to-date Delta stream wait longer (issue 9). Not sent while a
    // subscribed secret is still pending: its arrival is the answer.
    if (resources.length === 0 && removed.length === 0 && (this.answeredOnce || pending)) return;
    this.answeredOnce = true;
    for (const r of resources) {
      this.clientHas.set(r.name, r.version);
      this.mustAnswer.delete(r.name);
    }
    for (const name of removed) {
      this.clientHas.delete(name);
      this.mustAnswer.delete(name);
    }
    this.systemVersion += 1;
    const nonce = this.ctx.nonces.next();
    const systemVersionInfo = String(this.systemVersion);
    this.write(this.ctx.encoder.encodeDeltaResponse({ systemVersionInfo, resources, removed, nonce }), nonce);
    this.ctx.hooks.onResponse?.({ streamId: this.ctx.streamId, names: resources.map((r) => r.name), versionInfo: systemVersionInfo, nonce, node: this.node });
  }
}
