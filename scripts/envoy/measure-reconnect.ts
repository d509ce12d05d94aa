/**
 * Measures how fast a real Envoy's SDS streams come back after sds-server restarts, SotW against
 * Delta (issue #9): one Envoy with two secrets over SotW and two over Delta, Envoy's default
 * reconnect back-off (500 ms base, 30 s max). Each round restarts the server N times in a row and
 * prints, per restart, the ms until every stream of each kind is open again, and the totals.
 *
 *   npx tsx scripts/envoy/measure-reconnect.ts [--restarts 5] [--rounds 3] [--unified-mux]
 *
 * `--unified-mux` runs Envoy with `envoy.reloadable_features.unified_mux` (its other xDS mux).
 *
 * Needs Envoy: ENVOY_BIN, `envoy` on PATH, or `bash scripts/envoy/install-envoy.sh`.
 */
import { findEnvoy, INSTALL_HINT, envoyVersion } from '../../test/envoy/find-envoy.js';
import type { EnvoyProcess } from '../../test/envoy/harness.js';
import { describeFigures, measureRestarts, startSdsListenersEnvoy, total, type SecretOverApi } from '../../test/envoy/reconnect.js';
import { FileSecretsServer, spiffeId } from '../../test/envoy/sds-fixture.js';

function intArg(argv: string[], flag: string, fallback: number): number {
  const i = argv.indexOf(flag);
  const value = i >= 0 ? Number(argv[i + 1]) : fallback;
  if (!Number.isInteger(value) || value < 1) throw new Error(`${flag} expects a positive integer, got ${argv[i + 1]}`);
  return value;
}

async function main(): Promise<number> {
  const argv = process.argv.slice(2);
  const restarts = intArg(argv, '--restarts', 5);
  const rounds = intArg(argv, '--rounds', 3);
  const runtime = argv.includes('--unified-mux') ? { 'envoy.reloadable_features.unified_mux': true } : undefined;
  const found = findEnvoy();
  if (!found.found) {
    console.error(`measure-reconnect: ${found.problem}; ${INSTALL_HINT}`);
    return 1;
  }
  console.log(`Envoy ${envoyVersion(found.bin) ?? '?'} (${found.bin}); ${rounds} rounds of ${restarts} restarts in a row${runtime ? ', unified_mux' : ''}`);
  const secrets: SecretOverApi[] = [
    { id: spiffeId('sotw-a'), apiType: 'GRPC' },
    { id: spiffeId('sotw-b'), apiType: 'GRPC' },
    { id: spiffeId('delta-a'), apiType: 'DELTA_GRPC' },
    { id: spiffeId('delta-b'), apiType: 'DELTA_GRPC' },
  ];
  const totals = { sotw: [] as number[], delta: [] as number[] };
  for (let round = 1; round <= rounds; round++) {
    // A fresh Envoy per round: its back-off starts from the first step.
    const server = await FileSecretsServer.create(secrets.map((s) => s.id));
    let envoy: EnvoyProcess | undefined;
    try {
      await server.start();
      envoy = await startSdsListenersEnvoy(found.bin, server, secrets, `measure-reconnect-${round}`, runtime);
      const figures = await measureRestarts(server, secrets, restarts, 40_000);
      totals.sotw.push(total(figures.sotw));
      totals.delta.push(total(figures.delta));
      console.log(`round ${round}: streams back after each restart (ms): ${describeFigures(figures)}`);
    } finally {
      await envoy?.stop();
      await server.close();
    }
  }
  console.log(`totals over ${restarts} restarts (ms): SotW [${totals.sotw.join(', ')}]; Delta [${totals.delta.join(', ')}]`);
  return 0;
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    console.error(err);
    process.exit(1);
  },
);
