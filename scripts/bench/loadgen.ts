/**
 * The load generator: a separate process speaking SDS (v3 StreamSecrets) over the real Unix
 * socket like Envoy does: one HTTP/2 connection per client, one gRPC stream per requested
 * secret, the first DiscoveryRequest carries the node, every response is ACKed with its
 * version_info and nonce. It is deliberately lean (its own HTTP/2 framing for held streams, see
 * raw-h2.ts; a decoder that reads only version_info and nonce) so the client side costs as little
 * CPU as possible on a machine it shares with the server. The churn scenario uses node:http2,
 * which reports each stream's grpc-status.
 *
 * Commands (over the fork() IPC channel, from run.ts):
 *   open   {group, socket, conns, perConn, name}  connect storm; resolves when every stream has its first response
 *   wait   {group, version, timeoutMs}            resolves when every stream of the group has received `version`
 *   close  {group}                                closes the group's connections
 *   churn  {socket, name, rate, seconds, ...}     streams opening and closing at `rate` per second
 *   probe  {socket, name, timeoutMs}              retries one stream until it is answered (start-up time)
 *   wait   {group, version: '*'}                  as wait, for ANY new version since `arm` on every stream
 *                                                  (peers whose version_info is a per-stream counter: SPIRE)
 *   sample {}                                     this process's memory/CPU
 */
import http2 from 'node:http2';
import net from 'node:net';
import {
  GrpcMessageReader,
  SDS_V3_STREAM_PATH,
  SECRET_TYPE_URL_V3,
  decodeVersionAndNonce,
  encodeDiscoveryRequest,
  encodeNode,
  grpcFrame,
  percentile,
  sampleProcess,
  serveIpc,
  wallMs,
  type StormReply,
} from './common.js';
import { RawH2Connection, requestHeaderBlock, type RawStreamHandler } from './raw-h2.js';

const REQUEST_HEADERS = {
  ':method': 'POST',
  ':path': SDS_V3_STREAM_PATH,
  'content-type': 'application/grpc',
  te: 'trailers',
};

interface VersionCount {
  count: number;
  firstAt: number;
  lastAt: number;
}

interface Group {
  expected: number;
  conns: Set<RawH2Connection>;
  versions: Map<string, VersionCount>;
  waiters: Map<string, () => void>;
  streamErrors: number;
  errorSamples: string[];
  responseBytes: number;
  closing: boolean;
  /** Since the last `arm`: streams that received a version other than the one they held. */
  armed: { gen: number; count: number; firstAt: number; lastAt: number };
}

/** The `armed.gen` each stream last counted for (a side table: RawStream belongs to raw-h2.ts). */
const armedSeen = new WeakMap<object, number>();

const groups = new Map<string, Group>();

function noteError(g: { errorSamples: string[] }, text: string): void {
  if (g.errorSamples.length < 5) g.errorSamples.push(text);
}

/** Opens one client connection (a fresh socket every time, like one Envoy). */
function connect(socketPath: string): http2.ClientHttp2Session {
  return http2.connect('http://sds', {
    createConnection: () => net.connect(socketPath),
    // Envoy's defaults are larger; node's 64 KiB are enough for ten 3 KB pushes per connection.
    settings: { enablePush: false },
  });
}

interface StreamCallbacks {
  onResponse(versionInfo: string, bytes: number): void;
  onEnd(status: string | undefined, err: Error | undefined): void;
}

/** One SotW stream asking for `name`; ACKs every response like Envoy. */
function openStream(session: http2.ClientHttp2Session, name: string, nodeId: string, cb: StreamCallbacks): http2.ClientHttp2Stream {
  const stream = session.request(REQUEST_HEADERS);
  let status: string | undefined;
  const reader = new GrpcMessageReader((buf, start, end) => {
    const { versionInfo, nonce } = decodeVersionAndNonce(buf, start, end);
    stream.write(grpcFrame(encodeDiscoveryRequest({ versionInfo, names: [name], typeUrl: SECRET_TYPE_URL_V3, nonce })));
    cb.onResponse(versionInfo, end - start);
  });
  stream.on('response', (headers) => {
    const s = headers['grpc-status'];
    if (s !== undefined) status = String(s);
  });
  stream.on('trailers', (trailers) => {
    const s = trailers['grpc-status'];
    if (s !== undefined) status = String(s);
  });
  stream.on('data', (chunk: Buffer) => reader.push(chunk));
  let error: Error | undefined;
  stream.on('error', (err) => {
    error = err;
  });
  stream.on('close', () => cb.onEnd(status, error));
  stream.write(grpcFrame(encodeDiscoveryRequest({ node: encodeNode(nodeId, 'bench'), names: [name], typeUrl: SECRET_TYPE_URL_V3 })));
  return stream;
}

// ---- connect storm + held streams --------------------------------------------------------------

interface OpenArgs {
  group: string;
  socket: string;
  conns: number;
  perConn: number;
  name: string;
  timeoutMs?: number;
}

function open(args: OpenArgs): Promise<StormReply> {
  const { group: id, socket, conns, perConn, name } = args;
  const expected = conns * perConn;
  const g: Group = {
    expected,
    conns: new Set(),
    versions: new Map(),
    waiters: new Map(),
    streamErrors: 0,
    errorSamples: [],
    responseBytes: 0,
    closing: false,
    armed: { gen: 0, count: 0, firstAt: 0, lastAt: 0 },
  };
  groups.set(id, g);
  let refused = 0;
  const refusedCodes: Record<string, number> = {};
  let firstCount = 0;
  const firstLatency: number[] = [];
  const startedAt = wallMs();

  return new Promise((resolve) => {
    let done = false;
    const finish = (timedOut: boolean): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      const lastAt = wallMs();
      resolve({
        startedAt,
        allServedMs: timedOut ? undefined : lastAt - startedAt,
        served: firstCount,
        expected,
        refused,
        refusedCodes,
        streamErrors: g.streamErrors,
        errorSamples: g.errorSamples,
        firstResponseP50Ms: percentile(firstLatency, 50),
        firstResponseP99Ms: percentile(firstLatency, 99),
        responseBytes: g.responseBytes,
        timedOut,
      });
    };
    const timer = setTimeout(() => finish(true), args.timeoutMs ?? 60_000);

    const headerBlock = requestHeaderBlock(SDS_V3_STREAM_PATH);
    const handler: RawStreamHandler = {
      onMessage: (stream, buf, start, end) => {
        const t = wallMs();
        const { versionInfo, nonce } = decodeVersionAndNonce(buf, start, end);
        // ACK like Envoy: the version and nonce just received, the same resource names.
        stream.send(grpcFrame(encodeDiscoveryRequest({ versionInfo, names: [name], typeUrl: SECRET_TYPE_URL_V3, nonce })));
        const state = stream;
        if (state.seen === undefined) {
          firstCount += 1;
          firstLatency.push(t - startedAt);
          g.responseBytes = end - start;
        }
        if (versionInfo !== state.seen) {
          state.seen = versionInfo;
          let v = g.versions.get(versionInfo);
          if (!v) g.versions.set(versionInfo, (v = { count: 0, firstAt: t, lastAt: t }));
          v.count += 1;
          v.lastAt = t;
          if (v.count === g.expected) g.waiters.get(versionInfo)?.();
          const a = g.armed;
          if (a.gen > 0 && armedSeen.get(state) !== a.gen) {
            armedSeen.set(state, a.gen);
            if (a.count === 0) a.firstAt = t;
            a.count += 1;
            a.lastAt = t;
            if (a.count === g.expected) g.waiters.get(ANY_VERSION)?.();
          }
        }
        if (firstCount === expected) finish(false);
      },
      onEnd: (stream, reason) => {
        if (g.closing || !stream.conn.connected) return; // closed by us, or refused (counted, retried)
        g.streamErrors += 1;
        noteError(g, `stream ${stream.id} ended: ${reason}`);
      },
    };
    const client = (index: number, attempt: number): void => {
      const conn = new RawH2Connection(socket, (c, err) => {
        g.conns.delete(c);
        if (!err || g.closing) return;
        if (c.connected) {
          g.streamErrors += 1;
          noteError(g, `connection: ${err.code ?? ''} ${err.message}`);
          return;
        }
        // Refused before the connection existed (accept queue full: EAGAIN on a Unix socket).
        refused += 1;
        refusedCodes[err.code ?? err.message] = (refusedCodes[err.code ?? err.message] ?? 0) + 1;
        if (attempt < 100) setTimeout(() => client(index, attempt + 1), 20 + Math.random() * 30 * Math.min(attempt + 1, 10));
      });
      g.conns.add(conn);
      const first = grpcFrame(encodeDiscoveryRequest({ node: encodeNode(`node-${index}`, 'bench'), names: [name], typeUrl: SECRET_TYPE_URL_V3 }));
      for (let s = 0; s < perConn; s++) conn.open(headerBlock, first, handler);
    };
    // "At the same moment": every connect() is issued from one synchronous loop.
    for (let i = 0; i < conns; i++) client(i, 0);
  });
}

/** `wait` for this version: every stream has received some version other than the one it held at `arm`. */
const ANY_VERSION = '*';

function wait(args: { group: string; version: string; timeoutMs?: number }): Promise<unknown> {
  const g = groups.get(args.group);
  if (!g) throw new Error(`no group ${args.group}`);
  const report = (): unknown => {
    if (args.version === ANY_VERSION) {
      const a = g.armed;
      return { count: a.count, expected: g.expected, firstAt: a.count ? a.firstAt : undefined, lastAt: a.count ? a.lastAt : undefined, complete: a.count >= g.expected };
    }
    const v = g.versions.get(args.version);
    return { count: v?.count ?? 0, expected: g.expected, firstAt: v?.firstAt, lastAt: v?.lastAt, complete: (v?.count ?? 0) >= g.expected };
  };
  const have = args.version === ANY_VERSION ? g.armed.count : (g.versions.get(args.version)?.count ?? 0);
  if (have >= g.expected) return Promise.resolve(report());
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      g.waiters.delete(args.version);
      resolve(report());
    }, args.timeoutMs ?? 30_000);
    g.waiters.set(args.version, () => {
      clearTimeout(timer);
      g.waiters.delete(args.version);
      resolve(report());
    });
  });
}

/** Forgets version counts (before a rotation, so a version that comes back is counted afresh). */
function arm(args: { group: string }): unknown {
  const g = groups.get(args.group);
  if (!g) return {};
  g.versions.clear();
  g.armed = { gen: g.armed.gen + 1, count: 0, firstAt: 0, lastAt: 0 };
  return {};
}

async function close(args: { group: string }): Promise<unknown> {
  const g = groups.get(args.group);
  if (!g) return {};
  groups.delete(args.group);
  g.closing = true;
  const conns = [...g.conns];
  await Promise.all(
    conns.map(
      (c) =>
        new Promise<void>((resolve) => {
          if (c.socket.destroyed) return resolve();
          c.socket.once('close', () => resolve());
          c.destroy();
        }),
    ),
  );
  return { closed: conns.length, streamErrors: g.streamErrors, errorSamples: g.errorSamples };
}

// ---- start-up probe ----------------------------------------------------------------------------

interface ProbeArgs {
  socket: string;
  name: string;
  timeoutMs?: number;
  /** Pause between attempts while nothing listens yet (ms); the resolution of the start-up figure. */
  retryMs?: number;
}

/**
 * Opens one connection and one stream asking for `name`, again and again until a response arrives
 * (the socket may not exist yet, or refuse, or the stream may end unanswered): resolves with the
 * wall-clock time that first response arrived and how many attempts it took.
 */
function probe(args: ProbeArgs): Promise<unknown> {
  const { socket, name } = args;
  const retryMs = args.retryMs ?? 2;
  const deadline = wallMs() + (args.timeoutMs ?? 30_000);
  const headerBlock = requestHeaderBlock(SDS_V3_STREAM_PATH);
  const first = grpcFrame(encodeDiscoveryRequest({ node: encodeNode('probe', 'bench'), names: [name], typeUrl: SECRET_TYPE_URL_V3 }));
  let attempts = 0;
  let lastError = '';
  return new Promise((resolve, reject) => {
    const attempt = (): void => {
      if (wallMs() > deadline) {
        reject(new Error(`no response from ${socket} within ${args.timeoutMs ?? 30_000} ms after ${attempts} attempts (last: ${lastError})`));
        return;
      }
      attempts += 1;
      let settled = false;
      const retry = (why: string): void => {
        if (settled) return;
        settled = true;
        lastError = why;
        conn.destroy();
        setTimeout(attempt, retryMs);
      };
      const conn = new RawH2Connection(socket, (_c, err) => retry(err ? `${err.code ?? ''} ${err.message}` : 'connection closed'));
      conn.open(headerBlock, first, {
        onMessage: () => {
          if (settled) return;
          settled = true;
          const at = wallMs();
          conn.destroy();
          resolve({ at, attempts });
        },
        onEnd: (_s, reason) => retry(`stream ended: ${reason}`),
      });
    };
    attempt();
  });
}

// ---- churn -------------------------------------------------------------------------------------

interface ChurnArgs {
  socket: string;
  name: string;
  /** Streams opened per second. */
  rate: number;
  seconds: number;
  /** A connection takes this many streams, then retires (closes gracefully when they are done). */
  streamsPerConn?: number;
  /** Every n-th retiring connection is destroyed abruptly with its streams open (an Envoy crash). */
  abortEvery?: number;
  lifeMinMs?: number;
  lifeMaxMs?: number;
}

function churn(args: ChurnArgs): Promise<unknown> {
  const { socket, name, rate, seconds } = args;
  const streamsPerConn = args.streamsPerConn ?? 100;
  const abortEvery = args.abortEvery ?? 10;
  const lifeMin = args.lifeMinMs ?? 200;
  const lifeMax = args.lifeMaxMs ?? 1000;
  const stats = {
    opened: 0,
    served: 0,
    cancelled: 0,
    halfClosedOk: 0,
    aborted: 0,
    connections: 0,
    refused: 0,
    errors: 0,
    errorSamples: [] as string[],
    peakOpenStreams: 0,
    openStreams: 0,
    firstResponseP50Ms: 0,
    firstResponseP99Ms: 0,
  };
  const firstLatency: number[] = [];
  const error = (text: string): void => {
    stats.errors += 1;
    noteError(stats, text);
  };

  interface Conn {
    session: http2.ClientHttp2Session;
    opened: number;
    live: number;
    retiring: boolean;
    aborting: boolean;
    connected: boolean;
  }
  const conns = new Set<Conn>();
  let current: Conn | undefined;
  let retired = 0;

  const newConn = (): Conn => {
    const c: Conn = { session: connect(socket), opened: 0, live: 0, retiring: false, aborting: false, connected: false };
    stats.connections += 1;
    conns.add(c);
    c.session.once('connect', () => {
      c.connected = true;
    });
    c.session.on('error', (err: NodeJS.ErrnoException) => {
      if (c.aborting) return;
      if (!c.connected) stats.refused += 1;
      error(`session: ${err.code ?? ''} ${err.message}`);
    });
    c.session.on('close', () => conns.delete(c));
    return c;
  };
  const retire = (c: Conn): void => {
    c.retiring = true;
    retired += 1;
    if (retired % abortEvery === 0) {
      c.aborting = true;
      // Abrupt: the peer vanishes with streams open.
      setTimeout(() => c.session.destroy(), lifeMin / 2);
    } else if (c.live === 0) c.session.close();
  };

  const openOne = (): void => {
    if (!current || current.opened >= streamsPerConn) {
      if (current) retire(current);
      current = newConn();
    }
    const c = current;
    c.opened += 1;
    c.live += 1;
    stats.opened += 1;
    stats.openStreams += 1;
    stats.peakOpenStreams = Math.max(stats.peakOpenStreams, stats.openStreams);
    const openedAt = wallMs();
    let served = false;
    let closing: 'cancel' | 'half-close' | undefined;
    const kind = stats.opened % 2 === 0 ? 'cancel' : 'half-close';
    const firstTimeout = setTimeout(() => {
      if (!served) {
        error('no first response within 5 s');
        stream.close(http2.constants.NGHTTP2_CANCEL);
      }
    }, 5000);
    const stream = openStream(c.session, name, `churn-${stats.opened}`, {
      onResponse: () => {
        if (served) return;
        served = true;
        clearTimeout(firstTimeout);
        stats.served += 1;
        firstLatency.push(wallMs() - openedAt);
        const life = lifeMin + Math.random() * (lifeMax - lifeMin);
        setTimeout(() => {
          if (stream.closed || c.aborting) return;
          closing = kind;
          if (kind === 'cancel') stream.close(http2.constants.NGHTTP2_CANCEL);
          else stream.end();
        }, life);
      },
      onEnd: (status, err) => {
        clearTimeout(firstTimeout);
        stats.openStreams -= 1;
        c.live -= 1;
        if (c.aborting) stats.aborted += 1;
        else if (closing === 'cancel') stats.cancelled += 1;
        else if (closing === 'half-close' && status === '0' && !err) stats.halfClosedOk += 1;
        else error(`stream ended unexpectedly: status ${status ?? '-'} ${err?.message ?? ''} (${closing ?? 'open'})`);
        if (c.retiring && !c.aborting && c.live === 0) c.session.close();
      },
    });
  };

  return new Promise((resolve) => {
    const startedAt = wallMs();
    const endAt = startedAt + seconds * 1000;
    const tick = setInterval(() => {
      const now = wallMs();
      const due = Math.floor(((Math.min(now, endAt) - startedAt) / 1000) * rate);
      while (stats.opened < due) openOne();
      if (now >= endAt) {
        clearInterval(tick);
        if (current) retire(current);
        current = undefined;
        const drainStart = wallMs();
        const drain = setInterval(() => {
          if (conns.size === 0 || wallMs() - drainStart > lifeMax + 10_000) {
            clearInterval(drain);
            if (conns.size > 0) error(`${conns.size} connections still open after the churn`);
            for (const c of conns) c.session.destroy();
            stats.firstResponseP50Ms = percentile(firstLatency, 50);
            stats.firstResponseP99Ms = percentile(firstLatency, 99);
            resolve({ ...stats, seconds: (wallMs() - startedAt) / 1000, openPerSecond: stats.opened / seconds });
          }
        }, 50);
      }
    }, 10);
  });
}

serveIpc({
  open: (a) => open(a as unknown as OpenArgs),
  wait: (a) => wait(a as unknown as { group: string; version: string; timeoutMs?: number }),
  arm: (a) => arm(a as unknown as { group: string }),
  close: (a) => close(a as unknown as { group: string }),
  churn: (a) => churn(a as unknown as ChurnArgs),
  probe: (a) => probe(a as unknown as ProbeArgs),
  sample: (a) => sampleProcess(a.gc === true),
});
process.send?.({ ready: true });
