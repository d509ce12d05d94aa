import type { Logger } from '../core/logger.js';
import type { NodeInfo, StreamHooks } from '../xds/types.js';
import type { ClosedStream, OpenStream, StreamRecord, StreamRegistry } from '../server/sds-service.js';
import { boundText } from '../xds/bounded.js';

/** What one stream's client was sent, ACKed and NACKed (admin `/clients`). Names and versions only. */
export interface StreamProtocolState {
  versionSent?: string;
  /** Epoch ms (a number: this runs on every write of a push; formatted only when reported). */
  sentAtMs?: number;
  versionAcked?: string;
  ackedAtMs?: number;
  nacks: number;
  lastNack?: { at: string; reason: string; nonce: string };
}

/** The peer of a stream, where attestation knows it (pid/uid/gid of the connecting process). */
export interface PeerInfo {
  pid?: number;
  uid?: number;
  gid?: number;
}

/** One stream in `/clients`: who holds what. No key material: names, versions, reasons (bounded). */
export interface ClientEntry {
  stream: number;
  peer?: PeerInfo;
  node?: { id: string; cluster: string; userAgent: string; envoyVersion: string };
  api: string;
  kind: 'sotw' | 'delta';
  /** Every name the client asked for (SotW resource_names, Delta subscribe): `record.named`. */
  names: string[];
  sent: string[];
  /** The stream's /streams record (the same registry): requests, named, last request, unsubscribed, sent. */
  record: StreamRecord;
  versionSent?: string;
  versionAcked?: string;
  nacks: number;
  lastNack?: { at: string; reason: string };
  connectedSince: string;
}

export interface ClientsReport {
  open: number;
  clients: ClientEntry[];
  /** The last streams that ended (from the /streams registry), newest last: node, names, times. */
  recentlyClosed: Array<{ stream: number; node?: string; api: string; kind: string; names: string[]; connectedSince: string; closedAt: string }>;
}

/** Longest NACK reason kept (Envoy's error_detail can be long; it never carries key material). */
const NACK_REASON_CHARS = 1000;
/** At most this many stream open/close lines per window; the rest are counted in one summary line. */
const LOG_LINES_PER_WINDOW = 20;
const LOG_WINDOW_MS = 10_000;

/**
 * Per-stream protocol state (version sent, ACKed, last NACK) kept from the stream hooks, and the
 * rate-limited info log of streams opening (at their first response, when node and names are
 * known) and closing. State of a stream is dropped when the stream ends.
 */
export class ClientTracker implements StreamHooks {
  private readonly state = new Map<number, StreamProtocolState>();
  private readonly announced = new Set<number>();
  private readonly limiter: StreamLogLimiter;

  constructor(
    private readonly streams: StreamRegistry,
    log: Logger,
    private readonly peerOf: (stream: OpenStream) => PeerInfo | undefined = () => undefined,
  ) {
    this.limiter = new StreamLogLimiter(log);
  }

  onResponse(info: { streamId: number; names: readonly string[]; versionInfo: string; node?: NodeInfo }): void {
    const s = this.get(info.streamId);
    s.versionSent = info.versionInfo;
    s.sentAtMs = Date.now();
    if (!this.announced.has(info.streamId)) {
      const stream = this.streams.open.get(info.streamId);
      if (stream) {
        this.announced.add(info.streamId);
        this.limiter.line('stream opened', {
          stream: info.streamId,
          api: stream.api,
          kind: stream.kind,
          ...(info.node ? { node: boundText(info.node.id, 200), cluster: boundText(info.node.cluster, 200) } : {}),
          names: stream.record().lastRequestNames.slice(0, 10),
        });
      }
    }
  }

  onAck(info: { streamId: number; versionInfo: string }): void {
    const s = this.get(info.streamId);
    s.versionAcked = info.versionInfo;
    s.ackedAtMs = Date.now();
  }

  onNack(info: { streamId: number; nonce: string; reason: string }): void {
    const s = this.get(info.streamId);
    s.nacks += 1;
    s.lastNack = { at: new Date().toISOString(), reason: boundText(info.reason, NACK_REASON_CHARS), nonce: info.nonce };
  }

  /** Called when a stream ended: logs it (rate-limited) and forgets its state. */
  closed(stream: ClosedStream): void {
    const s = this.state.get(stream.id);
    this.state.delete(stream.id);
    const wasAnnounced = this.announced.delete(stream.id);
    this.limiter.line('stream closed', {
      stream: stream.id,
      api: stream.api,
      kind: stream.kind,
      ...(stream.node !== undefined ? { node: boundText(stream.node, 200) } : {}),
      names: stream.sent.slice(0, 10),
      seconds: Math.round((stream.closedAt.getTime() - stream.openedAt.getTime()) / 1000),
      ...(s?.versionAcked !== undefined ? { versionAcked: s.versionAcked } : {}),
      ...(wasAnnounced ? {} : { answered: false }),
    });
  }

  stateOf(streamId: number): StreamProtocolState | undefined {
    return this.state.get(streamId);
  }

  /** The `/clients` report: every open stream in id order. */
  report(): ClientsReport {
    const clients = [...this.streams.open.values()]
      .sort((a, b) => a.id - b.id)
      .map((stream): ClientEntry => {
        const node = stream.node();
        const rec = stream.record();
        const s = this.state.get(stream.id);
        const peer = this.peerOf(stream);
        return {
          stream: stream.id,
          ...(peer ? { peer } : {}),
          ...(node ? { node: { id: node.id, cluster: node.cluster, userAgent: node.userAgentName, envoyVersion: node.userAgentVersion } } : {}),
          api: stream.api,
          kind: stream.kind,
          names: rec.named,
          sent: rec.sent,
          record: rec,
          ...(s?.versionSent !== undefined ? { versionSent: s.versionSent } : {}),
          ...(s?.versionAcked !== undefined ? { versionAcked: s.versionAcked } : {}),
          nacks: s?.nacks ?? 0,
          ...(s?.lastNack ? { lastNack: { at: s.lastNack.at, reason: s.lastNack.reason } } : {}),
          connectedSince: stream.openedAt.toISOString(),
        };
      });
    const recentlyClosed = this.streams.recentlyClosed.map((c) => ({
      stream: c.id,
      ...(c.node !== undefined ? { node: c.node } : {}),
      api: c.api,
      kind: c.kind,
      names: c.named,
      connectedSince: c.openedAt.toISOString(),
      closedAt: c.closedAt.toISOString(),
    }));
    return { open: clients.length, clients, recentlyClosed };
  }

  stop(): void {
    this.limiter.stop();
  }

  private get(id: number): StreamProtocolState {
    let s = this.state.get(id);
    if (!s) this.state.set(id, (s = { nacks: 0 }));
    return s;
  }
}

/**
 * Info lines for stream open/close: up to {@link LOG_LINES_PER_WINDOW} per message per
 * {@link LOG_WINDOW_MS}; past that, lines are counted and one summary line per message goes out
 * when the window ends (`suppressed: N`), so a reconnect storm of thousands gives a few lines that
 * still account for every stream.
 */
export class StreamLogLimiter {
  private readonly windows = new Map<string, { startedAt: number; written: number; suppressed: number; timer?: NodeJS.Timeout }>();

  constructor(
    private readonly log: Logger,
    private readonly perWindow = LOG_LINES_PER_WINDOW,
    private readonly windowMs = LOG_WINDOW_MS,
    private readonly now: () => number = () => performance.now(),
  ) {}

  line(msg: string, fields: Record<string, unknown>): void {
    const t = this.now();
    let w = this.windows.get(msg);
    if (!w || t - w.startedAt >= this.windowMs) {
      if (w) this.flush(msg, w);
      w = { startedAt: t, written: 0, suppressed: 0 };
      this.windows.set(msg, w);
    }
    if (w.written < this.perWindow) {
      w.written += 1;
      this.log.info(msg, fields);
      return;
    }
    w.suppressed += 1;
    if (!w.timer) {
      const window = w;
      w.timer = setTimeout(() => this.flush(msg, window), Math.max(0, w.startedAt + this.windowMs - t));
      w.timer.unref();
    }
  }

  stop(): void {
    for (const [msg, w] of this.windows) this.flush(msg, w);
    this.windows.clear();
  }

  private flush(msg: string, w: { suppressed: number; timer?: NodeJS.Timeout }): void {
    clearTimeout(w.timer);
    w.timer = undefined;
    if (w.suppressed === 0) return;
    this.log.info(`${msg} (more, not listed one by one)`, { suppressed: w.suppressed, windowMs: this.windowMs });
    w.suppressed = 0;
  }
}
