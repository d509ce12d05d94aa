/**
 * `sds-server fetch` against an SDS server that serves StreamSecrets only (as Istio's agent does):
 * FetchSecrets answers UNIMPLEMENTED, so fetch falls back to one StreamSecrets response. The server
 * here is a test double (a bare grpc-js server with only StreamSecrets) on a real Unix socket.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as grpc from '@grpc/grpc-js';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { decodeAs, messageType } from '../src/api/proto-root.js';
import type { Secret } from '../src/api/generated/envoy/extensions/transport_sockets/tls/v3/Secret.js';
import type { DiscoveryRequest__Output } from '../src/api/generated/envoy/service/discovery/v3/DiscoveryRequest.js';
import type { DiscoveryResponse } from '../src/api/generated/envoy/service/discovery/v3/DiscoveryResponse.js';
import { fetchSecret, formatFetched } from '../src/cli/fetch-command.js';
import { createRootCa, issueLeaf, type IssuedLeaf } from '../src/x509/issue.js';

const SECRET_TYPE_URL = 'type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret';

describe('fetch against a StreamSecrets-only SDS server (test double)', () => {
  let dir: string;
  let server: grpc.Server;
  let leaf: IssuedLeaf;
  const requested: string[][] = [];

  beforeAll(async () => {
    dir = await fs.mkdtemp(path.join(os.tmpdir(), 'sds-fetch-'));
    const ca = await createRootCa({ commonName: 'istio root', trustDomain: 'cluster.local' });
    leaf = await issueLeaf(ca, { spiffeId: 'spiffe://cluster.local/ns/default/sa/front' });
    const Secret = messageType('envoy.extensions.transport_sockets.tls.v3.Secret');
    const Request = messageType('envoy.service.discovery.v3.DiscoveryRequest');
    const Response = messageType('envoy.service.discovery.v3.DiscoveryResponse');
    const secretObj: Secret = { name: 'default', tls_certificate: { certificate_chain: { inline_bytes: Buffer.from(leaf.chainPem) }, private_key: { inline_bytes: Buffer.from(leaf.keyPem) } } };
    const secret = Secret.encode(Secret.fromObject(secretObj)).finish();
    const response: DiscoveryResponse = { version_info: 'v7', type_url: SECRET_TYPE_URL, resources: [{ type_url: SECRET_TYPE_URL, value: secret }] };
    const raw = (b: Buffer): Buffer => b;
    server = new grpc.Server();
    server.addService(
      {
        StreamSecrets: { path: '/envoy.service.secret.v3.SecretDiscoveryService/StreamSecrets', requestStream: true, responseStream: true, requestSerialize: raw, requestDeserialize: raw, responseSerialize: raw, responseDeserialize: raw },
      },
      {
        StreamSecrets: (call: grpc.ServerDuplexStream<Buffer, Buffer>) => {
          call.on('data', (b: Buffer) => {
            requested.push(decodeAs<DiscoveryRequest__Output>(Request, b).resource_names);
            call.write(Buffer.from(Response.encode(Response.fromObject(response)).finish()));
          });
          call.on('error', () => undefined);
          call.on('end', () => call.end());
        },
      },
    );
    await new Promise<void>((resolve, reject) => server.bindAsync(`unix:${path.join(dir, 'sds.sock')}`, grpc.ServerCredentials.createInsecure(), (err) => (err ? reject(err) : resolve())));
  });
  afterAll(async () => {
    server?.forceShutdown();
    await fs.rm(dir, { recursive: true, force: true });
  });

  it('falls back to StreamSecrets and summarises the certificate without the key', async () => {
    const fetched = await fetchSecret(path.join(dir, 'sds.sock'), 'default', 5_000);
    expect(requested).toEqual([['default']]);
    expect(fetched).toMatchObject({ name: 'default', version: 'v7', kind: 'tls-certificate' });
    expect(fetched.chain?.[0]).toMatchObject({ serialNumber: leaf.serialNumber, uris: ['spiffe://cluster.local/ns/default/sa/front'] });
    const text = formatFetched(fetched) + JSON.stringify(fetched);
    expect(text).not.toMatch(/PRIVATE KEY/);
    expect(text).not.toContain(leaf.keyPem.split('\n')[1]);
  });
});
