/**
 * How fast a real Envoy's SDS streams come back after sds-server restarts, SotW against Delta,
 * under identical conditions: one Envoy, one TLS listener per secret, some secrets over `GRPC`
 * and some over `DELTA_GRPC`, all with Envoy's default reconnect back-off. Used by
 * test/envoy/delta-reconnect.test.ts and scripts/envoy/measure-reconnect.ts. No vitest here.
 */
import { performance } from 'node:perf_hooks';
import type { StreamReportEntry } from '../../src/ops/status.js';
import { EnvoyProcess, freePorts, type Config, sdsListenersBootstrap, sdsTlsListener, waitUntil, writeBootstrap, type SdsApiType } from './harness.js';
import type { FileSecretsServer } from './sds-fixture.js';

export type StreamKind = 'sotw' | 'delta';
export const kindOf = (apiType: SdsApiType): StreamKind => (apiType === 'GRPC' ? 'sotw' : 'delta');

export interface SecretOverApi {
  id: string;
  apiType: SdsApiType;
}

/** One Envoy, one TLS listener per secret, each secret over its API type, Envoy's default back-off. */
export async function startSdsListenersEnvoy(bin: string, server: FileSecretsServer, secrets: SecretOverApi[], name: string, runtime?: Config): Promise<EnvoyProcess> {
  const ports = await freePorts(secrets.length + 1);
  const adminPort = ports[0]!;
  const listeners = secrets.map((s, i) => sdsTlsListener({ name: `l${i}`, port: ports[i + 1]!, certificate: s.id, sds: { apiType: s.apiType, backOff: 'envoy-default' } }));
  const bootstrap = await writeBootstrap(server.dir, name, sdsListenersBootstrap({ nodeId: name, adminPort, socketPath: server.socketPath(), listeners, ...(runtime ? { runtime } : {}) }));
  return EnvoyProcess.start({ bin, name, bootstrapFile: bootstrap, adminPort });
}

/** The open stream of `kind` that named `id` (it exists once its first request has arrived). */
export function streamOf(server: FileSecretsServer, kind: StreamKind, id: string): StreamReportEntry | undefined {
  return server.streams().find((s) => s.kind === kind && s.named.includes(id));
}

/**
 * Every secret has an open stream, and every response written on it has been ACKed (Envoy has
 * read it, so whatever back-off reset it causes has happened).
 */
export function settled(server: FileSecretsServer, secrets: SecretOverApi[]): boolean {
  return secrets.every((s) => {
    const stream = streamOf(server, kindOf(s.apiType), s.id);
    return stream !== undefined && (stream.sent.length === 0 || stream.requests >= 2);
  });
}

/** Per restart, ms from starting the server until every stream of each kind is open again. */
export type RestartFigures = Record<StreamKind, number[]>;

/**
 * Restarts `server` `restarts` times in a row (stop, start with the same files, so Delta clients'
 * `initial_resource_versions` match) and measures, per restart and kind, the time until every
 * secret of that kind has an open stream whose first request arrived. Waits for every response
 * to be ACKed before the next restart. Throws after `timeoutMs` for one restart.
 */
export async function measureRestarts(server: FileSecretsServer, secrets: SecretOverApi[], restarts: number, timeoutMs = 20_000): Promise<RestartFigures> {
  const kinds = [...new Set(secrets.map((s) => kindOf(s.apiType)))];
  const allBack = (kind: StreamKind): boolean => secrets.filter((s) => kindOf(s.apiType) === kind).every((s) => streamOf(server, kind, s.id) !== undefined);
  await waitUntil('every SDS stream to be open and settled', () => settled(server, secrets), { timeoutMs: 10_000 });
  const figures: RestartFigures = { sotw: [], delta: [] };
  for (let restart = 1; restart <= restarts; restart++) {
    await server.stop();
    const startedAt = performance.now();
    await server.start();
    const backAt: Partial<Record<StreamKind, number>> = {};
    await waitUntil(
      `restart ${restart}: every stream to be back`,
      () => {
        for (const kind of kinds) if (backAt[kind] === undefined && allBack(kind)) backAt[kind] = performance.now();
        return kinds.every((k) => backAt[k] !== undefined);
      },
      { timeoutMs, intervalMs: 5 },
    );
    for (const kind of kinds) figures[kind].push(Math.round(backAt[kind]! - startedAt));
    await waitUntil(`restart ${restart}: responses ACKed`, () => settled(server, secrets), { timeoutMs: 5_000 });
  }
  return figures;
}

export const total = (xs: number[]): number => xs.reduce((a, b) => a + b, 0);

/** `SotW [..] total N; Delta [..] total M` */
export function describeFigures(figures: RestartFigures): string {
  return `SotW [${figures.sotw.join(', ')}] total ${total(figures.sotw)}; Delta [${figures.delta.join(', ')}] total ${total(figures.delta)}`;
}
