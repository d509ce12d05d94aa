import { status as GrpcStatus } from '@grpc/grpc-js';
import type { Resolution, SecretCatalog } from '../secrets/store.js';
import type { Logger } from '../core/logger.js';
import type { NonceSource } from './nonce.js';
import type { SharedResponses } from './shared-responses.js';
import type { BundleFormat, ErrorDetail, NodeInfo, ResourceEncoder, StreamHooks, StreamSink } from './types.js';
import { boundText, firstOverlongName, namesForLog } from './bounded.js';
import { describeDenied, describeOverlongName, describeUnknown, describeWrongTypeUrl } from './versions.js';

/** Everything one stream state machine is given by the transport. */
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
  /** Milliseconds clock for the NACK log rate limit; default `Date.now`. */
  now?: () => number;
  /** Minimum time between two NACK log lines of one stream, ms; default NACK_LOG_INTERVAL_MS. */
  nackLogIntervalMs?: number;
}

/** Default minimum time between two NACK log lines on one stream (the first NACK is always logged). */
export const NACK_LOG_INTERVAL_MS = 30_000;

/**
 * How a request relates to what this stream has sent:
 * - `request`: nothing has been sent on this stream yet, or the request carries no nonce. Answered
 *   whatever nonce it carries: until the server has sent something no nonce can be stale (a client
 *   that reconnects may repeat the last nonce of its previous stream; SPIRE issue 813).
 * - `ack` / `nack`: the nonce of the last response, without / with `error_detail`.
 * - `stale`: the nonce of an earlier response on this stream.
 */
export type NonceVerdict = 'request' | 'ack' | 'nack' | 'stale';

interface XdsRequestCommon {
  node?: NodeInfo;
  typeUrl: string;
  responseNonce: string;
  errorDetail?: ErrorDetail;
}

/** Outcome of checking one explicitly subscribed name for a stream-ending problem. */
export type NameProblem = { code: number; message: string } | undefined;

/**
 * The transport plumbing shared by the SotW and Delta state machines: node capture (kept from the
 * first message, for `set_node_on_first_message_only`), the type-URL check, nonce classification,
 * ending a stream with a status, store watches, writing with back-pressure (under back-pressure
 * only the newest state is written on drain), and NACK logging rate-limited per stream.
 *
 * Subclasses implement `handle` (one accepted request) and `writeNewest` (build and write the
 * current state, called when the transport can take it).
 */
export abstract class StreamCore<Req extends XdsRequestCommon> {
  protected node: NodeInfo | undefined;
  protected format: BundleFormat | undefined;
  protected closed = false;
  /** Nonce of the last response written; '' until the first one. */
  protected lastNonce = '';
  private writeBlocked = false;
  private flushWanted = false;
  private nackLoggedAt: number | undefined;
  private nacksSuppressed = 0;
  /** Store watches by name (`*` = the wildcard watch). */
  private readonly watches = new Map<string, () => void>();
  /** One listener per stream, shared by all its watches. */
  private readonly listener = (name: string): void => this.storeChanged(name);

  constructor(protected readonly ctx: StreamContext) {}

  /** Entry point for every decoded request of the stream. */
  onRequest(request: Req): void {
    if (this.closed) return;
    if (!this.node && request.node) {
      this.node = request.node;
      this.format = this.ctx.bundleFormat(request.node);
    }
    if (request.typeUrl !== '' && request.typeUrl !== this.ctx.encoder.typeUrl) {
      this.fail(GrpcStatus.INVALID_ARGUMENT, describeWrongTypeUrl(this.ctx.encoder.typeUrl, request.typeUrl));
      return;
    }
    this.handle(request, this.verdict(request));
  }

  /** Stops watching the store; called when the transport stream ends. Idempotent. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const stop of this.watches.values()) stop();
    this.watches.clear();
    if (this.nacksSuppressed > 0) {
      this.ctx.log.warn('stream ended with NACKs not logged (rate limit)', { suppressed: this.nacksSuppressed, node: this.nodeIdForLog() });
      this.nacksSuppressed = 0;
    }
  }

  get nodeInfo(): NodeInfo | undefined {
    return this.node;
  }

  protected abstract handle(request: Req, verdict: NonceVerdict): void;

  /** Writes the current state (via `write`), or nothing when there is nothing to send. */
  protected abstract writeNewest(): void;

  /** A watched name's resolution may have changed. */
  protected abstract storeChanged(name: string): void;

  private verdict(request: Req): NonceVerdict {
    if (this.lastNonce === '' || request.responseNonce === '') return 'request';
    if (request.responseNonce !== this.lastNonce) return 'stale';
    return request.errorDetail ? 'nack' : 'ack';
  }

  /**
   * Ends the stream with INVALID_ARGUMENT when a requested name is longer than any name this server
   * can hold (MAX_RESOURCE_NAME). Returns true when it did.
   */
  protected rejectOverlongNames(names: readonly string[]): boolean {
    const overlong = firstOverlongName(names);
    if (overlong === undefined) return false;
    this.fail(GrpcStatus.INVALID_ARGUMENT, describeOverlongName(overlong));
    return true;
  }

  protected logStale(request: Req): void {
    this.ctx.log.debug('ignoring request with stale nonce', { nonce: boundText(request.responseNonce, 64), current: this.lastNonce });
  }

  /**
   * Records a NACK: the hook on every one; a log line for the first, then at most one per
   * `nackLogIntervalMs` carrying the count of NACKs not logged since (`suppressed`).
   */
  protected noteNack(request: Req, names: readonly string[], extra: Record<string, unknown> = {}): void {
    const reason = boundText(request.errorDetail?.message ?? '');
    this.ctx.hooks.onNack?.({ streamId: this.ctx.streamId, names, nonce: boundText(request.responseNonce, 64), reason, node: this.node });
    const now = (this.ctx.now ?? Date.now)();
    const interval = this.ctx.nackLogIntervalMs ?? NACK_LOG_INTERVAL_MS;
    if (this.nackLoggedAt !== undefined && now - this.nackLoggedAt < interval) {
      this.nacksSuppressed += 1;
      return;
    }
    const suppressed = this.nacksSuppressed;
    this.nacksSuppressed = 0;
    this.nackLoggedAt = now;
    this.ctx.log.warn('Envoy rejected secret (NACK); keeping its previous version, not resending this one', {
      secrets: namesForLog(names),
      rejectedNonce: boundText(request.responseNonce, 64),
      ...extra,
      reason,
      node: this.nodeIdForLog(),
      ...(suppressed > 0 ? { suppressed } : {}),
    });
  }

  /** Asks for the newest state to be written now, or when the transport drains. */
  protected requestFlush(): void {
    this.flushWanted = true;
    this.flush();
  }

  private flush(): void {
    if (!this.flushWanted || this.writeBlocked || this.closed) return;
    this.flushWanted = false;
    this.writeNewest();
  }

  /** Writes one encoded response carrying `nonce`; handles back-pressure. */
  protected write(bytes: Buffer, nonce: string): void {
    this.lastNonce = nonce;
    if (!this.ctx.sink.write(bytes)) {
      this.writeBlocked = true;
      this.ctx.sink.onDrain(() => {
        this.writeBlocked = false;
        this.flush();
      });
    }
  }

  /** Ends the stream with a gRPC status (message already bounded) and stops watching. */
  protected fail(code: number, message: string): void {
    if (this.closed) return;
    this.ctx.log.warn('ending stream', { code, error: message, node: this.nodeIdForLog() });
    this.close();
    this.ctx.sink.fail({ code, message });
  }

  /**
   * The stream-ending problem among explicitly subscribed names, if any: a denied name ends it
   * with PERMISSION_DENIED (checked first), unknown names with INVALID_ARGUMENT naming a few.
   */
  protected problemOf(denied: Extract<Resolution, { kind: 'denied' }> | undefined, unknown: readonly string[] | undefined): NameProblem {
    if (denied) return { code: GrpcStatus.PERMISSION_DENIED, message: describeDenied(denied.reason) };
    if (unknown && unknown.length > 0) return { code: GrpcStatus.INVALID_ARGUMENT, message: describeUnknown(unknown) };
    return undefined;
  }

  protected watch(name: string): void {
    if (this.watches.has(name)) return;
    this.watches.set(name, this.ctx.catalog.watch(name, this.listener));
  }

  protected watchAll(): void {
    if (this.watches.has('*')) return;
    this.watches.set('*', this.ctx.catalog.watchAll(this.listener));
  }

  protected unwatch(name: string): void {
    const stop = this.watches.get(name);
    if (!stop) return;
    stop();
    this.watches.delete(name);
  }

  protected nodeIdForLog(): string | undefined {
    const id = this.node?.id;
    return id === undefined ? undefined : boundText(id, 200);
  }
}
