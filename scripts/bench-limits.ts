/**
 * Issue 9's figure for hostile requests: a 1 MiB resource name, or 10,000 unknown names, must get
 * INVALID_ARGUMENT at the client within 1 s. Measures send -> status at the client over the real
 * Unix socket (server and client in this one process, so the figure includes the client's own
 * encoding of the 1 MiB / 10,000-name request). Run: npm run bench:limits
 */
import * as grpc from '@grpc/grpc-js';
import { startServer } from '../test/helpers/server.js';
import { SdsTestClient, envoyNode } from '../test/helpers/sds-client.js';
import { rootCa, tlsValue } from '../test/helpers/identities.js';

const FRONT = 'spiffe://example.org/front';
const HUGE = `spiffe://example.org/${'h'.repeat(1 << 20)}`;
const MANY = Array.from({ length: 10_000 }, (_, i) => `spiffe://example.org/unknown-${i}`);
const ROUNDS = Number(process.env.ROUNDS ?? 9);

async function main(): Promise<void> {
  const srv = await startServer();
  srv.store.declare(FRONT, 'tls-certificate');
  srv.store.publish(FRONT, (await tlsValue(await rootCa('example.org'), FRONT)).value);
  srv.store.markSettled();
  const client = new SdsTestClient(srv.socketPath, 'v3');

  const cases: Array<[string, () => Promise<number>]> = [
    ['StreamSecrets, 1 MiB name', () => stream(client, [HUGE])],
    ['StreamSecrets, 10,000 unknown names', () => stream(client, MANY)],
    ['DeltaSecrets, 1 MiB name', () => delta(client, [HUGE])],
    ['FetchSecrets, 1 MiB name', () => fetch(client, [HUGE])],
    ['FetchSecrets, 10,000 unknown names', () => fetch(client, MANY)],
  ];
  console.log(`| request | median ms | max ms (${ROUNDS} rounds) | target |`);
  console.log('|---|---|---|---|');
  for (const [label, run] of cases) {
    const times: number[] = [];
    for (let i = 0; i < ROUNDS; i++) times.push(await run());
    times.sort((a, b) => a - b);
    const median = times[Math.floor(times.length / 2)]!;
    const max = times[times.length - 1]!;
    console.log(`| ${label} | ${median.toFixed(1)} | ${max.toFixed(1)} | <= 1000 ${max <= 1000 ? 'met' : '**NOT MET**'} |`);
  }
  const longest = Math.max(...srv.logs.map((l) => JSON.stringify(l).length));
  console.log(`\nlongest server log line: ${longest} characters`);
  client.close();
  await srv.stop();
}

async function stream(client: SdsTestClient, names: string[]): Promise<number> {
  const s = client.stream();
  const t0 = performance.now();
  s.send({ node: envoyNode(), resource_names: names, type_url: client.typeUrl });
  const end = await s.ended;
  if (end.code !== grpc.status.INVALID_ARGUMENT) throw new Error(`expected INVALID_ARGUMENT, got ${end.code} ${end.details}`);
  return performance.now() - t0;
}

async function delta(client: SdsTestClient, names: string[]): Promise<number> {
  const d = client.delta();
  const t0 = performance.now();
  d.send({ node: envoyNode(), type_url: client.typeUrl, resource_names_subscribe: names });
  const end = await d.ended;
  if (end.code !== grpc.status.INVALID_ARGUMENT) throw new Error(`expected INVALID_ARGUMENT, got ${end.code} ${end.details}`);
  return performance.now() - t0;
}

async function fetch(client: SdsTestClient, names: string[]): Promise<number> {
  const t0 = performance.now();
  const err = await client.fetch({ node: envoyNode(), resource_names: names, type_url: client.typeUrl }).then(
    () => undefined,
    (e: grpc.ServiceError) => e,
  );
  if (err?.code !== grpc.status.INVALID_ARGUMENT) throw new Error(`expected INVALID_ARGUMENT, got ${String(err?.code)}`);
  return performance.now() - t0;
}

await main();
