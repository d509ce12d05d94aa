import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as grpc from '@grpc/grpc-js';
import { startServer, type RunningServer } from './helpers/server.js';
import { SdsTestClient, envoyNode } from './helpers/sds-client.js';
import { bundleValue, rootCa, tlsValue } from './helpers/identities.js';

/**
 * What one client can make the server echo, over the real socket: a 1 MiB resource name or 10,000
 * unknown names must still give the client its INVALID_ARGUMENT (a `grpc-message` too large for a
 * header never arrives), and no log line from these paths may be large. NACK floods
 * are logged at a bounded rate.
 */
const FRONT = 'spiffe://example.org/front';
const TD = 'spiffe://example.org';
const HUGE = `spiffe://example.org/${'h'.repeat(1 << 20)}`;
const MANY = Array.from({ length: 10_000 }, (_, i) => `spiffe://example.org/unknown-${i}`);
const MAX_LOG_LINE = 2048;
/**
 * On main these statuses never arrive. The 1 s figure is measured by scripts/bench-limits.ts
 * (a timed unit test on a shared 2-core machine is flaky); here a generous guard catches a hang.
 */
const GUARD_MS = 5000;

let srv: RunningServer;
let client: SdsTestClient;

beforeAll(async () => {
  srv = await startServer();
  const ca = await rootCa('example.org');
  srv.store.declare(FRONT, 'tls-certificate');
  srv.store.declare(TD, 'trust-bundle');
  srv.store.publish(FRONT, (await tlsValue(ca, FRONT)).value);
  srv.store.publish(TD, bundleValue('example.org', ca));
  srv.store.markSettled();
  client = new SdsTestClient(srv.socketPath, 'v3');
});

afterAll(async () => {
  client.close();
  await srv.stop();
});

const longestLogLine = (): number => Math.max(...srv.logs.map((l) => JSON.stringify(l).length));

describe('bounded grpc-message and log lines', () => {
  it.each([
    ['a 1 MiB name', [HUGE], /^SDS_ERR_BAD_REQUEST: resource name of 1048597 characters is longer than 2048 \(the SPIFFE ID limit\): "spiffe:\/\/example\.org\/h+\.\.\.\(1048497 more chars\)"$/],
    ['10,000 unknown names', MANY, /and 9997 more \(10000 names\) are not configured/],
  ])('StreamSecrets with %s ends with INVALID_ARGUMENT at the client promptly (the 1 s figure: npm run bench:limits)', async (_label, names, pattern) => {
    const s = client.stream();
    const started = performance.now();
    // A 1 MiB node id too: the 'ending stream' log line must stay small.
    s.send({ node: { ...envoyNode(), id: 'n'.repeat(1 << 20) }, resource_names: names, type_url: client.typeUrl });
    const end = await s.ended;
    const elapsed = performance.now() - started;
    expect(end.code).toBe(grpc.status.INVALID_ARGUMENT);
    expect(end.details).toMatch(pattern);
    expect(end.details.length).toBeLessThan(600);
    expect(elapsed).toBeLessThan(GUARD_MS);
    expect(longestLogLine()).toBeLessThan(MAX_LOG_LINE);
    await expect.poll(() => srv.store.watcherCount).toBe(0);
  });

  it.each([
    ['a 1 MiB name', [HUGE], 'SDS_ERR_BAD_REQUEST'],
    ['10,000 unknown names', MANY, 'SDS_ERR_UNKNOWN_SECRET'],
  ])('FetchSecrets with %s fails with INVALID_ARGUMENT at the client promptly (the 1 s figure: npm run bench:limits)', async (_label, names, code) => {
    const started = performance.now();
    // A 1 MiB node id too: the refusal's log line must stay small.
    const node = { ...envoyNode(), id: 'n'.repeat(1 << 20) };
    const err = await client.fetch({ node, resource_names: names, type_url: client.typeUrl }).then(
      () => undefined,
      (e: grpc.ServiceError) => e,
    );
    expect(performance.now() - started).toBeLessThan(GUARD_MS);
    expect(err?.code).toBe(grpc.status.INVALID_ARGUMENT);
    expect(err?.details).toContain(code);
    expect(err?.details.length).toBeLessThan(600);
    expect(longestLogLine()).toBeLessThan(MAX_LOG_LINE);
  });

  it('DeltaSecrets with a 1 MiB name ends with INVALID_ARGUMENT at the client promptly (the 1 s figure: npm run bench:limits)', async () => {
    const d = client.delta();
    const started = performance.now();
    d.send({ node: envoyNode(), type_url: client.typeUrl, resource_names_subscribe: [FRONT, HUGE] });
    const end = await d.ended;
    expect(performance.now() - started).toBeLessThan(GUARD_MS);
    expect(end.code).toBe(grpc.status.INVALID_ARGUMENT);
    expect(end.details).toMatch(/^SDS_ERR_BAD_REQUEST: resource name of 1048597 characters/);
    expect(end.details.length).toBeLessThan(600);
    expect(longestLogLine()).toBeLessThan(MAX_LOG_LINE);
  });

  it('DeltaSecrets keeps unknown names subscribed (removed_resources) but at most 1,024 per stream: 10,000 at once, or a few at a time, end it with RESOURCE_EXHAUSTED', async () => {
    const d = client.delta();
    const started = performance.now();
    d.send({ node: envoyNode(), type_url: client.typeUrl, resource_names_subscribe: [FRONT, ...MANY] });
    const end = await d.ended;
    expect(performance.now() - started).toBeLessThan(GUARD_MS);
    expect(end.code).toBe(grpc.status.RESOURCE_EXHAUSTED);
    expect(end.details).toBe('SDS_ERR_BAD_REQUEST: a stream may subscribe at most 1024 names; this one asked for 10001');

    // Under the cap, unknown names are answered as removed and the stream stays open...
    const g = client.delta();
    g.send({ node: envoyNode(), type_url: client.typeUrl, resource_names_subscribe: [FRONT, ...MANY.slice(0, 1000)] });
    const res = await g.next();
    expect(res.resources.map((r) => r.name)).toEqual([FRONT]);
    expect(res.removed_resources).toHaveLength(1000);
    g.send({ type_url: client.typeUrl, response_nonce: res.nonce, resource_names_subscribe: [TD] });
    const next = await g.next();
    expect(next.resources.map((r) => r.name)).toEqual([TD]);
    // ...until names pile up past it across requests (a client growing our memory one request at a time).
    g.send({ type_url: client.typeUrl, response_nonce: next.nonce, resource_names_subscribe: MANY.slice(1000, 1100) });
    const grown = await g.ended;
    expect(grown.code).toBe(grpc.status.RESOURCE_EXHAUSTED);
    expect(grown.details).toContain('asked for 1102');
    expect(longestLogLine()).toBeLessThan(MAX_LOG_LINE);
  });
});

describe('NACK flood on one stream', () => {
  it('5,000 NACKs write one NACK log line, not 5,000', async () => {
    const before = srv.logs.length;
    const s = client.stream();
    s.send({ node: envoyNode(), resource_names: [FRONT], type_url: client.typeUrl });
    const first = await s.next();
    for (let i = 0; i < 5000; i++) {
      s.send({ version_info: '', resource_names: [FRONT], type_url: client.typeUrl, response_nonce: first.nonce, error_detail: { code: 13, message: `rejected #${i}` } });
    }
    // Requests are handled in order: the answer to this name change means every NACK was seen.
    s.send({ version_info: '', resource_names: [FRONT, TD], type_url: client.typeUrl, response_nonce: first.nonce });
    expect((await s.next(50_000)).resources).toHaveLength(2);
    const nackLines = srv.logs.slice(before).filter((l) => String(l.msg).includes('NACK'));
    expect(nackLines).toHaveLength(1);
    expect(nackLines[0]).toMatchObject({ secrets: [FRONT], reason: 'rejected #0' });
    s.cancel();
    // The summary line at stream end carries the count of NACKs not logged.
    await expect.poll(() => srv.logs.slice(before).find((l) => l.suppressed === 4999)).toBeDefined();
  }, 60_000);
});
