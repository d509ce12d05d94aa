import net from 'node:net';
import * as grpc from '@grpc/grpc-js';
import type { SecretCatalog } from '../secrets/store.js';
import type { SdsServiceDeps } from './sds-service.js';
import type { Logger } from '../ops/logger.js';
import { ErrorCode, SdsError } from '../ops/errors.js';
import { V2, V3, type ApiVersion } from '../api/api-version.js';
import { NonceSource } from '../xds/nonce.js';
import type { BundleFormatSetting } from '../xds/bundle-format.js';
import type { StreamHooks } from '../xds/types.js';
import { createSdsService, StreamRegistry } from './sds-service.js';
import { applySocketPermissions, prepareSocketPath, removeSocket } from './unix-socket.js';

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
}

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

  constructor(private readonly options: SdsServerOptions) {}

  get socketPath(): string {
    return this.options.socketPath;
  }

  async start(): Promise<void> {
    const { socketPath, log } = this.options;
    const { removedStale } = await prepareSocketPath(socketPath);
    if (removedStale) log.info('removed stale socket left by a previous process', { socket: socketPath });

    const server = new grpc.Server(GRPC_SERVER_OPTIONS);
    const nonces = new NonceSource();
    for (const api of this.options.apis ?? [V3, V2]) {
      const { definition, implementation } = createSdsService(api, {
        catalog: this.options.catalog,
        ...(this.options.catalogFor ? { catalogFor: this.options.catalogFor } : {}),
        nonces,
        log,
        hooks: this.options.hooks ?? {},
        bundleFormat: this.options.bundleFormat ?? 'auto',
        streams: this.streams,
      });
      server.addService(definition, implementation);
    }
    // We accept connections ourselves (to choose the backlog) and hand them to grpc-js.
    const injector = server.createConnectionInjector(grpc.ServerCredentials.createInsecure());
    const listener = net.createServer((socket) => injector.injectConnection(socket));
    await new Promise<void>((resolve, reject) => {
      listener.once('error', (err) => reject(new SdsError(ErrorCode.SocketSetup, `cannot listen on ${socketPath}: ${err.message}`)));
      listener.listen({ path: socketPath, backlog: LISTEN_BACKLOG }, () => resolve());
    });
    listener.on('error', (err) => log.error('socket listener error', { socket: socketPath, error: err.message }));
    this.server = server;
    this.listener = listener;
    await applySocketPermissions(socketPath, this.options.socketMode ?? 0o660, this.options.socketGroup);
    log.info('listening', { socket: socketPath, apis: (this.options.apis ?? [V3, V2]).map((a) => a.label) });
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
    this.streams.endAll();
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
    this.options.log.info('stopped', { socket: this.options.socketPath });
  }
}
