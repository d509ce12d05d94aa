import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import * as grpc from '@grpc/grpc-js';
import { X509Certificate } from 'node:crypto';
import { startServer, type RunningServer } from './helpers/server.js';
import { SdsTestClient, decodeSecret, envoyNode } from './helpers/sds-client.js';
import type { DiscoveryResponse__Output } from '../src/api/generated/envoy/service/discovery/v3/DiscoveryResponse.js';
import { bundleValue, rootCa, tlsValue } from './helpers/identities.js';
import type { CertificateAuthority } from '../src/x509/issue.js';

const FRONT = 'spiffe://example.org/front';
const TD = 'spiffe://example.org';

function serialOf(res: DiscoveryResponse__Output, index = 0): string {
  const resource = res.resources[index];
  if (!resource) throw new Error('response has no resource at ' + index);
  const chain = decodeSecret(resource).tls_certificate?.certificate_chain?.inline_bytes;
  if (!chain) throw new Error('resource is not a TLS certificate');
  return new X509Certificate(chain).serialNumber;
}

describe('StreamSecrets (v3 state of the world) over a Unix socket', () => {
  let srv: RunningServer;
  let client: SdsTestClient;
  let ca: CertificateAuthority;

  beforeEach(async () => {
    srv = await startServer();
    ca = await rootCa('example.org');
    srv.store.declare(FRONT, 'tls-certificate');
    srv.store.declare(TD, 'trust-bundle');
    srv.store.publish(FRONT, (await tlsValue(ca, FRONT)).value);
    srv.store.publish(TD, bundleValue('example.org', ca));
    srv.store.markSettled();
    client = new SdsTestClient(srv.socketPath, 'v3');
  });

  afterEach(async () => {
    client.close();
    await srv.stop();
  });

  it('answers the first request with exactly the named secret, inline, leaf first', async () => {
    const s = client.stream();
    s.send({ node: envoyNode(), resource_names: [FRONT], type_url: client.typeUrl });
    const res = await s.next();
    expect(res.type_url).toBe(client.typeUrl);
    expect(res.resources).toHaveLength(1);
    expect(res.resources[0]?.type_url).toBe(client.typeUrl);
    const secret = decodeSecret(res.resources[0]!);
    expect(secret.name).toBe(FRONT);
    const chain = secret.tls_certificate?.certificate_chain?.inline_bytes?.toString() ?? '';
    const key = secret.tls_certificate?.private_key?.inline_bytes?.toString() ?? '';
    const leaf = new X509Certificate(chain);
    expect(leaf.subjectAltName).toContain(FRONT);
    expect(leaf.checkIssued(new X509Certificate(ca.certPem))).toBe(true);
    expect(key).toContain('PRIVATE KEY');
    expect(res.version_info).not.toBe('');
    expect(res.nonce).not.toBe('');
    s.end();
  });

  it('does not reply to an ACK, and pushes a rotation with a fresh version and nonce', async () => {
    const s = client.stream();
    s.send({ node: envoyNode(), resource_names: [FRONT], type_url: client.typeUrl });
    const first = await s.next();
    s.send({ version_info: first.version_info, resource_names: [FRONT], type_url: client.typeUrl, response_nonce: first.nonce });
    expect(await s.nothingWithin(300)).toBe(true);

    const rotated = await tlsValue(ca, FRONT);
    srv.store.publish(FRONT, rotated.value);
    const second = await s.next();
    expect(second.version_info).not.toBe(first.version_info);
    expect(second.nonce).not.toBe(first.nonce);
    expect(serialOf(second)).toBe(rotated.leaf.serialNumber);
    s.end();
  });

  it('logs a NACK with the secret name and reason, does not resend, and sends the next real change', async () => {
    const s = client.stream();
    s.send({ node: envoyNode(), resource_names: [FRONT], type_url: client.typeUrl });
    const first = await s.next();
    s.send({ version_info: first.version_info, resource_names: [FRONT], type_url: client.typeUrl, response_nonce: first.nonce });
    const bad = await tlsValue(ca, FRONT);
    srv.store.publish(FRONT, bad.value);
    const rejected = await s.next();
    s.send({
      version_info: first.version_info,
      resource_names: [FRONT],
      type_url: client.typeUrl,
      response_nonce: rejected.nonce,
      error_detail: { code: 13, message: 'Failed to load private key from <inline>' },
    });
    expect(await s.nothingWithin(400)).toBe(true);
    const nack = srv.logs.find((l) => String(l.msg).includes('NACK'));
    expect(nack?.secrets).toEqual([FRONT]);
    expect(nack?.reason).toBe('Failed to load private key from <inline>');
    expect(nack?.keptVersion).toBe(first.version_info);

    const fixed = await tlsValue(ca, FRONT);
    srv.store.publish(FRONT, fixed.value);
    const next = await s.next();
    expect(serialOf(next)).toBe(fixed.leaf.serialNumber);
    s.end();
  });

  it('ignores a request with a stale nonce, even one naming other secrets', async () => {
    const s = client.stream();
    s.send({ node: envoyNode(), resource_names: [FRONT], type_url: client.typeUrl });
    const first = await s.next();
    srv.store.publish(FRONT, (await tlsValue(ca, FRONT)).value);
    const second = await s.next();
    // An ACK for the first response, arriving after the second was sent: stale.
    s.send({ version_info: first.version_info, resource_names: [TD], type_url: client.typeUrl, response_nonce: first.nonce });
    expect(await s.nothingWithin(300)).toBe(true);
    // The current nonce with the changed name set is answered.
    s.send({ version_info: second.version_info, resource_names: [TD], type_url: client.typeUrl, response_nonce: second.nonce });
    const third = await s.next();
    expect(third.resources.map((r) => decodeSecret(r).name)).toEqual([TD]);
    s.end();
  });

  it('answers a changed resource_names set with exactly the new set', async () => {
    const s = client.stream();
    s.send({ node: envoyNode(), resource_names: [FRONT], type_url: client.typeUrl });
    const first = await s.next();
    s.send({ version_info: first.version_info, resource_names: [FRONT, TD], type_url: client.typeUrl, response_nonce: first.nonce });
    const second = await s.next();
    expect(second.resources.map((r) => decodeSecret(r).name).sort()).toEqual([FRONT, TD].sort());
    s.end();
  });

  it('remembers node from the first message when later messages omit it', async () => {
    const s = client.stream();
    // This Envoy asks for trusted_ca bundles; only its first message carries node.
    s.send({ node: envoyNode({ metadata: { disable_spiffe_cert_validation: true } }), resource_names: [TD], type_url: client.typeUrl });
    const first = await s.next();
    expect(decodeSecret(first.resources[0]!).validation_context?.trusted_ca?.inline_bytes?.toString()).toContain('BEGIN CERTIFICATE');
    s.send({ version_info: first.version_info, resource_names: [TD], type_url: client.typeUrl, response_nonce: first.nonce });
    const ca2 = await rootCa('example.org');
    srv.store.publish(TD, bundleValue('example.org', ca, ca2));
    const second = await s.next();
    const vc = decodeSecret(second.resources[0]!).validation_context;
    expect(vc?.custom_validator_config ?? undefined).toBeUndefined();
    expect(vc?.trusted_ca?.inline_bytes?.toString().match(/BEGIN CERTIFICATE/g)).toHaveLength(2);
    s.end();
  });

  it('holds a configured but unavailable secret open and answers once it exists (never zero resources)', async () => {
    const LATE = 'spiffe://example.org/late';
    srv.store.declare(LATE, 'tls-certificate');
    const s = client.stream();
    s.send({ node: envoyNode(), resource_names: [LATE], type_url: client.typeUrl });
    expect(await s.nothingWithin(300)).toBe(true);
    const late = await tlsValue(ca, LATE);
    srv.store.publish(LATE, late.value);
    const res = await s.next();
    expect(res.resources).toHaveLength(1);
    expect(serialOf(res)).toBe(late.leaf.serialNumber);
    s.end();
  });

  it('ends a stream asking for an unconfigured name with INVALID_ARGUMENT naming it, and keeps serving others', async () => {
    const bad = client.stream();
    bad.send({ node: envoyNode(), resource_names: ['spiffe://example.org/nobody'], type_url: client.typeUrl });
    const end = await bad.ended;
    expect(end.code).toBe(grpc.status.INVALID_ARGUMENT);
    expect(end.details).toContain('spiffe://example.org/nobody');
    expect(end.details).toContain('SDS_ERR_UNKNOWN_SECRET');

    const good = client.stream();
    good.send({ node: envoyNode(), resource_names: [FRONT], type_url: client.typeUrl });
    expect((await good.next()).resources).toHaveLength(1);
    good.end();
  });

  it('rejects a request for another resource type', async () => {
    const s = client.stream();
    s.send({ node: envoyNode(), resource_names: [FRONT], type_url: 'type.googleapis.com/envoy.config.cluster.v3.Cluster' });
    const end = await s.ended;
    expect(end.code).toBe(grpc.status.INVALID_ARGUMENT);
    expect(end.details).toContain('SDS_ERR_WRONG_TYPE_URL');
  });

  it('an empty-names ACK after a named request holds nothing: no other secret, no push on rotations, stream stays open', async () => {
    const s = client.stream();
    s.send({ node: envoyNode(), resource_names: [FRONT], type_url: client.typeUrl });
    const first = await s.next();
    s.send({ version_info: first.version_info, resource_names: [], type_url: client.typeUrl, response_nonce: first.nonce });
    srv.store.publish(FRONT, (await tlsValue(ca, FRONT)).value);
    const ca2 = await rootCa('example.org');
    srv.store.publish(TD, bundleValue('example.org', ca, ca2));
    expect(await s.nothingWithin(300)).toBe(true);
    // Still open and usable: naming a secret again is answered with exactly it.
    s.send({ version_info: first.version_info, resource_names: [TD], type_url: client.typeUrl, response_nonce: first.nonce });
    expect((await s.next()).resources.map((r) => decodeSecret(r).name)).toEqual([TD]);
    s.end();
    expect((await s.ended).code).toBe(grpc.status.OK);
  });

  it('answers a first request that carries a nonce and version from an earlier stream', async () => {
    const s = client.stream();
    s.send({ node: envoyNode(), version_info: 'abc', resource_names: [FRONT], type_url: client.typeUrl, response_nonce: 'deadbeef-7' });
    expect((await s.next()).resources.map((r) => decodeSecret(r).name)).toEqual([FRONT]);
    s.end();
  });

  it('treats empty resource_names on the first request as every secret, under canonical names', async () => {
    const s = client.stream();
    s.send({ node: envoyNode(), resource_names: [], type_url: client.typeUrl });
    const res = await s.next();
    expect(res.resources.map((r) => decodeSecret(r).name).sort()).toEqual([FRONT, TD].sort());
    s.end();
  });

  it('pushes one rotation to every subscribed stream, and nothing to streams of other secrets', async () => {
    const streams = Array.from({ length: 5 }, () => client.stream());
    for (const s of streams) s.send({ node: envoyNode(), resource_names: [FRONT], type_url: client.typeUrl });
    const firsts = await Promise.all(streams.map((s) => s.next()));
    streams.forEach((s, i) => s.send({ version_info: firsts[i]!.version_info, resource_names: [FRONT], type_url: client.typeUrl, response_nonce: firsts[i]!.nonce }));
    const bundleStream = client.stream();
    bundleStream.send({ node: envoyNode(), resource_names: [TD], type_url: client.typeUrl });
    await bundleStream.next();

    const rotated = await tlsValue(ca, FRONT);
    srv.store.publish(FRONT, rotated.value);
    // Publishing identical content again is not a change: no second push.
    srv.store.publish(FRONT, rotated.value);
    const pushes = await Promise.all(streams.map((s) => s.next()));
    for (const p of pushes) expect(serialOf(p)).toBe(rotated.leaf.serialNumber);
    for (const s of streams) expect(await s.nothingWithin(100)).toBe(true);
    expect(await bundleStream.nothingWithin(100)).toBe(true);
    for (const s of [...streams, bundleStream]) s.end();
  });

  it('answers again on a reconnect (new stream, empty nonce) with the current version', async () => {
    const s1 = client.stream();
    s1.send({ node: envoyNode(), resource_names: [FRONT], type_url: client.typeUrl });
    const first = await s1.next();
    s1.cancel();
    const s2 = client.stream();
    s2.send({ node: envoyNode(), version_info: first.version_info, resource_names: [FRONT], type_url: client.typeUrl });
    const again = await s2.next();
    expect(again.version_info).toBe(first.version_info);
    expect(again.nonce).not.toBe(first.nonce);
    s2.end();
  });

  it('releases its store watchers when streams end', async () => {
    const before = srv.store.watcherCount;
    const streams = Array.from({ length: 10 }, () => client.stream());
    for (const s of streams) s.send({ node: envoyNode(), resource_names: [FRONT], type_url: client.typeUrl });
    await Promise.all(streams.map((s) => s.next()));
    expect(srv.store.watcherCount).toBe(before + 10);
    for (const s of streams) s.cancel();
    await expect.poll(() => srv.store.watcherCount, { timeout: 2000 }).toBe(before);
    expect(srv.server.streams.open.size).toBe(0);
  });

  it('shares one encoded push among the streams of a secret, but never repeats a nonce on a stream', async () => {
    const streams = Array.from({ length: 4 }, () => client.stream());
    for (const s of streams) s.send({ node: envoyNode(), resource_names: [FRONT], type_url: client.typeUrl });
    const nonces: string[][] = (await Promise.all(streams.map((s) => s.next()))).map((r) => [r.nonce]);
    for (let round = 0; round < 3; round++) {
      srv.store.publish(FRONT, (await tlsValue(ca, FRONT)).value);
      const pushes = await Promise.all(streams.map((s) => s.next()));
      // One encoding per push: every stream got identical bytes, including version and nonce.
      expect(new Set(pushes.map((p) => p.nonce)).size).toBe(1);
      expect(new Set(pushes.map((p) => p.version_info)).size).toBe(1);
      pushes.forEach((p, i) => nonces[i]!.push(p.nonce));
      // Each stream ACKs its push; the shared nonce is that stream's current one.
      streams.forEach((s, i) => s.send({ version_info: pushes[i]!.version_info, resource_names: [FRONT], type_url: client.typeUrl, response_nonce: pushes[i]!.nonce }));
    }
    for (const perStream of nonces) expect(new Set(perStream).size).toBe(perStream.length);
    for (const s of streams) expect(await s.nothingWithin(100)).toBe(true);
    for (const s of streams) s.end();
  });
});
