import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as grpc from '@grpc/grpc-js';
import { startServer, type RunningServer } from './helpers/server.js';
import { SdsTestClient, envoyNode } from './helpers/sds-client.js';
import { rootCa, tlsValue } from './helpers/identities.js';

const FRONT = 'spiffe://example.org/front';
// A length-delimited field claiming 5 bytes with 1 following, then an invalid wire type.
const GARBAGE = Buffer.concat([Buffer.from([0x12, 0x05, 0x01]), Buffer.from('not protobuf')]);
const identity = (b: Buffer): Buffer => b;

/** What a broken or hostile peer can do: send bytes that are not a request at all. */
describe('malformed requests from a client', () => {
  let srv: RunningServer;
  beforeAll(async () => {
    srv = await startServer();
    srv.store.declare(FRONT, 'tls-certificate');
    srv.store.publish(FRONT, (await tlsValue(await rootCa('example.org'), FRONT)).value);
    srv.store.markSettled();
  });
  afterAll(async () => {
    await srv.stop();
  });

  it.each([
    'envoy.service.secret.v3.SecretDiscoveryService/StreamSecrets',
    'envoy.service.secret.v3.SecretDiscoveryService/DeltaSecrets',
    'envoy.service.discovery.v2.SecretDiscoveryService/StreamSecrets',
  ])('ends %s with INVALID_ARGUMENT, and keeps serving others', async (method) => {
    const client = new grpc.Client(`unix:${srv.socketPath}`, grpc.credentials.createInsecure());
    const call = client.makeBidiStreamRequest(`/${method}`, identity, identity);
    const end = new Promise<grpc.ServiceError>((resolve) => call.on('error', resolve));
    call.on('data', () => {});
    call.write(GARBAGE);
    const err = await end;
    expect(err.code).toBe(grpc.status.INVALID_ARGUMENT);
    expect(err.details).toContain('SDS_ERR_BAD_REQUEST');
    client.close();

    const good = new SdsTestClient(srv.socketPath);
    const s = good.stream();
    s.send({ node: envoyNode(), resource_names: [FRONT], type_url: good.typeUrl });
    expect((await s.next()).resources).toHaveLength(1);
    s.end();
    good.close();
  });

  it('answers FetchSecrets garbage with INVALID_ARGUMENT and leaves no stream behind', async () => {
    const client = new grpc.Client(`unix:${srv.socketPath}`, grpc.credentials.createInsecure());
    const err = await new Promise<grpc.ServiceError | null>((resolve) =>
      client.makeUnaryRequest('/envoy.service.secret.v3.SecretDiscoveryService/FetchSecrets', identity, identity, GARBAGE, (e) => resolve(e)),
    );
    expect(err?.code).toBe(grpc.status.INVALID_ARGUMENT);
    client.close();
    await expect.poll(() => srv.server.streams.open.size).toBe(0);
  });
});
