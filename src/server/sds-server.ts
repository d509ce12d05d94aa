import type { EventEmitter } from 'node:events';
import net from 'node:net';
import path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import type { SecretCatalog } from '../secrets/store.js';
import type { SdsServiceDeps } from './sds-service.js';
import type { Logger } from '../core/logger.js';
import { ErrorCode, SdsError } from '../core/errors.js';
import { V2, V3, type ApiVersion } from '../api/api-version.js';
import { NonceSource } from '../xds/nonce.js';
import type { BundleFormatSetting } from '../xds/bundle-format.js';
import type { StreamHooks } from '../xds/types.js';
import { createSdsService, StreamRegistry } from './sds-service.js';
import { bindPrivately, checkSocketPath, directoryModeFor, prepareSocketDirectory, prepareSocketPath, removeSocket, type BindOptions } from './unix-socket.js';
import { ConnectionGuard, effectiveLimits, openFileSoftLimit, type ConnectionGuardStats, type TransportLimits } from './connection-guard.js';
import type { CallerAttestation, ConnectionAttestation } from '../attestation/caller-attestation.js';
import type { Caller } from '../attestation/types.js';
import { RateLimitedWarning } from '../core/rate-limited-log.js';

export interface SdsServerOptions {
  socketPath: string;
  /** Socket file mode, default 0o660. */
  socketMode?: number;
  socketGroup?: number;
  catalog: SecretCatalog;
  /** Per-caller catalogs (authorization on): streams then wait for their caller's attestation. */
  catalogFor?: SdsServiceDeps['catalogFor'];
  log: Logger;
  bundleFormat?: BundleFormatSetting;
  hooks?: StreamHooks;
  /** API versions served on the socket; both by default. */
  apis?: ApiVersion[];
  /** Connection and stream limits; each unset field takes its default from DEFAULT_TRANSPORT_LIMITS. */
  limits?: Partial<TransportLimits>;
  /**
   * Start even if other users can write the socket directory (or one above it), with a warning
   * instead of SDS_ERR_SOCKET_DIR_UNSAFE: for a directory shared on purpose, such as a Kubernetes
   * emptyDir that only the pod's containers see.
   */
  allowSharedSocketDirectory?: boolean;
  /** Test hook, see BindOptions.afterBind. */
  afterBind?: BindOptions['afterBind'];
  /**
   * Attest every accepted connection (peer credentials, workload attestors). When set, each
   * connection's `remoteAddress` -- so grpc-js's `call.getPeer()` -- is `sds-conn:<id>` and
   * {@link SdsServer.callerOf} gives its caller; a connection whose peer credentials cannot be read
   * is closed at once.
   */
  attestation?: CallerAttestation;
  /** Told of each attestation's outcome (metrics: `sds_attestation_total`). Must not throw. */
  onAttestation?: (result: 'granted' | 'refused') => void;
}

/** Prefix of the peer tag (`call.getPeer()`) of an attested connection: `sds-conn:<id>`. */
export const CONNECTION_TAG_PREFIX = 'sds-conn:';

/** grpc-js options of the SDS server (exported for the benchmark's floor server). */
export const GRPC_SERVER_OPTIONS: grpc.ServerOptions = {
  // Envoy multiplexes one stream per secret on one connection; do not cap them.
  'grpc.max_concurrent_streams': 0x7fffffff,
  // Channelz bookkeeping runs on every message of every call; nothing here reads it.
  'grpc.enable_channelz': 0,
};

/**
 * Accept queue of the socket. grpc-js listens with Node's default (511), and a Unix socket whose
 * queue is full refuses `connect()` at once (EAGAIN), so a few thousand Envoys starting together
 * would see refusals. The kernel caps this at net.core.somaxconn (4096 on current kernels).
 */
export const LISTEN_BACKLOG = 4096;

/** The SDS gRPC server on a Unix domain socket, serving v3 and v2 side by side. */
export class SdsServer {
  readonly streams = new StreamRegistry();
  private server: grpc.Server | undefined;
  private listener: net.Server | undefined;
  private guard: ConnectionGuard | undefined;
  private readonly callers = new Map<string, Promise<Caller>>();
  /** Peer credentials (SO_PEERCRED) of each open attested connection, by tag: /clients shows them. */
  private readonly peers = new Map<string, { pid: number; uid: number; gid: number }>();
  private nextConnectionId = 1;
  /** Open connections per uid (attestation on), for `maxConnectionsPerUid`. */
  private readonly openPerUid = new Map<number, number>();
  private maxConnectionsPerUid = Infinity;
  private overUidLimit: RateLimitedWarning | undefined;
  /** `caller attested` at info, at most one line per 10 s (a flood would write one per connection). */
  private attestedInfo: RateLimitedWarning | undefined;

  constructor(private readonly options: SdsServerOptions) {}

  get socketPath(): string {
    return this.options.socketPath;
  }

  /** What the connection guard did so far (zeros before start). */
  connectionStats(): ConnectionGuardStats | undefined {
    return this.guard?.stats();
  }

  async start(): Promise<void> {
    const { socketPath, log } = this.options;
    const mode = this.options.socketMode ?? 0o660;
    const group = this.options.socketGroup;
    await checkSocketPath(socketPath);
    const { created, groupBlocked, unsafe } = await prepareSocketDirectory(path.dirname(socketPath), {
      mode,
      ...(group !== undefined ? { group } : {}),
      allowShared: this.options.allowSharedSocketDirectory === true,
    });
    if (unsafe) log.warn('socket directory is shared (allowed by allowSharedDirectory): other users could replace the socket', { socket: socketPath, problem: unsafe });
    if (groupBlocked) log.warn('the socket group cannot reach the socket', { socket: socketPath, problem: groupBlocked });
    if (created) log.info('created socket directory', { directory: path.dirname(socketPath), mode: directoryModeFor(mode).toString(8), ...(group !== undefined ? { group } : {}) });
    const { removedStale } = await prepareSocketPath(socketPath);
    if (removedStale) log.info('removed stale socket left by a previous process', { socket: socketPath });
    if (mode & 0o006) {
      log.warn('socket mode lets every local user connect: any of them can take every identity this server serves', { socket: socketPath, mode: mode.toString(8) });
    }

    const { limits, note } = effectiveLimits(this.options.limits, openFileSoftLimit());
    if (note) log[note.level](note.msg, note.fields);
    this.maxConnectionsPerUid = limits.maxConnectionsPerUid;
    this.overUidLimit = new RateLimitedWarning(log, 'refusing connection: too many open connections from one uid (limit maxConnectionsPerUid)');
    this.attestedInfo = new RateLimitedWarning(log, 'caller attested', 10_000, undefined, 'info');
    const server = new grpc.Server({ ...GRPC_SERVER_OPTIONS, 'grpc.max_concurrent_streams': limits.maxStreamsPerConnection });
    const nonces = new NonceSource();
    for (const api of this.options.apis ?? [V3, V2]) {
      const { definition, implementation } = createSdsService(api, {
        catalog: this.options.catalog,
        ...(this.options.catalogFor ? { catalogFor: this.options.catalogFor, callerOf: (peer: string) => this.callerOf(peer) } : {}),
        nonces,
        log,
        hooks: this.options.hooks ?? {},
        bundleFormat: this.options.bundleFormat ?? 'auto',
        streams: this.streams,
      });
      server.addService(definition, implementation);
    }
    // We accept connections ourselves (to choose the backlog and guard them) and hand them to grpc-js.
    const injector = server.createConnectionInjector(grpc.ServerCredentials.createInsecure());
    const guard = new ConnectionGuard(limits, log, (socket) => injector.injectConnection(socket));
    guard.watch(injectorHttp2Server(server));
    const attestation = this.options.attestation;
    // Peer credentials first (SO_PEERCRED must be read before anything else touches the socket),
    // then the connection cap and the preface wait.
    const listener = net.createServer((socket) => {
      if (attestation && !this.admit(socket, attestation)) return;
      guard.accept(socket);
    });
    await bindPrivately(listener, socketPath, { mode, ...(group !== undefined ? { group } : {}), backlog: LISTEN_BACKLOG, ...(this.options.afterBind ? { afterBind: this.options.afterBind } : {}) });
    listener.on('error', (err) => log.error('socket listener error', { socket: socketPath, error: err.message }));
    this.server = server;
    this.listener = listener;
    this.guard = guard;
    log.info('listening', { socket: socketPath, apis: (this.options.apis ?? [V3, V2]).map((a) => a.label), limits });
  }

  /**
   * The caller behind a gRPC peer string (`call.getPeer()`), while its connection is open: a promise
   * of the attested caller that rejects with an `SdsError` when attestation failed (fail closed).
   * Undefined when attestation is off or the peer is unknown (its connection has closed).
   */
  callerOf(peer: string): Promise<Caller> | undefined {
    return this.callers.get(peer);
  }

  /** The peer credentials of an open connection (by `call.getPeer()`), when attestation is on. */
  peerCredentialsOf(peer: string): { pid: number; uid: number; gid: number } | undefined {
    return this.peers.get(peer);
  }

  /** Number of open connections with an attestation entry (for tests and `/status`). */
  get attestedConnections(): number {
    return this.callers.size;
  }

  /**
   * Reads the peer credentials of a just-accepted socket (synchronously, before anything else can
   * touch it), starts its attestation and tags it. False if it was refused and closed.
   */
  private admit(socket: net.Socket, attestation: CallerAttestation): boolean {
    const log = this.options.log;
    let started: ConnectionAttestation;
    try {
      started = attestation.begin(socket);
    } catch (err) {
      const code = err instanceof SdsError ? err.code : ErrorCode.PeerCredentials;
      log.warn('connection refused: cannot read its peer credentials', { code, error: (err as Error).message });
      socket.destroy();
      return false;
    }
    const { peer, caller } = started;
    const open = this.openPerUid.get(peer.uid) ?? 0;
    if (open >= this.maxConnectionsPerUid) {
      socket.destroy();
      this.overUidLimit?.warn({ uid: peer.uid, open, maxConnectionsPerUid: this.maxConnectionsPerUid });
      // The attestation already started settles on its own; nothing waits on it.
      caller.catch(() => {});
      return false;
    }
    this.openPerUid.set(peer.uid, open + 1);
    const tag = `${CONNECTION_TAG_PREFIX}${this.nextConnectionId++}`;
    // grpc-js reads socket.remoteAddress for call.getPeer(); without a remotePort it returns it as is.
    Object.defineProperty(socket, 'remoteAddress', { value: tag, configurable: true, enumerable: true });
    this.callers.set(tag, caller);
    this.peers.set(tag, { pid: peer.pid, uid: peer.uid, gid: peer.gid });
    socket.once('close', () => {
      this.callers.delete(tag);
      this.peers.delete(tag);
      const n = (this.openPerUid.get(peer.uid) ?? 1) - 1;
      if (n > 0) this.openPerUid.set(peer.uid, n);
      else this.openPerUid.delete(peer.uid);
    });
    caller.then(
      (c) => {
        this.options.onAttestation?.('granted');
        // Every connection at debug; at info one line per window, with the count of the others.
        const fields = { connection: tag, pid: c.pid, uid: c.uid, gid: c.gid, selectors: c.selectors };
        log.debug('connection attested', fields);
        this.attestedInfo?.warn(fields);
      },
      (err: unknown) => {
        this.options.onAttestation?.('refused');
        log.warn('caller attestation failed', {
          connection: tag,
          pid: peer.pid,
          uid: peer.uid,
          gid: peer.gid,
          code: err instanceof SdsError ? err.code : ErrorCode.AttestationFailed,
          error: err instanceof Error ? err.message : String(err),
        });
      },
    );
    return true;
  }

  /** Stops accepting, ends every stream with status OK, waits up to `graceMs`, removes the socket. */
  async stop(graceMs = 5000): Promise<void> {
    const server = this.server;
    this.server = undefined;
    if (!server) return;
    const listener = this.listener;
    this.listener = undefined;
    // Stop accepting first (the listening socket closes now; the callback waits for the
    // connections it accepted, which are ended below).
    const listenerClosed = new Promise<void>((resolve) => (listener ? listener.close(() => resolve()) : resolve()));
    this.guard?.closeWaiting();
    this.streams.endAll();
    // Let every stream's OK trailers go out (and its peer close it) before the sessions close:
    // GOAWAY and the socket's end must come after them, not cut them (bounded by graceMs).
    const started = performance.now();
    await this.guard?.streamsClosed(graceMs);
    graceMs = Math.max(1, graceMs - (performance.now() - started));
    const graceful = await new Promise<boolean>((resolve) => {
      const timer = setTimeout(() => {
        server.forceShutdown();
        resolve(false);
      }, graceMs);
      server.tryShutdown(() => {
        clearTimeout(timer);
        resolve(true);
      });
    });
    // Every session is closed: the listener's close completes as their sockets go.
    if (graceful) {
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([listenerClosed, new Promise<void>((resolve) => (timer = setTimeout(resolve, graceMs)))]);
      clearTimeout(timer);
    }
    await removeSocket(this.options.socketPath);
    this.options.log.info('stopped', { socket: this.options.socketPath, ...(this.guard ? { connections: this.guard.stats() } : {}) });
  }
}

/**
 * The HTTP/2 server behind the connection injector grpc-js just created. grpc-js keeps it in a
 * private map (`http2Servers`, insertion order, so the injector's is the last); the guard needs its
 * 'session' and 'stream' events. Fails start-up loudly if a grpc-js upgrade moves it.
 */
function injectorHttp2Server(server: grpc.Server): EventEmitter {
  const servers = (server as unknown as { http2Servers?: Map<EventEmitter, unknown> }).http2Servers;
  const last = servers instanceof Map ? [...servers.keys()].pop() : undefined;
  if (!last || typeof last.on !== 'function') {
    throw new SdsError(ErrorCode.SocketSetup, 'grpc-js no longer exposes the HTTP/2 server of a connection injector (Server.http2Servers); the connection guard cannot watch sessions');
  }
  return last;
}
