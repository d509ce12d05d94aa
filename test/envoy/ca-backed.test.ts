import { afterAll, beforeAll, expect, it, onTestFailed } from 'vitest';
import { X509Certificate } from 'node:crypto';
import { describeWithEnvoy } from './find-envoy.js';
import { Mesh, BUNDLE, CLIENT_ID, SERVER_ID, STAT } from './mesh.js';
import { sameSerial, sleep, waitUntil, type EnvoyProcess } from './harness.js';

/** Serial of the leaf sds-server currently serves under `name`. */
function servedSerial(mesh: Mesh, name: string): string {
  const value = mesh.sds?.store.get(name)?.value;
  if (value?.kind !== 'tls-certificate') throw new Error(`${name} is not served`);
  return new X509Certificate(value.certificateChainPem).serialNumber;
}

describeWithEnvoy('Envoy end to end: identities from the embedded CA (no files)', (envoyBin) => {
  let mesh: Mesh;
  let serverEnvoy: EnvoyProcess;
  let clientEnvoy: EnvoyProcess;

  beforeAll(async () => {
    mesh = await Mesh.start({ envoyBin, embeddedCa: { lifetimeSeconds: 6 } });
    serverEnvoy = mesh.serverEnvoy;
    clientEnvoy = mesh.clientEnvoy;
  });
  afterAll(async () => {
    await mesh?.close();
  });

  const reportOnFailure = (): void => onTestFailed(() => console.log(mesh.report()));

  /** Sends a request every 20 ms until stopped; returns every status seen. */
  const steadyLoad = (): { stop: () => Promise<number[]> } => {
    const statuses: number[] = [];
    let running = true;
    const loop = (async () => {
      while (running) {
        try {
          statuses.push((await mesh.request('/', 2000)).status);
        } catch {
          statuses.push(0);
        }
        await sleep(20);
      }
    })();
    return {
      stop: async () => {
        running = false;
        await loop;
        return statuses;
      },
    };
  };

  it('does mTLS with the leaves the embedded CA issued, and Envoy holds the served serials', async () => {
    reportOnFailure();
    const res = await mesh.request();
    expect(res.status, res.body).toBe(200);
    await waitUntil('both Envoys to hold the served leaves', async () =>
      sameSerial(await serverEnvoy.servedSerial(), servedSerial(mesh, SERVER_ID)) && sameSerial(await clientEnvoy.servedSerial(), servedSerial(mesh, CLIENT_ID)),
    );
  });

  it('renews both leaves at half their lifetime and Envoy applies them with zero failed requests, no restart', async () => {
    reportOnFailure();
    const pids = [serverEnvoy.pid, clientEnvoy.pid];
    const before = [servedSerial(mesh, SERVER_ID), servedSerial(mesh, CLIENT_ID)];
    const load = steadyLoad();
    try {
      await waitUntil('a renewal of both leaves to reach both Envoys', async () => {
        const [s, c] = [await serverEnvoy.servedSerial(), await clientEnvoy.servedSerial()];
        return !sameSerial(s, before[0]) && !sameSerial(c, before[1]) && sameSerial(s, servedSerial(mesh, SERVER_ID)) && sameSerial(c, servedSerial(mesh, CLIENT_ID));
      }, { timeoutMs: 8000 });
      await sleep(300);
    } finally {
      const statuses = await load.stop();
      expect(statuses.length).toBeGreaterThan(10);
      expect(statuses.filter((s) => s !== 200)).toEqual([]);
    }
    expect([serverEnvoy.pid, clientEnvoy.pid]).toEqual(pids);
  });

  it('rolls the CA root over with zero failed requests: old+new bundle, new leaves, then new root only', async () => {
    reportOnFailure();
    const bundleUpdates = async (): Promise<number[]> => Promise.all([serverEnvoy, clientEnvoy].map((e) => e.stat(STAT.sds(BUNDLE, 'update_success'))));
    const updatesBefore = await bundleUpdates();
    const load = steadyLoad();
    try {
      await sleep(300);
      await mesh.sds!.rolloverCaRoot();
      // Both leaves now chain to the new root; the bundle reached both Envoys at least twice
      // (old+new, then new only).
      await waitUntil('both Envoys to take the new bundle twice', async () => (await bundleUpdates()).every((n, i) => n >= (updatesBefore[i] ?? 0) + 2), { timeoutMs: 8000 });
      await sleep(500);
    } finally {
      const statuses = await load.stop();
      expect(statuses.length).toBeGreaterThan(10);
      expect(statuses.filter((s) => s !== 200)).toEqual([]);
    }
    const bundle = mesh.sds!.store.get(BUNDLE)?.value;
    expect(bundle?.kind === 'trust-bundle' ? bundle.bundles[0]?.rootsPem.length : 0).toBe(1);
    const root = new X509Certificate(bundle?.kind === 'trust-bundle' ? bundle.bundles[0]!.rootsPem[0]! : '');
    const leaf = mesh.sds!.store.get(SERVER_ID)?.value;
    expect(new X509Certificate(leaf?.kind === 'tls-certificate' ? leaf.certificateChainPem : '').verify(root.publicKey)).toBe(true);
  });
});
