import * as grpc from '@grpc/grpc-js';
import type { SecretCatalog } from '../secrets/store.js';
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
  log: Logger;
  bundleFormat?: BundleFormatSetting;
  hooks?: StreamHooks;
  /** API versions served on the socket; both by default. */
  apis?: ApiVersion[];
}

/** The SDS gRPC server on a Unix domain socket, serving v3 and v2 side by side. */
export class SdsServer {
  readonly streams = new StreamRegistry();
  private server: grpc.Server | undefined;

  constructor(private readonly options: SdsServerOptions) {}

  get socketPath(): string {
    return this.options.socketPath;
  }

  async start(): Promise<void> {
    const { socketPath, log } = this.options;
    const { removedStale } = await prepareSocketPath(socketPath);
    if (removedStale) log.info('removed stale socket left by a previous process', { socket: socketPath });

    const server = new grpc.Server({
      // Envoy multiplexes one stream per secret on one connection; do not cap them.
      'grpc.max_concurrent_streams': 0x7fffffff,
    });
    const nonces = new NonceSource();
    for (const api of this.options.apis ?? [V3, V2]) {
      const { definition, implementation } = createSdsService(api, {
        catalog: this.options.catalog,
        nonces,
        log,
        hooks: this.options.hooks ?? {},
        bundleFormat: this.options.bundleFormat ?? 'auto',
        streams: this.streams,
      });
      server.addService(definition, implementation);
    }
    await new Promise<void>((resolve, reject) => {
      server.bindAsync(`unix:${socketPath}`, grpc.ServerCredentials.createInsecure(), (err) => {
        if (err) reject(new SdsError(ErrorCode.SocketSetup, `cannot listen on ${socketPath}: ${err.message}`));
        else resolve();
      });
    });
    this.server = server;
    await applySocketPermissions(socketPath, this.options.socketMode ?? 0o660, this.options.socketGroup);
    log.info('listening', { socket: socketPath, apis: (this.options.apis ?? [V3, V2]).map((a) => a.label) });
  }

  /** Stops accepting, ends every stream with status OK, waits up to `graceMs`, removes the socket. */
  async stop(graceMs = 5000): Promise<void> {
    const server = this.server;
    this.server = undefined;
    if (!server) return;
    this.streams.endAll();
    await new Promise<void>((resolve) => {
      const timer = setTimeout(() => {
        server.forceShutdown();
        resolve();
      }, graceMs);
      server.tryShutdown(() => {
        clearTimeout(timer);
        resolve();
      });
    });
    await removeSocket(this.options.socketPath);
    this.options.log.info('stopped', { socket: this.options.socketPath });
  }
}
