import type { Resolution } from '../secrets/store.js';
import type { SotwRequest } from './types.js';
import { StreamCore, type NonceVerdict, type StreamContext } from './stream-core.js';
import { Subscription } from './subscription.js';
import { combinedVersion } from './versions.js';

export type { StreamContext } from './stream-core.js';

const EMPTY_SENT: ReadonlyMap<string, string> = new Map();

/**
 * One state-of-the-world StreamSecrets stream, following Envoy's rules:
 * - the first request is answered whatever nonce it carries (nothing sent yet = nothing stale);
 * - a request with the last nonce is an ACK (no reply) or a NACK (`error_detail`: logged,
 *   rate-limited, not resent); either one's `resource_names` is applied, and a changed set is
 *   answered with exactly the new set;
 * - a stale nonce is ignored, names included;
 * - wildcard only as `Subscription` allows it; an empty list after named requests holds nothing:
 *   no response, no push, the stream stays open;
 * - a subscribed secret that changes is pushed; never zero resources, never a resource that was
 *   not asked for; an explicitly requested unknown name ends the stream (INVALID_ARGUMENT), a
 *   denied one too (PERMISSION_DENIED).
 */
export class SotwStream extends StreamCore<SotwRequest> {
  private readonly subscription = new Subscription();
  private started = false;
  /** name -> version of the last response written; pushes happen only when this would change. */
  private sent: ReadonlyMap<string, string> = EMPTY_SENT;

  constructor(ctx: StreamContext) {
    super(ctx);
  }

  /** The names and versions this stream last sent (for status output). */
  get sentVersions(): ReadonlyMap<string, string> {
    return this.sent;
  }

  protected handle(request: SotwRequest, verdict: NonceVerdict): void {
    if (verdict === 'stale') {
      this.logStale(request);
      return;
    }
    if (verdict === 'nack') this.noteNack(request, this.namesForLog(), { keptVersion: request.versionInfo });
    else if (verdict === 'ack') this.ctx.hooks.onAck?.({ streamId: this.ctx.streamId, names: this.namesForLog(), versionInfo: request.versionInfo, node: this.node });

    if (this.rejectOverlongNames(request.resourceNames)) return;
    const change = this.subscription.setSotw(request.resourceNames);
    if (change) {
      for (const name of change.removed) this.unwatch(name);
      for (const name of change.added) this.watch(name);
      if (change.wildcardChanged) {
        if (this.subscription.wildcard) this.watchAll();
        else this.unwatch('*');
      }
      // What the client holds is now whatever it holds of the new set; the answer is forced anyway.
      if (this.subscription.isEmpty) this.sent = EMPTY_SENT;
    }
    if (!this.started || change || verdict === 'request') {
      this.started = true;
      this.respond(true);
    }
  }

  protected storeChanged(): void {
    this.respond(false);
  }

  /**
   * Sends the current state of the subscribed names. `force` answers even when nothing changed
   * since the last response (a new stream, a reconnect, a changed name set).
   */
  private respond(force: boolean): void {
    if (this.closed || !this.started || this.subscription.isEmpty) return;
    const sub = this.subscription;
    const names = sub.wildcard ? this.wildcardNames() : sub.names;
    // One pass, no per-name allocations: this runs for every subscribed stream on every push.
    let ready = 0;
    let changed = false;
    let unknown: string[] | undefined;
    let denied: Extract<Resolution, { kind: 'denied' }> | undefined;
    for (const name of names) {
      const resolution = this.ctx.catalog.resolve(name);
      if (resolution.kind === 'ready') {
        ready += 1;
        if (this.sent.get(name) !== resolution.entry.version) changed = true;
      } else if (resolution.kind === 'unknown' || resolution.kind === 'denied') {
        // Names a wildcard brings in are the catalog's own: only explicit ones can be refused.
        if (sub.wildcard && !sub.has(name)) continue;
        if (resolution.kind === 'denied') denied ??= resolution;
        else (unknown ??= []).push(name);
      }
    }
    const problem = this.problemOf(denied, unknown);
    if (problem) {
      this.fail(problem.code, problem.message);
      return;
    }
    // Zero resources would be NACKed by Envoy: wait until something is available.
    if (ready === 0) return;
    if (!force && !changed && ready === this.sent.size) return;
    this.requestFlush();
  }

  /** Writes the latest state; under back-pressure only the newest state is written on drain. */
  protected writeNewest(): void {
    if (this.subscription.isEmpty) return;
    const format = this.format ?? this.ctx.bundleFormat(this.node);
    const sub = this.subscription;
    // The common case (Envoy asks for one secret per stream): the response every stream of this
    // secret sends in this event-loop turn, encoded once.
    if (!sub.wildcard && sub.names.length === 1 && this.ctx.responses) {
      const name = sub.names[0]!;
      const resolution = this.ctx.catalog.resolve(name);
      if (resolution.kind !== 'ready') return;
      const shared = this.ctx.responses.get(resolution.entry, name, format);
      if (shared.nonce !== this.lastNonce) {
        // Reuse the one-entry map of the previous response to this name (no allocation per push).
        const sent = this.sent.size === 1 && this.sent.has(name) && this.sent !== EMPTY_SENT ? (this.sent as Map<string, string>) : new Map<string, string>();
        sent.set(name, shared.versionInfo);
        this.send(shared.bytes, shared.versionInfo, shared.nonce, sent, sub.names);
        return;
      }
    }
    const names = sub.wildcard ? this.wildcardNames() : sub.names;
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

  private send(bytes: Buffer, versionInfo: string, nonce: string, sent: ReadonlyMap<string, string>, names: readonly string[]): void {
    this.sent = sent;
    this.write(bytes, nonce);
    this.ctx.hooks.onResponse?.({ streamId: this.ctx.streamId, names, versionInfo, nonce, node: this.node });
  }

  /** Every name a wildcard stream gets: the catalog's names, plus explicit names (aliases) next to `*`. */
  private wildcardNames(): readonly string[] {
    const all = this.ctx.catalog.names();
    const explicit = this.subscription.names;
    if (explicit.length === 0) return all;
    return [...new Set([...all, ...explicit])];
  }

  private namesForLog(): readonly string[] {
    return this.subscription.wildcard ? [...this.sent.keys()] : this.subscription.names;
  }
}
