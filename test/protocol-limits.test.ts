import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as grpc from '@grpc/grpc-js';
import { startServer, type RunningServer } from './helpers/server.js';
import { SdsTestClient, envoyNode } from './helpers/sds-client.js';
import { bundleValue, rootCa, tlsValue } from './helpers/identities.js';

/**
 * What one client can make the server echo, over the real socket: a 1 MiB resource name or 10,000
 * unknown names must still give the client its INVALID_ARGUMENT (a `grpc-message` too large for a
 * header never arrives), within 1 s, and no log line from these paths may be large. NACK floods
 * are logged at a bounded rate.
 */
const FRONT = 'spiffe://example.org/front';
const TD = 'spiffe://example.org';
const HUGE = `spiffe://example.org/${'h'.repeat(1 << 20)}`;
const MANY = Array.from({ length: 10_000 }, (_, i) => `spiffe://example.org/unknown-${i}`);
const MAX_LOG_LINE = 2048;

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
    ['a 1 MiB name', [HUGE], /^SDS_ERR_UNKNOWN_SECRET: secret "spiffe:\/\/example\.org\/h+\.\.\.\(\d+ more chars\)" is not configured on this server$/],
    ['10,000 unknown names', MANY, /and 9997 more \(10000 names\) are not configured/],
  ])('StreamSecrets with %s ends with INVALID_ARGUMENT at the client within 1 s', async (_label, names, pattern) => {
    const s = client.stream();
    const started = performance.now();
    // A 1 MiB node id too: the 'ending stream' log line must stay small.
    s.send({ node: { ...envoyNode(), id: 'n'.repeat(1 << 20) }, resource_names: names, type_url: client.typeUrl });
    const end = await s.ended;
    const elapsed = performance.now() - started;
    expect(end.code).toBe(grpc.status.INVALID_ARGUMENT);
    expect(end.details).toMatch(pattern);
    expect(end.details.length).toBeLessThan(600);
    expect(elapsed).toBeLessThan(1000);
    expect(longestLogLine()).toBeLessThan(MAX_LOG_LINE);
    await expect.poll(() => srv.store.watcherCount).toBe(0);
  });

  it.each([
    ['a 1 MiB name', [HUGE]],
    ['10,000 unknown names', MANY],
  ])('FetchSecrets with %s fails with INVALID_ARGUMENT at the client within 1 s', async (_label, names) => {
    const started = performance.now();
    // A 1 MiB node id too: the refusal's log line must stay small.
    const node = { ...envoyNode(), id: 'n'.repeat(1 << 20) };
    const err = await client.fetch({ node, resource_names: names, type_url: client.typeUrl }).then(
      () => undefined,
      (e: grpc.ServiceError) => e,
    );
    expect(performance.now() - started).toBeLessThan(1000);
    expect(err?.code).toBe(grpc.status.INVALID_ARGUMENT);
    expect(err?.details).toContain('SDS_ERR_UNKNOWN_SECRET');
    expect(err?.details.length).toBeLessThan(600);
    expect(longestLogLine()).toBeLessThan(MAX_LOG_LINE);
  });

  it('DeltaSecrets with 10,000 unknown names answers removed_resources and keeps the stream open', async () => {
    const d = client.delta();
    const started = performance.now();
    d.send({ node: envoyNode(), type_url: client.typeUrl, resource_names_subscribe: [FRONT, ...MANY] });
    const res = await d.next();
    expect(performance.now() - started).toBeLessThan(1000);
    expect(res.resources.map((r) => r.name)).toEqual([FRONT]);
    expect(res.removed_resources).toHaveLength(10_000);
    d.send({ type_url: client.typeUrl, response_nonce: res.nonce, resource_names_subscribe: [TD] });
    expect((await d.next()).resources.map((r) => r.name)).toEqual([TD]);
    d.end();
    expect((await d.ended).code).toBe(grpc.status.OK);
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
    expect((await s.next(10_000)).resources).toHaveLength(2);
    const nackLines = srv.logs.slice(before).filter((l) => String(l.msg).includes('NACK'));
    expect(nackLines).toHaveLength(1);
    expect(nackLines[0]).toMatchObject({ secrets: [FRONT], reason: 'rejected #0' });
    s.cancel();
    // The summary line at stream end carries the count of NACKs not logged.
    await expect.poll(() => srv.logs.slice(before).find((l) => l.suppressed === 4999)).toBeDefined();
  });
});
