import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { SecretStore, type SecretStoreOptions } from '../../src/secrets/store.js';
import { SdsServer, type SdsServerOptions } from '../../src/server/sds-server.js';
import { createLogger } from '../../src/core/logger.js';

export interface RunningServer {
  store: SecretStore;
  server: SdsServer;
  socketPath: string;
  dir: string;
  /** Every log line the server wrote, parsed. */
  logs: Array<Record<string, unknown>>;
  stop(): Promise<void>;
}

/** A real SdsServer on a real Unix socket in a fresh temp dir, logging to memory. */
export async function startServer(
  opts: { store?: SecretStoreOptions; server?: Partial<Omit<SdsServerOptions, 'catalog' | 'log'>> } = {},
): Promise<RunningServer> {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'sds-test-'));
  const socketPath = opts.server?.socketPath ?? path.join(dir, 'sds.sock');
  const logs: Array<Record<string, unknown>> = [];
  const log = createLogger({ level: 'debug', write: (line) => logs.push(JSON.parse(line) as Record<string, unknown>) });
  const store = new SecretStore(opts.store);
  const server = new SdsServer({ ...opts.server, socketPath, catalog: store, log });
  await server.start();
  return {
    store,
    server,
    socketPath,
    dir,
    logs,
    stop: async () => {
      await server.stop(1000);
      await fs.rm(dir, { recursive: true, force: true });
    },
  };
}
