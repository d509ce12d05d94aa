/**
 * An in-process sds-server serving leaf certificates from files for a set of SPIFFE IDs (one
 * directory per identity, rotated by write-temp-and-rename), plus a trust bundle nobody needs to
 * ask for: a stream that is sent it, or another identity's certificate, got what it did not name.
 * Restartable with the same files (equal content gives equal versions across restarts) or with
 * some identities left out of the configuration. Nothing here imports vitest.
 */
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { startApp, type RunningApp } from '../../src/cli/app.js';
import { defaultConfig, type ServerConfig } from '../../src/cli/config.js';
import { createLogger } from '../../src/core/logger.js';
import type { StreamReportEntry } from '../../src/ops/status.js';
import { createRootCa, issueLeaf, type CertificateAuthority, type IssuedLeaf } from '../../src/x509/issue.js';
import { RenameWriter } from '../helpers/files.js';
import { afterEach, beforeEach } from 'vitest';
import type { EnvoyProcess } from './harness.js';

export const TRUST_DOMAIN = 'example.org';
export const BUNDLE = `spiffe://${TRUST_DOMAIN}`;
export const spiffeId = (workload: string): string => `spiffe://${TRUST_DOMAIN}/${workload}`;

export class FileSecretsServer {
  /** sds-server log lines (JSON), across restarts. */
  readonly log: string[] = [];
  app: RunningApp | undefined;
  readonly leaves = new Map<string, IssuedLeaf>();
  private readonly writers = new Map<string, RenameWriter>();
  private bundleWriter!: RenameWriter;

  private constructor(
    readonly dir: string,
    readonly ca: CertificateAuthority,
    readonly ids: string[],
  ) {}

  readonly socketPath = (): string => path.join(this.dir, 'sds.sock');

  /** Writes a CA bundle and one leaf per SPIFFE ID; the server is not started. */
  static async create(ids: string[]): Promise<FileSecretsServer> {
    const dir = await mkdtemp(path.join(tmpdir(), 'sds-envoy9-'));
    const ca = await createRootCa({ commonName: `${TRUST_DOMAIN} test root`, trustDomain: TRUST_DOMAIN });
    const server = new FileSecretsServer(dir, ca, ids);
    server.bundleWriter = new RenameWriter(path.join(dir, 'bundle'));
    await mkdir(server.bundleWriter.dir);
    await server.bundleWriter.init({ 'ca.pem': ca.certPem });
    for (const [i, id] of ids.entries()) {
      const writer = new RenameWriter(path.join(dir, `id${i}`));
      await mkdir(writer.dir);
      server.writers.set(id, writer);
      await server.rotate(id);
    }
    return server;
  }

  /** Issues a new leaf for `id` and renames it into place; resolves with it. */
  async rotate(id: string): Promise<IssuedLeaf> {
    const writer = this.writers.get(id);
    if (!writer) throw new Error(`no identity ${id}`);
    const leaf = await issueLeaf(this.ca, { spiffeId: id });
    await writer.rotate({ 'tls.crt': leaf.chainPem, 'tls.key': leaf.keyPem });
    this.leaves.set(id, leaf);
    return leaf;
  }

  /** Server configuration serving `ids` (default: all) and the bundle. */
  config(ids: string[] = this.ids): ServerConfig {
    const config = defaultConfig();
    config.socket.path = this.socketPath();
    config.certificates = ids.map((id) => {
      const writer = this.writers.get(id);
      if (!writer) throw new Error(`no identity ${id}`);
      return { name: id, cert: writer.path('tls.crt'), key: writer.path('tls.key'), names: [] };
    });
    config.bundles = [{ name: BUNDLE, ca: [this.bundleWriter.path('ca.pem')], trustDomain: TRUST_DOMAIN, names: [] }];
    return config;
  }

  async start(ids?: string[]): Promise<RunningApp> {
    if (this.app) throw new Error('sds-server is already running');
    const logger = createLogger({ level: 'info', write: (line) => this.log.push(line) });
    this.app = await startApp(this.config(ids), logger);
    return this.app;
  }

  async stop(): Promise<void> {
    const app = this.app;
    this.app = undefined;
    await app?.stop();
  }

  /** Open streams with their names (the server's `/streams` report). */
  streams(): StreamReportEntry[] {
    return this.app?.streams().open ?? [];
  }

  /** Open streams and the streams that ended recently (the last 64), from `/streams`. */
  allStreams(): StreamReportEntry[] {
    const report = this.app?.streams();
    return report ? [...report.recentlyClosed, ...report.open] : [];
  }

  /** Streams opened since this server instance started. */
  openedTotal(): number {
    return this.app?.streams().openedTotal ?? 0;
  }

  async close(): Promise<void> {
    await this.stop();
    await rm(this.dir, { recursive: true, force: true });
  }
}

/** Streams that were sent a secret name they never named: must always be empty. */
export function streamsSentUnnamed(streams: StreamReportEntry[]): Array<{ id: number; kind: string; named: string[]; sent: string[]; unnamed: string[] }> {
  return streams
    .map((s) => ({ id: s.id, kind: s.kind, named: s.named, sent: s.sent, unnamed: s.sent.filter((n) => !s.named.includes(n)) }))
    .filter((s) => s.unnamed.length > 0);
}

/** What a failed Envoy test prints: the server's /streams, Envoy's output and the server's log. */
/**
 * One FileSecretsServer and one Envoy per test, in `held`: both are stopped after each test, and a
 * failing test prints the server's /streams, Envoy's output and the server's log (failureReport).
 */
export function perTestSdsAndEnvoy(): { sds?: FileSecretsServer; envoy?: EnvoyProcess } {
  const held: { sds?: FileSecretsServer; envoy?: EnvoyProcess } = {};
  beforeEach((ctx) => {
    ctx.onTestFailed(() => console.error(failureReport(ctx.task.name, held.sds, held.envoy)));
  });
  afterEach(async () => {
    await held.envoy?.stop();
    await held.sds?.close();
    delete held.envoy;
    delete held.sds;
  });
  return held;
}

export function failureReport(test: string, sds: FileSecretsServer | undefined, envoy: { output(): string } | undefined): string {
  return `----- ${test} -----\n/streams: ${JSON.stringify(sds?.app?.streams() ?? {}, null, 1)}\n----- Envoy output -----\n${envoy?.output() ?? '(no Envoy)'}\n----- sds-server log -----\n${sds?.log.join('\n') ?? ''}`;
}

