import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import * as grpc from '@grpc/grpc-js';
import { X509Certificate } from 'node:crypto';
import { startServer, type RunningServer } from './helpers/server.js';
import { SdsTestClient, decodeSecret, envoyNode, type ApiLabel } from './helpers/sds-client.js';
import { bundleValue, rootCa, tlsValue } from './helpers/identities.js';
import type { CertificateAuthority } from '../src/x509/issue.js';

const FRONT = 'spiffe://example.org/front';
const TD = 'spiffe://example.org';

let srv: RunningServer;
let ca: CertificateAuthority;

beforeEach(async () => {
  srv = await startServer();
  ca = await rootCa('example.org');
  srv.store.declare(FRONT, 'tls-certificate');
  srv.store.declare(TD, 'trust-bundle');
  srv.store.publish(FRONT, (await tlsValue(ca, FRONT)).value);
  srv.store.publish(TD, bundleValue('example.org', ca));
  srv.store.markSettled();
});

afterEach(async () => {
  await srv.stop();
});

const serialOfSecret = (value: Buffer): string =>
  new X509Certificate(decodeSecret({ type_url: '', value }).tls_certificate!.certificate_chain!.inline_bytes!).serialNumber;

describe('DeltaSecrets (v3 incremental)', () => {
  let client: SdsTestClient;
  beforeEach(() => {
    client = new SdsTestClient(srv.socketPath, 'v3');
  });
  afterEach(() => client.close());

  it('sends subscribed secrets with per-resource versions, and later only what changed', async () => {
    const d = client.delta();
    d.send({ node: envoyNode(), type_url: client.typeUrl, resource_names_subscribe: [FRONT, TD] });
    const first = await d.next();
    expect(first.type_url).toBe(client.typeUrl);
    expect(first.system_version_info).not.toBe('');
    expect(first.resources.map((r) => r.name).sort()).toEqual([FRONT, TD].sort());
    for (const r of first.resources) {
      expect(r.version).toBe(srv.store.get(r.name)?.version);
      expect(decodeSecret(r.resource!).name).toBe(r.name);
    }
    d.send({ type_url: client.typeUrl, response_nonce: first.nonce });
    expect(await d.nothingWithin(300)).toBe(true);

    const rotated = await tlsValue(ca, FRONT);
    srv.store.publish(FRONT, rotated.value);
    const second = await d.next();
    expect(second.resources.map((r) => r.name)).toEqual([FRONT]);
    expect(serialOfSecret(second.resources[0]!.resource!.value)).toBe(rotated.leaf.serialNumber);
    expect(second.nonce).not.toBe(first.nonce);
    expect(second.system_version_info).not.toBe(first.system_version_info);
    d.end();
  });

  it('skips what the client already holds after a reconnect (initial_resource_versions)', async () => {
    const d1 = client.delta();
    d1.send({ node: envoyNode(), type_url: client.typeUrl, resource_names_subscribe: [FRONT, TD] });
    const first = await d1.next();
    const versions = Object.fromEntries(first.resources.map((r) => [r.name, r.version]));
    d1.cancel();

    const d2 = client.delta();
    srv.store.publish(FRONT, (await tlsValue(ca, FRONT)).value); // changed while disconnected
    d2.send({ node: envoyNode(), type_url: client.typeUrl, resource_names_subscribe: [FRONT, TD], initial_resource_versions: versions });
    const again = await d2.next();
    expect(again.resources.map((r) => r.name)).toEqual([FRONT]);
    d2.end();
  });

  it('answers a new subscription on a live stream and stops pushing after unsubscribe', async () => {
    const d = client.delta();
    d.send({ node: envoyNode(), type_url: client.typeUrl, resource_names_subscribe: [FRONT] });
    const first = await d.next();
    d.send({ type_url: client.typeUrl, response_nonce: first.nonce, resource_names_subscribe: [TD] });
    const second = await d.next();
    expect(second.resources.map((r) => r.name)).toEqual([TD]);
    d.send({ type_url: client.typeUrl, response_nonce: second.nonce, resource_names_unsubscribe: [FRONT] });
    srv.store.publish(FRONT, (await tlsValue(ca, FRONT)).value);
    expect(await d.nothingWithin(300)).toBe(true);
    d.end();
  });

  it('logs a NACK and does not resend the rejected version', async () => {
    const d = client.delta();
    d.send({ node: envoyNode(), type_url: client.typeUrl, resource_names_subscribe: [FRONT] });
    const first = await d.next();
    d.send({ type_url: client.typeUrl, response_nonce: first.nonce, error_detail: { code: 13, message: 'bad cert' } });
    expect(await d.nothingWithin(300)).toBe(true);
    expect(srv.logs.some((l) => String(l.msg).includes('NACK') && l.reason === 'bad cert')).toBe(true);
    d.end();
  });

  it('tells a client that holds a secret which is removed (removed_resources)', async () => {
    const d = client.delta();
    d.send({ node: envoyNode(), type_url: client.typeUrl, resource_names_subscribe: [FRONT, TD] });
    const first = await d.next();
    d.send({ type_url: client.typeUrl, response_nonce: first.nonce });
    srv.store.remove(TD);
    const second = await d.next();
    expect(second.removed_resources).toEqual([TD]);
    expect(second.resources).toHaveLength(0);
    d.end();
  });

  it('holds a configured but unavailable secret, and answers an unknown one with removed_resources without ending the stream', async () => {
    const LATE = 'spiffe://example.org/late';
    srv.store.declare(LATE, 'tls-certificate');
    const d = client.delta();
    d.send({ node: envoyNode(), type_url: client.typeUrl, resource_names_subscribe: [LATE] });
    expect(await d.nothingWithin(300)).toBe(true);
    srv.store.publish(LATE, (await tlsValue(ca, LATE)).value);
    expect((await d.next()).resources.map((r) => r.name)).toEqual([LATE]);

    // Used to end the stream with INVALID_ARGUMENT; Delta now says "does not exist" the xDS way.
    const other = client.delta();
    other.send({ node: envoyNode(), type_url: client.typeUrl, resource_names_subscribe: ['nope'] });
    const gone = await other.next();
    expect(gone.removed_resources).toEqual(['nope']);
    expect(gone.resources).toHaveLength(0);
    other.send({ type_url: client.typeUrl, response_nonce: gone.nonce, resource_names_subscribe: [FRONT] });
    expect((await other.next()).resources.map((r) => r.name)).toEqual([FRONT]);
    other.end();
    expect((await other.ended).code).toBe(grpc.status.OK);
    d.end();
  });

  it('a reconnect subscribing [front, gone] with initial versions gets removed_resources [gone], and its ACK and NACK keep the stream open', async () => {
    const GONE = 'spiffe://example.org/gone';
    const d = client.delta();
    d.send({
      node: envoyNode(),
      type_url: client.typeUrl,
      resource_names_subscribe: [FRONT, GONE],
      initial_resource_versions: { [FRONT]: srv.store.get(FRONT)!.version, [GONE]: 'v-before-restart' },
    });
    const first = await d.next();
    expect(first.resources).toHaveLength(0);
    expect(first.removed_resources).toEqual([GONE]);
    d.send({ type_url: client.typeUrl, response_nonce: first.nonce });
    d.send({ type_url: client.typeUrl, response_nonce: first.nonce, error_detail: { code: 13, message: 'whatever' } });
    const rotated = await tlsValue(ca, FRONT);
    srv.store.publish(FRONT, rotated.value);
    const push = await d.next();
    expect(push.resources.map((r) => r.name)).toEqual([FRONT]);
    d.send({ type_url: client.typeUrl, response_nonce: push.nonce });
    expect(await d.nothingWithin(200)).toBe(true);
    d.end();
    expect((await d.ended).code).toBe(grpc.status.OK);
  });

  it('answers a reconnect that already holds every current version with one empty response', async () => {
    const d = client.delta();
    d.send({
      node: envoyNode(),
      type_url: client.typeUrl,
      resource_names_subscribe: [FRONT, TD],
      initial_resource_versions: { [FRONT]: srv.store.get(FRONT)!.version, [TD]: srv.store.get(TD)!.version },
    });
    const first = await d.next();
    expect(first.resources).toHaveLength(0);
    expect(first.removed_resources).toHaveLength(0);
    expect(first.nonce).not.toBe('');
    d.send({ type_url: client.typeUrl, response_nonce: first.nonce });
    expect(await d.nothingWithin(200)).toBe(true);
    d.end();
  });

  it('treats a first request without names as a wildcard subscription', async () => {
    const d = client.delta();
    d.send({ node: envoyNode(), type_url: client.typeUrl });
    const first = await d.next();
    expect(first.resources.map((r) => r.name).sort()).toEqual([FRONT, TD].sort());
    d.end();
  });
});

describe.each<ApiLabel>(['v3', 'v2'])('FetchSecrets (%s)', (api) => {
  let client: SdsTestClient;
  beforeEach(() => {
    client = new SdsTestClient(srv.socketPath, api);
  });
  afterEach(() => client.close());

  it('returns the named secret with the version type URL', async () => {
    const res = await client.fetch({ node: envoyNode(), resource_names: [FRONT], type_url: client.typeUrl });
    expect(res.type_url).toBe(client.typeUrl);
    expect(res.resources).toHaveLength(1);
    expect(res.resources[0]?.type_url).toBe(client.typeUrl);
    expect(decodeSecret(res.resources[0]!).name).toBe(FRONT);
  });

  it('returns every secret for empty names, INVALID_ARGUMENT for an unknown one, UNAVAILABLE for one not ready', async () => {
    const all = await client.fetch({ node: envoyNode(), type_url: client.typeUrl });
    expect(all.resources.map((r) => decodeSecret(r).name).sort()).toEqual([FRONT, TD].sort());
    await expect(client.fetch({ resource_names: ['nope'] })).rejects.toMatchObject({ code: grpc.status.INVALID_ARGUMENT });
    srv.store.declare('later', 'tls-certificate');
    await expect(client.fetch({ resource_names: ['later'] })).rejects.toMatchObject({ code: grpc.status.UNAVAILABLE, details: expect.stringContaining('"later"') });
  });
});

describe('StreamSecrets v2 (App Mesh Envoy 1.15-1.16)', () => {
  it('serves v2 Secrets with the v2 type URL and trusted_ca bundles, and pushes rotations', async () => {
    const client = new SdsTestClient(srv.socketPath, 'v2');
    const s = client.stream();
    s.send({ node: envoyNode({ version: [1, 15, 1] }), resource_names: [FRONT], type_url: client.typeUrl });
    const first = await s.next();
    expect(first.type_url).toBe('type.googleapis.com/envoy.api.v2.auth.Secret');
    expect(first.resources[0]?.type_url).toBe('type.googleapis.com/envoy.api.v2.auth.Secret');
    s.send({ version_info: first.version_info, resource_names: [FRONT], type_url: client.typeUrl, response_nonce: first.nonce });
    const rotated = await tlsValue(ca, FRONT);
    srv.store.publish(FRONT, rotated.value);
    const second = await s.next();
    expect(serialOfSecret(second.resources[0]!.value)).toBe(rotated.leaf.serialNumber);

    // v2 has no custom validator: even an Envoy that would take it gets trusted_ca.
    const b = client.stream();
    b.send({ node: envoyNode({ version: [1, 40, 0] }), resource_names: [TD], type_url: client.typeUrl });
    const bundle = decodeSecret((await b.next()).resources[0]!);
    expect(bundle.validation_context?.trusted_ca?.inline_bytes?.toString()).toBe(ca.certPem);
    s.end();
    b.end();
    client.close();
  });

  it('rejects a v3 type URL on the v2 service', async () => {
    const client = new SdsTestClient(srv.socketPath, 'v2');
    const s = client.stream();
    s.send({ resource_names: [FRONT], type_url: 'type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret' });
    expect((await s.ended).code).toBe(grpc.status.INVALID_ARGUMENT);
    client.close();
  });
});
