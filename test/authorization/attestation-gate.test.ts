import { afterEach, describe, expect, it } from 'vitest';
import * as grpc from '@grpc/grpc-js';
import { SecretStore } from '../../src/secrets/store.js';
import { SdsServer } from '../../src/server/sds-server.js';
import { createLogger } from '../../src/core/logger.js';
import { ErrorCode, SdsError } from '../../src/core/errors.js';
import { CallerAttestation, type PeerCredentials, type WorkloadAttestor } from '../../src/attestation/index.js';
import { Authorization } from '../../src/authorization/authorization.js';
import { SdsTestClient, envoyNode } from '../helpers/sds-client.js';
import { bundleValue, rootCa, tlsValue } from '../helpers/identities.js';
import { makeTempDir, removeTempDir, waitFor } from '../helpers/files.js';
import path from 'node:path';

/**
 * The SDS service waits for a caller's attestation before its state machine sees any request, and
 * a failed attestation ends the stream with UNAVAILABLE and the attestation's code (as SPIRE).
 * The workload attestor here is a TEST DOUBLE the test releases or fails; peer credentials are
 * real (SO_PEERCRED of this process).
 */
class ControlledAttestor implements WorkloadAttestor {
  readonly name = 'test-double';
  readonly asked: PeerCredentials[] = [];
  private settle: { resolve: (s: string[]) => void; reject: (e: Error) => void } | undefined;

  attest(peer: PeerCredentials): Promise<string[]> {
    this.asked.push(peer);
    return new Promise((resolve, reject) => (this.settle = { resolve, reject }));
  }
  release(selectors: string[]): void {
    this.settle?.resolve(selectors);
  }
  fail(err: Error): void {
    this.settle?.reject(err);
  }
}

const FRONT = 'spiffe://example.org/front';

describe('streams wait for the caller attestation (attestor test double)', () => {
  let stop: (() => Promise<void>) | undefined;
  afterEach(async () => {
    await stop?.();
    stop = undefined;
  });

  const start = async () => {
    const dir = await makeTempDir('sds-gate-');
    const ca = await rootCa('example.org');
    const store = new SecretStore();
    store.declare(FRONT, 'tls-certificate');
    store.declare('spiffe://example.org', 'trust-bundle');
    store.publish(FRONT, (await tlsValue(ca, FRONT)).value);
    store.publish('spiffe://example.org', bundleValue('example.org', ca));
    store.markSettled();
    const log = createLogger({ level: 'error', write: () => undefined });
    const attestor = new ControlledAttestor();
    const authorization = new Authorization({ store, policy: { workloads: [{ selectors: ['test:caller:front'], identities: [FRONT] }], trustDomain: 'example.org' }, log });
    const server = new SdsServer({ socketPath: path.join(dir, 'sds.sock'), catalog: store, log, attestation: new CallerAttestation({ attestors: [attestor] }), catalogFor: (c, o) => authorization.catalogFor(c, o) });
    await server.start();
    const client = new SdsTestClient(server.socketPath);
    stop = async () => {
      client.close();
      await server.stop(500);
      await removeTempDir(dir);
    };
    return { attestor, client, authorization, server, store };
  };

  it('a request that arrives before the caller is attested is answered once it is, not before', async () => {
    const { attestor, client } = await start();
    const stream = client.stream();
    stream.send({ node: envoyNode(), resource_names: [FRONT], type_url: client.typeUrl });
    await waitFor('the attestor to be asked about this process', () => attestor.asked.length === 1);
    expect(attestor.asked[0]?.pid).toBe(process.pid);
    expect(stream.pending).toBe(0); // nothing answered while the caller is unknown
    attestor.release(['test:caller:front']);
    const res = await stream.next();
    expect(res.resources).toHaveLength(1);
    stream.cancel();
  });

  it('a stream the client cancels while its caller is attested leaves nothing behind (no watch, no connection record)', async () => {
    const { attestor, client, authorization, server, store } = await start();
    const stream = client.stream();
    stream.send({ node: envoyNode(), resource_names: [FRONT], type_url: client.typeUrl });
    await waitFor('the attestor to be asked', () => attestor.asked.length === 1);
    await waitFor('the stream to be open on the server', () => server.streams.open.size === 1);
    stream.cancel();
    await waitFor('the server to see the stream gone', () => server.streams.open.size === 0);
    attestor.release(['test:caller:front']);
    // A later stream on the same (now attested) connection is served; the release has been handled by then.
    const next = client.stream();
    next.send({ node: envoyNode(), resource_names: ['spiffe://example.org'], type_url: client.typeUrl });
    await next.next();
    expect(attestor.asked).toHaveLength(1);
    expect(store.watcherCount).toBe(1); // only the second stream's
    expect(authorization.status().connections?.map((c) => c.streams)).toEqual([1]);
    next.cancel();
  });

  it("Delta and Fetch see the caller's view too: its identity (also as `default`) is served, another is PERMISSION_DENIED", async () => {
    const { attestor, client, store } = await start();
    store.declare('spiffe://example.org/back', 'tls-certificate');
    store.publish('spiffe://example.org/back', (await tlsValue(await rootCa('example.org'), 'spiffe://example.org/back')).value);
    const delta = client.delta();
    delta.send({ node: envoyNode(), type_url: client.typeUrl, resource_names_subscribe: ['default', 'spiffe://example.org'] });
    await waitFor('the attestor to be asked', () => attestor.asked.length === 1);
    attestor.release(['test:caller:front']);
    const res = await delta.next();
    expect(res.resources.map((r) => r.name).sort()).toEqual(['default', 'spiffe://example.org']);
    const refused = client.delta();
    refused.send({ node: envoyNode(), type_url: client.typeUrl, resource_names_subscribe: ['spiffe://example.org/back'] });
    expect(await refused.ended).toMatchObject({ code: grpc.status.PERMISSION_DENIED, details: expect.stringMatching(/^SDS_ERR_PERMISSION_DENIED: secret "spiffe:\/\/example.org\/back" is not granted to caller uid=\d+ pid=\d+ selectors=\[test:caller:front\]$/) });
    await expect(client.fetch({ node: envoyNode(), resource_names: ['spiffe://example.org/back'], type_url: client.typeUrl })).rejects.toMatchObject({ code: grpc.status.PERMISSION_DENIED });
    const fetched = await client.fetch({ node: envoyNode(), resource_names: [FRONT], type_url: client.typeUrl });
    expect(fetched.resources).toHaveLength(1);
    // The refused stream and Fetch did not disturb the first stream.
    store.publish(FRONT, (await tlsValue(await rootCa('example.org'), FRONT)).value);
    expect((await delta.next()).resources.map((r) => r.name)).toEqual(['default']);
    delta.cancel();
  });

  it.each([
    ['an attestor error', new Error('cannot read /proc/123/status'), ErrorCode.AttestationFailed],
    ['the pid-reuse guard', new SdsError(ErrorCode.PidReused, 'caller pid 123 now belongs to another process'), ErrorCode.PidReused],
  ])('a failed attestation (%s) ends the stream with UNAVAILABLE and the code, and refuses Fetch the same way', async (_, err, code) => {
    const { attestor, client } = await start();
    const stream = client.stream();
    stream.send({ node: envoyNode(), resource_names: [FRONT], type_url: client.typeUrl });
    await waitFor('the attestor to be asked', () => attestor.asked.length === 1);
    attestor.fail(err);
    const end = await stream.ended;
    expect(end.code).toBe(grpc.status.UNAVAILABLE);
    expect(end.details).toMatch(new RegExp(`^${code}: could not attest the caller: `));
    // The connection's attestation failed once; a Fetch on it is refused the same way.
    await expect(client.fetch({ node: envoyNode(), resource_names: [FRONT], type_url: client.typeUrl })).rejects.toMatchObject({ code: grpc.status.UNAVAILABLE });
  });
});
