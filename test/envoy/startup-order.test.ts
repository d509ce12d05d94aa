/**
 * Real Envoys and the order things start and stop in (issue #3): Envoy up before sds-server, and
 * sds-server restarted under running Envoys.
 */
import { existsSync } from 'node:fs';
import http from 'node:http';
import { afterAll, beforeAll, beforeEach, expect, it } from 'vitest';
import { describeWithEnvoy } from './find-envoy.js';
import { SDS_CLUSTER, httpRequest, sameSerial, sleep, waitUntil, type EnvoyProcess, type HttpResult } from './harness.js';
import { Mesh, SERVER_ID, CLIENT_ID, STAT, issueClientLeaf, issueServerLeaf, requestAgent } from './mesh.js';

describeWithEnvoy('Envoy end to end: start order and sds-server restarts', (envoyBin) => {
  let mesh: Mesh;
  let envoys: EnvoyProcess[];
  let pids: number[];

  beforeAll(async () => {
    // The server-side Envoy asks for its bundle as plain `trusted_ca` (node metadata, as with
    // SPIRE); the client-side one gets the SPIFFE validator. Both must interoperate.
    mesh = await Mesh.start({ envoyBin, sdsFirst: false, serverNodeMetadata: { disable_spiffe_cert_validation: true } });
    envoys = [mesh.serverEnvoy, mesh.clientEnvoy];
    pids = envoys.map((e) => e.pid);
  });
  afterAll(async () => {
    await mesh?.close();
  });
  beforeEach((ctx) => {
    ctx.onTestFailed(() => {
      console.error(`----- ${ctx.task.name}: Envoy output and sds-server log -----\n${mesh?.report() ?? '(mesh not started)'}`);
    });
  });

  const expect200 = (res: HttpResult): void => {
    expect(res.status, res.body).toBe(200);
  };

  it('Envoy started before sds-server gets its secrets once the server is up, then serves', async () => {
    expect(existsSync(mesh.socketPath)).toBe(false);
    // Envoy is running but not ready: its listener and cluster wait for their secrets.
    await sleep(300);
    for (const envoy of envoys) {
      expect(envoy.isRunning).toBe(true);
      expect(await envoy.isReady(), `${envoy.name} ready without secrets`).toBe(false);
    }

    await mesh.startSds();
    await Promise.all(envoys.map((e) => e.waitReady(10_000)));
    expect200(await mesh.request());
    expect(sameSerial(await mesh.serverEnvoy.servedSerial(), mesh.files.serverLeaf.serialNumber)).toBe(true);
    expect(sameSerial(await mesh.clientEnvoy.servedSerial(), mesh.files.clientLeaf.serialNumber)).toBe(true);
    expect(envoys.map((e) => e.pid)).toEqual(pids);

    // Bundle forms: trusted_ca for the server-side Envoy (metadata), SPIFFE validator for the client side.
    const caPath = async (envoy: EnvoyProcess): Promise<string | undefined> => (await envoy.certs()).certificates[0]?.ca_cert?.[0]?.path;
    expect(await caPath(mesh.serverEnvoy)).toBe('<inline>');
    expect(await caPath(mesh.clientEnvoy)).toMatch(/^example\.org: /);
  });

  it('survives an sds-server restart: connections stay up, Envoys resubscribe and get later rotations', async () => {
    const ca = mesh.files.cas[0];
    if (!ca) throw new Error('no CA');
    const direct = mesh.directAgent(await issueClientLeaf(ca), mesh.files.cas);
    const plain = new http.Agent({ keepAlive: true, maxSockets: 1 });
    const connected = (envoy: EnvoyProcess, secret: string): Promise<number> => envoy.stat(STAT.sds(secret, 'control_plane.connected_state'));
    try {
      expect200(await requestAgent(direct, mesh.ports.serverListener));
      expect200(await httpRequest({ port: mesh.ports.clientListener, agent: plain }));

      await mesh.stopSds();
      await waitUntil('Envoys to notice sds-server is gone', async () => (await connected(mesh.serverEnvoy, SERVER_ID)) === 0 && (await connected(mesh.clientEnvoy, CLIENT_ID)) === 0);
      // A graceful stop ends every stream with OK trailers fully written before the session closes:
      // no Envoy counts it as an HTTP/2 protocol error on the SDS cluster's connection.
      for (const envoy of envoys) expect(await envoy.stat(`cluster.${SDS_CLUSTER}.upstream_cx_protocol_error`), `${envoy.name}: protocol errors from a graceful stop`).toBe(0);
      // While it is down, Envoy keeps serving with what it has, on old and new connections.
      const whileDown = await requestAgent(direct, mesh.ports.serverListener);
      expect200(whileDown);
      expect(whileDown.reusedSocket).toBe(true);
      expect200(await mesh.request());

      await mesh.startSds();
      await waitUntil(
        'Envoys to reconnect to sds-server',
        async () => (await connected(mesh.serverEnvoy, SERVER_ID)) === 1 && (await connected(mesh.clientEnvoy, CLIENT_ID)) === 1,
        { timeoutMs: 10_000 },
      );

      const [serverLeaf, clientLeaf] = await Promise.all([issueServerLeaf(ca), issueClientLeaf(ca)]);
      await Promise.all([mesh.files.rotateServer(serverLeaf), mesh.files.rotateClient(clientLeaf)]);
      for (const [envoy, leaf] of [
        [mesh.serverEnvoy, serverLeaf],
        [mesh.clientEnvoy, clientLeaf],
      ] as const) {
        await waitUntil(`${envoy.name} to get the rotation after the restart`, async () => sameSerial(await envoy.servedSerial(), leaf.serialNumber), {
          timeoutMs: 5_000,
        });
      }

      expect200(await mesh.request());
      const established = await requestAgent(direct, mesh.ports.serverListener);
      expect200(established);
      expect(established.reusedSocket).toBe(true);
      const plainAfter = await httpRequest({ port: mesh.ports.clientListener, agent: plain });
      expect200(plainAfter);
      expect(plainAfter.reusedSocket).toBe(true);
      expect(envoys.map((e) => e.pid)).toEqual(pids);
    } finally {
      direct.destroy();
      plain.destroy();
    }
  });
});
