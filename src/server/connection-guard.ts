import type { EventEmitter } from 'node:events';
import { readFileSync } from 'node:fs';
import type http2 from 'node:http2';
import type net from 'node:net';
import type { Logger } from '../core/logger.js';
import { RateLimitedWarning } from '../core/rate-limited-log.js';

/**
 * Limits that keep any local process from wedging the transport by holding file descriptors
 * (issue 9). Every limit is logged, rate-limited, when it acts.
 */
export interface TransportLimits {
  /**
   * Milliseconds a new connection has to send the HTTP/2 client connection preface (the 24-byte
   * magic and the header of a SETTINGS frame, RFC 9113 section 3.4). Closed after that. Default 5000.
   */
  prefaceTimeoutMs: number;
  /** Connections open at once (before and after the preface); the excess is closed at accept. Default 8192. */
  maxConnections: number;
  /**
   * Connections open at once from one uid (`SO_PEERCRED`), so one local user cannot hold every
   * connection; the excess is closed at accept. Only acts while attestation is on (it is what reads
   * the uid). Default 1024.
   */
  maxConnectionsPerUid: number;
  /**
   * Concurrent streams per connection, announced as SETTINGS_MAX_CONCURRENT_STREAMS; HTTP/2 refuses
   * the excess with REFUSED_STREAM. Envoy opens one stream per secret. Default 1024.
   */
  maxStreamsPerConnection: number;
  /**
   * Milliseconds between HTTP/2 PINGs on each connection; 0 turns them off. A connection that does
   * not answer within `pingTimeoutMs` is closed: this is what frees a connection whose session failed
   * with a protocol error (HTTP/2 sends GOAWAY, then stops reading, and Node never closes the
   * socket), and one whose peer is stalled or gone. Default 60000: on a Unix socket the kernel
   * closes a dead peer's end at once (no half-open connections as over TCP), so the PING only has
   * the failed sessions and stalled peers to find, and every PING costs a wake-up per connection
   * (issue 14: idle CPU at 1,000 and 10,000 streams).
   */
  pingIntervalMs: number;
  /** Milliseconds to wait for a PING acknowledgement. Default 5000. */
  pingTimeoutMs: number;
}

export const DEFAULT_TRANSPORT_LIMITS: Readonly<TransportLimits> = {
  prefaceTimeoutMs: 5000,
  maxConnections: 8192,
  maxConnectionsPerUid: 1024,
  maxStreamsPerConnection: 1024,
  pingIntervalMs: 60_000,
  pingTimeoutMs: 5000,
};

/** The client connection preface magic (RFC 9113 section 3.4). */
const PREFACE_MAGIC = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1');
/** Magic plus the 9-byte header of the SETTINGS frame that must follow it. */
const PREFACE_CHECK_BYTES = PREFACE_MAGIC.length + 9;
const FRAME_TYPE_SETTINGS = 0x4;

/** Counts of what the guard did, for tests and the benchmark. */
export interface ConnectionGuardStats {
  accepted: number;
  open: number;
  /** Most connections open at once so far. */
  peakOpen: number;
  refusedOverLimit: number;
  prefaceTimeouts: number;
  /** Longest time from accept to close of a connection closed for want of a preface (ms). */
  longestPrefaceWaitMs: number;
  badPrefaces: number;
  pingTimeouts: number;
  streamLimitReached: number;
}

/**
 * Sits between the accept loop and grpc-js: counts and caps connections, holds each new socket
 * until it has sent a valid HTTP/2 preface (then hands it to `inject`), and once grpc-js has the
 * session, pings it and closes it when it stops answering.
 */
export class ConnectionGuard {
  private open = 0;
  private peakOpen = 0;
  private accepted = 0;
  private readonly waiting = new Set<net.Socket>();
  private readonly sessions = new Set<http2.Http2Session>();
  /** Open HTTP/2 streams, so a shutdown can wait until each one's trailers went out and it closed. */
  private readonly streams = new Set<http2.ServerHttp2Stream>();
  private handingOver: net.Socket | undefined;
  private longestPrefaceWaitMs = 0;
  private readonly overLimit: RateLimitedWarning;
  private readonly prefaceTimeout: RateLimitedWarning;
  private readonly badPreface: RateLimitedWarning;
  private readonly pingTimeout: RateLimitedWarning;
  private readonly streamLimit: RateLimitedWarning;

  constructor(
    readonly limits: Readonly<TransportLimits>,
    private readonly log: Logger,
    private readonly inject: (socket: net.Socket) => void,
  ) {
    this.overLimit = new RateLimitedWarning(log, 'refusing connection: too many open connections (limit maxConnections)');
    this.prefaceTimeout = new RateLimitedWarning(log, 'closing connection: no HTTP/2 preface in time (limit prefaceTimeoutMs)');
    this.badPreface = new RateLimitedWarning(log, 'closing connection: not an HTTP/2 client preface');
    this.pingTimeout = new RateLimitedWarning(log, 'closing connection: no answer to an HTTP/2 PING (dead peer, or the session failed with a protocol error and GOAWAY)');
    this.streamLimit = new RateLimitedWarning(log, 'connection reached its concurrent stream limit; further streams are refused (limit maxStreamsPerConnection)');
  }

  stats(): ConnectionGuardStats {
    return {
      accepted: this.accepted,
      open: this.open,
      peakOpen: this.peakOpen,
      refusedOverLimit: this.overLimit.count,
      prefaceTimeouts: this.prefaceTimeout.count,
      longestPrefaceWaitMs: this.longestPrefaceWaitMs,
      badPrefaces: this.badPreface.count,
      pingTimeouts: this.pingTimeout.count,
      streamLimitReached: this.streamLimit.count,
    };
  }

  /** The accept loop's handler for each new socket. */
  accept(socket: net.Socket): void {
    if (this.open >= this.limits.maxConnections) {
      socket.destroy();
      this.overLimit.warn({ open: this.open, maxConnections: this.limits.maxConnections });
      return;
    }
    this.open++;
    this.peakOpen = Math.max(this.peakOpen, this.open);
    this.accepted++;
    socket.once('close', () => this.open--);
    this.awaitPreface(socket);
  }

  /**
   * Watches the sessions and streams of the HTTP/2 server that `inject` feeds (grpc-js's).
   * Its 'session' event fires synchronously inside `inject`, which is how a session is paired
   * with the socket the guard handed over.
   */
  watch(http2Server: EventEmitter): void {
    http2Server.on('session', (session: http2.Http2Session) => {
      const socket = this.handingOver;
      this.handingOver = undefined;
      this.sessions.add(session);
      const stopPing = this.startPing(session, socket);
      session.once('close', () => {
        stopPing();
        this.sessions.delete(session);
      });
    });
    const streamsOf = new WeakMap<http2.Http2Session, number>();
    http2Server.on('stream', (stream: http2.ServerHttp2Stream) => {
      const session = stream.session;
      if (!session) return;
      const n = (streamsOf.get(session) ?? 0) + 1;
      streamsOf.set(session, n);
      if (n === this.limits.maxStreamsPerConnection) this.streamLimit.warn({ maxStreamsPerConnection: this.limits.maxStreamsPerConnection });
      this.streams.add(stream);
      stream.once('close', () => {
        streamsOf.set(session, (streamsOf.get(session) ?? 1) - 1);
        this.streams.delete(stream);
      });
    });
  }

  /**
   * Resolves true once every open HTTP/2 stream has closed (its trailers written and the peer's
   * end seen), false after `timeoutMs` (milliseconds) if some are still open. A graceful shutdown
   * waits for this before closing the sessions: closing a session (GOAWAY, then the socket) while
   * a stream's trailers are still queued cut them mid-frame, and Envoy counted an HTTP/2 protocol
   * error (`upstream_cx_protocol_error`) on every stop.
   */
  async streamsClosed(timeoutMs: number): Promise<boolean> {
    const open = [...this.streams].filter((s) => !s.closed);
    if (open.length === 0) return true;
    let timer: NodeJS.Timeout | undefined;
    const closed = Promise.all(open.map((s) => new Promise<void>((resolve) => (s.closed ? resolve() : s.once('close', () => resolve()))))).then(() => true);
    const timedOut = new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(false), timeoutMs)));
    try {
      return await Promise.race([closed, timedOut]);
    } finally {
      clearTimeout(timer);
    }
  }

  /** Closes connections still waiting for their preface (at shutdown). */
  closeWaiting(): void {
    for (const socket of this.waiting) socket.destroy();
    this.waiting.clear();
  }

  private awaitPreface(socket: net.Socket): void {
    this.waiting.add(socket);
    const acceptedAt = performance.now();
    const chunks: Buffer[] = [];
    let length = 0;
    const done = (): void => {
      clearTimeout(timer);
      socket.removeListener('data', onData);
      socket.removeListener('close', done);
      this.waiting.delete(socket);
    };
    const timer = setTimeout(() => {
      done();
      socket.destroy();
      this.longestPrefaceWaitMs = Math.max(this.longestPrefaceWaitMs, performance.now() - acceptedAt);
      this.prefaceTimeout.warn({ prefaceTimeoutMs: this.limits.prefaceTimeoutMs, bytesReceived: length });
    }, this.limits.prefaceTimeoutMs);
    const onData = (chunk: Buffer): void => {
      chunks.push(chunk);
      length += chunk.length;
      const head = chunks.length === 1 ? chunk : Buffer.concat(chunks);
      chunks.length = 0;
      chunks.push(head);
      const verdict = checkPreface(head);
      if (verdict === 'incomplete') return;
      done();
      if (verdict !== 'ok') {
        socket.destroy();
        this.badPreface.warn({ reason: verdict });
        return;
      }
      // Give the bytes back and hand the socket over; the HTTP/2 session reads what is buffered.
      socket.pause();
      socket.unshift(head);
      this.handingOver = socket;
      try {
        this.inject(socket);
      } finally {
        this.handingOver = undefined;
      }
    };
    socket.on('data', onData);
    socket.on('close', done);
    // A reset from the peer before the preface is not worth a log line.
    socket.on('error', () => socket.destroy());
  }

  /**
   * Adds `session` to the PING sweep; returns the function that takes it out. One timer pings
   * every session at once each `pingIntervalMs`, and one deadline timer checks the answers
   * `pingTimeoutMs` later: a timer and a closure per connection per PING cost more idle CPU than
   * the PINGs themselves (1,000 connections: 200 timer wake-ups a second instead of two per sweep).
   */
  private startPing(session: http2.Http2Session, socket: net.Socket | undefined): () => void {
    if (this.limits.pingIntervalMs <= 0) return () => {};
    const entry: PingEntry = { session, socket, sentAt: 0, outstanding: false, onAck: (err) => {
      if (!err) entry.outstanding = false; // an error means cancelled: the session is closing anyway
    } };
    this.pinged.add(entry);
    this.sweepTimer ??= setInterval(() => this.sweep(), this.limits.pingIntervalMs).unref();
    return () => {
      this.pinged.delete(entry);
      if (this.pinged.size > 0) return;
      clearInterval(this.sweepTimer);
      clearTimeout(this.deadlineTimer);
      this.sweepTimer = this.deadlineTimer = undefined;
    };
  }

  private readonly pinged = new Set<PingEntry>();
  private sweepTimer: NodeJS.Timeout | undefined;
  private deadlineTimer: NodeJS.Timeout | undefined;
  /** When the deadline timer was due (performance.now() ms), to tell our own stalls from silent peers. */
  private deadlineDueAt = 0;

  /** PINGs every session that has no PING in flight. */
  private sweep(): void {
    const now = performance.now();
    let sent = false;
    for (const e of this.pinged) {
      // A closing session (graceful shutdown) is left to its own grace period.
      if (e.outstanding || e.session.destroyed || e.session.closed) continue;
      e.outstanding = true;
      e.sentAt = now;
      sent = true;
      try {
        e.session.ping(e.onAck);
      } catch {
        // ERR_HTTP2_INVALID_SESSION / too many pings in flight: the deadline still applies.
      }
    }
    if (sent && !this.deadlineTimer) this.armDeadline(this.limits.pingTimeoutMs);
  }

  private armDeadline(ms: number): void {
    this.deadlineDueAt = performance.now() + ms;
    this.deadlineTimer = setTimeout(() => this.checkDeadline(), ms).unref();
  }

  /** Closes sessions whose PING went unanswered for `pingTimeoutMs`. */
  private checkDeadline(): void {
    this.deadlineTimer = undefined;
    const { pingTimeoutMs } = this.limits;
    const now = performance.now();
    // Our own event loop stalled (a long synchronous task): the PINGs may not even have been
    // written, or their ACKs not read. Give the peers a fresh timeout rather than blame them.
    if (now - this.deadlineDueAt > Math.max(100, pingTimeoutMs / 2)) {
      for (const e of this.pinged) if (e.outstanding) e.sentAt = now;
      this.armDeadline(pingTimeoutMs);
      return;
    }
    // A timer runs before the socket reads of the same loop turn, which may hold the ACKs; look
    // again once pending I/O has been processed (setImmediate runs after it).
    setImmediate(() => {
      let next = Infinity;
      for (const e of this.pinged) {
        if (!e.outstanding || e.session.destroyed) continue;
        const left = e.sentAt + pingTimeoutMs - now;
        if (left > 0) {
          next = Math.min(next, left);
          continue;
        }
        this.pingTimeout.warn({ pingTimeoutMs });
        e.session.destroy();
        e.socket?.destroy();
      }
      if (next !== Infinity && !this.deadlineTimer) this.armDeadline(next);
    });
  }
}

/** One session in the PING sweep. */
interface PingEntry {
  session: http2.Http2Session;
  socket: net.Socket | undefined;
  /** performance.now() (ms) when the PING in flight was sent. */
  sentAt: number;
  outstanding: boolean;
  /** The PING callback, made once per session so a PING allocates no closure. */
  onAck: (err: Error | null) => void;
}

/**
 * Checks the first bytes of a connection: `ok` once the magic and a SETTINGS frame header (stream 0,
 * no ACK flag, payload a multiple of 6 bytes) are there, `incomplete` while a prefix matches, else
 * the reason it is not HTTP/2 (RFC 9113 section 3.4).
 */
export function checkPreface(head: Buffer): 'ok' | 'incomplete' | string {
  const magicBytes = Math.min(head.length, PREFACE_MAGIC.length);
  if (!head.subarray(0, magicBytes).equals(PREFACE_MAGIC.subarray(0, magicBytes))) return 'the first bytes are not the HTTP/2 preface magic';
  if (head.length < PREFACE_CHECK_BYTES) return 'incomplete';
  const frame = head.subarray(PREFACE_MAGIC.length);
  const payloadLength = frame.readUIntBE(0, 3);
  const type = frame[3];
  const flags = frame[4] ?? 0;
  const streamId = frame.readUInt32BE(5) & 0x7fffffff;
  if (type !== FRAME_TYPE_SETTINGS || (flags & 0x1) !== 0 || streamId !== 0 || payloadLength % 6 !== 0) {
    return 'the preface magic is not followed by a SETTINGS frame';
  }
  return 'ok';
}

/**
 * The soft limit on open files of this process (RLIMIT_NOFILE), read from /proc/self/limits;
 * undefined where that file does not exist.
 */
export function openFileSoftLimit(readLimits: () => string = () => readFileSync('/proc/self/limits', 'utf8')): number | undefined {
  try {
    const line = readLimits().split('\n').find((l) => l.startsWith('Max open files'));
    const soft = line?.slice('Max open files'.length).trim().split(/\s+/)[0];
    return soft === undefined || soft === 'unlimited' ? undefined : Number(soft);
  } catch {
    return undefined;
  }
}

/** File descriptors kept free for everything but client connections (secret files, watchers, admin). */
export const FD_RESERVE = 256;

/**
 * The limits to use: `configured` over the defaults, with the default connection cap lowered to
 * fit the process's open-file limit (less {@link FD_RESERVE}); `note` says what was adjusted or
 * why the configured cap cannot be reached.
 */
export function effectiveLimits(configured: Partial<TransportLimits> | undefined, fdLimit: number | undefined): { limits: TransportLimits; note?: { level: 'info' | 'warn'; msg: string; fields: Record<string, number> } } {
  const limits: TransportLimits = { ...DEFAULT_TRANSPORT_LIMITS, ...configured };
  if (fdLimit === undefined || limits.maxConnections + FD_RESERVE <= fdLimit) return { limits };
  const fits = Math.max(1, fdLimit - FD_RESERVE);
  if (configured?.maxConnections === undefined) {
    limits.maxConnections = fits;
    return { limits, note: { level: 'info', msg: 'connection cap lowered to fit the open-file limit (raise ulimit -n for more)', fields: { maxConnections: fits, openFileLimit: fdLimit, reserved: FD_RESERVE } } };
  }
  return { limits, note: { level: 'warn', msg: 'maxConnections is above what the open-file limit allows: at the limit, accept and file reads fail with EMFILE', fields: { maxConnections: limits.maxConnections, openFileLimit: fdLimit, fits } } };
}
