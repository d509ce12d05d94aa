/**
 * Delta SDS with real Envoy carrying mTLS (issue #15): the certificate and the trust bundle of a
 * listener that requires client certificates both come over `DELTA_GRPC`, and a rotated leaf
 * reaches Envoy over the same Delta stream with no restart. Server restarts and a secret removed
 * while subscribed are covered with Delta by delta-reconnect.test.ts; this file adds the mTLS
 * handshake through Delta-delivered secrets and the rotation.
 */
import { afterAll, beforeAll, beforeEach, expect, it } from 'vitest';
import type { IssuedLeaf } from '../../src/x509/issue.js';
import { describeWithEnvoy } from './find-envoy.js';
import { EnvoyProcess, freePorts, sameSerial, sdsListenersBootstrap, waitUntil, writeBootstrap } from './harness.js';
import { MultiDomainSecrets, mtlsDirectListener, mtlsGet } from './interop.js';
import { STAT } from './mesh.js';

const TD = 'example.org';
const SERVER_ID = `spiffe://${TD}/server`;
const CLIENT_ID = `spiffe://${TD}/client`;

describeWithEnvoy('Envoy with DELTA_GRPC SDS: mTLS and rotation', (envoyBin) => {
  let secrets: MultiDomainSecrets;
  let envoy: EnvoyProcess;
  let port: number;
  let client: IssuedLeaf;

  beforeAll(async () => {
    secrets = await MultiDomainSecrets.create([TD, 'elsewhere.org']);
    await secrets.issue(SERVER_ID, { serve: true });
    client = await secrets.issue(CLIENT_ID);
    await secrets.start(secrets.config([TD]));
    const [adminPort, listenPort] = await freePorts(2);
    port = listenPort!;
    const listener = mtlsDirectListener({ name: 'delta_ingress', port, certificate: SERVER_ID, validation: `spiffe://${TD}`, matchSan: [CLIENT_ID], sds: { apiType: 'DELTA_GRPC' } });
    const bootstrap = sdsListenersBootstrap({ nodeId: 'delta-mtls', adminPort: adminPort!, socketPath: secrets.socketPath(), listeners: [listener] });
    envoy = await EnvoyProcess.start({ bin: envoyBin, name: 'delta-mtls', adminPort: adminPort!, bootstrapFile: await writeBootstrap(secrets.dir, 'delta-mtls', bootstrap) });
  }, 30_000);
  afterAll(async () => {
    await envoy?.stop();
    await secrets?.close();
  });
  beforeEach((ctx) => {
    ctx.onTestFailed(() => console.error(`----- Envoy output -----\n${envoy?.output()}\n----- sds-server log -----\n${secrets?.log.join('')}`));
  });

  const ca = () => [secrets.domain(TD).ca];

  it('serves mTLS with the certificate and bundle from Delta streams, and refuses a client outside the bundle', async () => {
    const res = await mtlsGet(port, client, ca());
    expect(res.ok && res.status, JSON.stringify(res)).toBe(200);
    expect(res.ok && sameSerial(res.peerSerial, secrets.leaves.get(SERVER_ID)?.leaf.serialNumber)).toBe(true);
    // Both secrets really came over Delta streams.
    const streams = secrets.app!.streams().open;
    expect(streams.filter((s) => s.named.length > 0).map((s) => ({ kind: s.kind, named: s.named })).sort((a, b) => a.named[0]!.localeCompare(b.named[0]!))).toEqual([
      { kind: 'delta', named: [`spiffe://${TD}`] },
      { kind: 'delta', named: [SERVER_ID] },
    ]);

    const outsider = await secrets.issue('spiffe://elsewhere.org/client');
    const failures = (): Promise<number> => envoy.stat(STAT.listenerSsl(port, 'fail_verify_error'), { orZero: true });
    const before = await failures();
    expect((await mtlsGet(port, outsider, ca())).ok).toBe(false);
    await waitUntil('the listener to count the refused handshake', async () => (await failures()) > before);
  });

  it('a rotated server leaf reaches Envoy over Delta without a restart; new connections present it', async () => {
    const pid = envoy.pid;
    const served = secrets.leaves.get(SERVER_ID);
    if (!served) throw new Error('server leaf not served');
    const updates = (): Promise<number> => envoy.stat(STAT.sds(SERVER_ID, 'update_success'));
    const before = await updates();
    const next = await secrets.issue(SERVER_ID);
    await served.files.rotate({ 'tls.crt': next.chainPem, 'tls.key': next.keyPem });
    await waitUntil('Envoy /certs to show the rotated serial', async () =>
      (await envoy.certs()).certificates.some((c) => sameSerial(c.cert_chain?.[0]?.serial_number, next.serialNumber)),
    );
    expect(await updates()).toBe(before + 1);
    const res = await mtlsGet(port, client, ca());
    expect(res.ok && sameSerial(res.peerSerial, next.serialNumber), JSON.stringify(res)).toBe(true);
    expect(envoy.pid).toBe(pid);
  });
});
