/**
 * Cost of the stream hooks on the push path (issue 12): per 10,000 responses, the StreamStats hook
 * alone (before metrics) against StreamStats + ClientTracker + SdsMetrics. `npx tsx scripts/bench/hooks-cost.ts`.
 */
import { SecretStore } from '../../src/secrets/store.js';
import { StreamRegistry } from '../../src/server/sds-service.js';
import { SdsMetrics, combineHooks } from '../../src/ops/metrics.js';
import { ClientTracker } from '../../src/ops/clients.js';
import { StreamStats } from '../../src/ops/stream-stats.js';
import { silentLogger } from '../../src/core/logger.js';
const store = new SecretStore({ aliases: {} as never, log: silentLogger } as never);
const streams = new StreamRegistry();
const metrics = new SdsMetrics({ store, streams, sources: () => [] });
const clients = new ClientTracker(streams, silentLogger);
const stats = new StreamStats();
const N = 10_000;
for (const [label, hooks] of [['StreamStats only (before)', stats], ['stats + clients + metrics (now)', combineHooks(stats, clients, metrics)]] as const) {
  const runs: number[] = [];
  for (let r = 0; r < 7; r++) {
    const t = performance.now();
    for (let i = 0; i < N; i++) hooks.onResponse!({ streamId: i + 1, names: ['spiffe://example.org/front'], versionInfo: 'v' + r, nonce: 'n' });
    runs.push(performance.now() - t);
  }
  runs.sort((a, b) => a - b);
  console.log(label, `median ${runs[3]!.toFixed(2)} ms per ${N} responses`);
}
