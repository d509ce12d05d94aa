import fs from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startApp, type RunningApp } from '../../src/cli/app.js';
import { parseConfigFile } from '../../src/cli/config.js';
import parsePrometheusTextFormat from 'parse-prometheus-text-format';
import { createLogger } from '../../src/core/logger.js';
import { makeSharedDir } from '../helpers/peer-process.js';
import { installClient, NOBODY_USER, ROOT_USER, runClient } from '../helpers/authz-clients.js';
import { waitFor } from '../helpers/files.js';
import { podJson, startKubeletDouble, type KubeletDouble } from '../helpers/kubelet-double.js';

/**
 * Identities issued on demand from `identityTemplate` by the embedded CA, for real callers under two
 * uids. The template uses unix selectors here ({unix:uid}); the Kubernetes selectors go through the
 * same template code (test/authorization/caller-catalog.test.ts).
 */
const PERMISSION_DENIED = 7;
const canRunAsOthers = process.getuid?.() === 0;

describe.skipIf(!canRunAsOthers)('identityTemplate: identities issued on demand by the embedded CA', () => {
  let dir: string;
  let client: string;
  let app: RunningApp;
  const logs: Array<Record<string, unknown>> = [];

  beforeAll(async () => {
    dir = await makeSharedDir('sds-ondemand-');
    client = await installClient(dir);
    const file = path.join(dir, 'sds.yaml');
    await fs.writeFile(
      file,
      `socket: { path: ${path.join(dir, 'sds.sock')}, mode: "0666" }
ca: { trustDomain: example.org, embedded: { dataDir: ${path.join(dir, 'ca')} } }
identityTemplate: "spiffe://{trustDomain}/uid/{unix:uid}"
onDemandIdleSeconds: 1
onDemandLifetime: 3s
`,
    );
    app = await startApp(parseConfigFile(await fs.readFile(file, 'utf8'), file), createLogger({ level: 'debug', write: (l) => logs.push(JSON.parse(l) as Record<string, unknown>) }));
  });
  afterAll(async () => {
    await app?.stop();
    if (dir) await fs.rm(dir, { recursive: true, force: true });
  });

  it('is issued the first time its caller asks, only to that caller, renewed and held while streamed, dropped after onDemandIdleSeconds', async () => {
    const ROOT_ID = 'spiffe://example.org/uid/0';
    const NOBODY_ID = 'spiffe://example.org/uid/65534';
    expect(app.status().secrets.map((s) => s.name)).toEqual(['spiffe://example.org']);

    const root = await runClient(client, app.socketPath, ROOT_USER, [{ names: ['default'] }, { names: [ROOT_ID] }, { names: ['spiffe://example.org'] }], { hold: true });
    try {
      expect(root.run.results.map((r) => r.secrets?.[0]?.spiffeId ?? r.secrets?.[0]?.kind)).toEqual([ROOT_ID, ROOT_ID, 'validation_context']);
      expect(root.run.results[0]?.secrets?.[0]?.hasKey).toBe(true);
      const issued = app.status().secrets.find((s) => s.name === ROOT_ID);
      expect(issued).toMatchObject({ state: 'ok', kind: 'tls-certificate', files: ['embedded CA (on demand, key in memory)'], certificate: { spiffeId: ROOT_ID } });
      // Who holds what (issue 12): /clients names the attested peer of root's held streams...
      const held = app.clients().clients.filter((c) => c.peer?.uid === 0);
      expect(held.length).toBeGreaterThanOrEqual(2);
      expect(held[0]?.peer?.pid).toBeGreaterThan(1);
      // ...and the metrics count the attestation and time the issuance (embedded backend).
      const families = parsePrometheusTextFormat(await app.metrics.scrape());
      const granted = families.find((f) => f.name === 'sds_attestation_total')?.metrics.find((m) => m.labels?.result === 'granted');
      expect(Number(granted?.value)).toBeGreaterThanOrEqual(1);
      // (Read from prom-client's registry: parse-prometheus-text-format 1.1.1 drops the labels of
      // histogram series whose `le` is not the last label, as prom-client writes them.)
      const issuance = (await app.metrics.registry.getSingleMetric('sds_issuance_duration_seconds')!.get()).values.find(
        (v) => (v as { metricName?: string }).metricName === 'sds_issuance_duration_seconds_count' && v.labels.backend === 'embedded' && v.labels.result === 'ok',
      );
      expect(issuance?.value).toBeGreaterThanOrEqual(1);
      // Renewed like a configured identity (at half its 3 s lifetime), while its streams hold it.
      await waitFor("root's on-demand identity renewed", () => logs.filter((l) => l.msg === 'identity issued' && l.secret === ROOT_ID).length >= 2, 10_000);
      expect(app.status().secrets.find((s) => s.name === ROOT_ID)?.certificate?.serialNumber).not.toBe(issued?.certificate?.serialNumber);

      // nobody gets its own, never root's (which exists now).
      const nobody = await runClient(client, app.socketPath, NOBODY_USER, [{ names: ['default'] }, { names: [ROOT_ID] }]);
      expect(nobody.run.results[0]?.secrets?.[0]?.spiffeId).toBe(NOBODY_ID);
      expect(nobody.run.results[1]).toMatchObject({ status: PERMISSION_DENIED, message: expect.stringContaining(`secret "${ROOT_ID}" is not granted to caller uid=65534`) });

      // nobody's streams are gone: its identity is dropped after 1 s; root's, still streamed, stays.
      await waitFor('nobody\'s on-demand identity dropped', () => !app.status().secrets.some((s) => s.name === NOBODY_ID), 10_000);
      expect(app.store.resolve(NOBODY_ID).kind).toBe('unknown');
      expect(app.status().secrets.some((s) => s.name === ROOT_ID)).toBe(true);
      expect(app.status().authorization?.onDemand).toEqual([expect.objectContaining({ spiffeId: ROOT_ID, streams: 2 })]);
    } finally {
      await root.stop();
    }
    await waitFor('root\'s on-demand identity dropped once its streams are gone', () => !app.status().secrets.some((s) => s.name === ROOT_ID), 10_000);
    expect([...new Set(logs.filter((l) => l.msg === 'identity issued').map((l) => l.secret))].sort()).toEqual([ROOT_ID, NOBODY_ID].sort());
    expect(logs.filter((l) => l.msg === 'dropping on-demand identity: no stream has wanted it').map((l) => l.secret).sort()).toEqual([ROOT_ID, NOBODY_ID].sort());
  });
});

/**
 * The same with the Kubernetes attestor: real client processes (root and nobody), real SO_PEERCRED,
 * the kubelet TEST DOUBLE serving the real PodList shape over HTTPS with a bearer token, and a
 * procfs TEST DOUBLE holding only `<pid>/cgroup` of each real client (containerd cgroup v2, CRI-O
 * cgroup v2, containerd cgroup v1), so each process looks like a container of its pod.
 */
describe.skipIf(!canRunAsOthers)('identityTemplate with Kubernetes selectors (kubelet test double, procfs cgroup test double)', () => {
  let dir: string;
  let client: string;
  let app: RunningApp;
  let kubelet: KubeletDouble;
  const logs: Array<Record<string, unknown>> = [];
  const BACK = { ns: 'shop', sa: 'back', uid: '5f0b3a52-9c7e-4d55-8e0f-3b1d2c4a6e01', cid: 'b'.repeat(64) };
  const FRONT = { ns: 'web', sa: 'front', uid: '7a1c9e44-2b3d-4f6a-9c8e-0d1e2f3a4b02', cid: 'f'.repeat(64) };
  const OTHER = { ns: 'batch', sa: 'default', uid: '9b2d0f55-3c4e-4a7b-8d9f-1e2f3a4b5c03', cid: 'c'.repeat(64) };
  const cgroupV2Containerd = (p: typeof BACK): string => `0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod${p.uid.replaceAll('-', '_')}.slice/cri-containerd-${p.cid}.scope\n`;
  const cgroupV2Crio = (p: typeof BACK): string => `0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod${p.uid.replaceAll('-', '_')}.slice/crio-${p.cid}.scope\n`;
  const cgroupV1Containerd = (p: typeof BACK): string => `12:pids:/kubepods/burstable/pod${p.uid}/${p.cid}\n11:memory:/kubepods/burstable/pod${p.uid}/${p.cid}\n1:name=systemd:/kubepods/burstable/pod${p.uid}/${p.cid}\n`;
  const procFor = (cgroup: string) => async (pid: number): Promise<void> => {
    await fs.mkdir(path.join(dir, 'proc', String(pid)), { recursive: true });
    await fs.writeFile(path.join(dir, 'proc', String(pid), 'cgroup'), cgroup);
  };

  beforeAll(async () => {
    dir = await makeSharedDir('sds-ondemand-k8s-');
    client = await installClient(dir);
    kubelet = await startKubeletDouble();
    kubelet.pods = [BACK, FRONT, OTHER].map((p) =>
      podJson({ name: `${p.sa}-6d4cf56db6-x2k9p`, namespace: p.ns, uid: p.uid, serviceAccount: p.sa, labels: { app: p.sa }, containers: [{ name: 'envoy', image: 'envoyproxy/envoy:v1.40.0', imageID: 'docker.io/envoyproxy/envoy:v1.40.0', containerID: `containerd://${p.cid}` }] }),
    );
    await fs.writeFile(path.join(dir, 'token'), kubelet.token);
    await fs.writeFile(path.join(dir, 'kubelet-ca.crt'), kubelet.caPem);
    const file = path.join(dir, 'sds.yaml');
    await fs.writeFile(
      file,
      `socket: { path: ${path.join(dir, 'sds.sock')}, mode: "0666" }
ca: { trustDomain: example.org, embedded: { dataDir: ${path.join(dir, 'ca')} } }
identityTemplate: "spiffe://{trustDomain}/ns/{k8s:ns}/sa/{k8s:sa}"
attestation:
  kubernetes: { kubeletUrl: "${kubelet.url}", tokenFile: token, caFile: kubelet-ca.crt, procRoot: proc }
`,
    );
    app = await startApp(parseConfigFile(await fs.readFile(file, 'utf8'), file), createLogger({ level: 'debug', write: (l) => logs.push(JSON.parse(l) as Record<string, unknown>) }));
  });
  afterAll(async () => {
    await app?.stop();
    await kubelet?.close();
    if (dir) await fs.rm(dir, { recursive: true, force: true });
  });

  it("each pod's process gets the identity of its namespace and service account, issued on demand, and no other", async () => {
    const BACK_ID = 'spiffe://example.org/ns/shop/sa/back';
    const FRONT_ID = 'spiffe://example.org/ns/web/sa/front';
    const [back, front, other] = await Promise.all([
      runClient(client, app.socketPath, NOBODY_USER, [{ names: ['default'] }, { names: [FRONT_ID] }, { names: ['spiffe://example.org'] }], { beforeConnect: procFor(cgroupV2Containerd(BACK)) }),
      runClient(client, app.socketPath, ROOT_USER, [{ names: [FRONT_ID] }, { names: [BACK_ID] }], { beforeConnect: procFor(cgroupV2Crio(FRONT)) }),
      runClient(client, app.socketPath, ROOT_USER, [{ names: ['default'] }], { beforeConnect: procFor(cgroupV1Containerd(OTHER)) }),
    ]);
    expect(back.run.results.map((r) => r.status)).toEqual([0, PERMISSION_DENIED, 0]);
    expect(back.run.results[0]?.secrets?.[0]).toMatchObject({ name: 'default', spiffeId: BACK_ID, hasKey: true });
    expect(back.run.results[1]?.message).toContain(`secret "${FRONT_ID}" is not granted to caller uid=65534 pid=${back.run.pid} selectors=[unix:uid:65534`);
    expect(back.run.results[1]?.message).toContain('k8s:ns:shop');
    expect(front.run.results.map((r) => r.status)).toEqual([0, PERMISSION_DENIED]);
    expect(front.run.results[0]?.secrets?.[0]).toMatchObject({ name: FRONT_ID, spiffeId: FRONT_ID, hasKey: true });
    expect(other.run.results[0]?.secrets?.[0]).toMatchObject({ name: 'default', spiffeId: 'spiffe://example.org/ns/batch/sa/default' });
    // The embedded CA issued exactly these, on demand.
    expect(logs.filter((l) => l.msg === 'identity issued' && l.backend === 'embedded').map((l) => l.secret).sort()).toEqual([BACK_ID, FRONT_ID, 'spiffe://example.org/ns/batch/sa/default'].sort());
    expect(kubelet.requests).toBeGreaterThan(0);
  });

  it('a process outside any pod (no k8s selectors for the placeholders) gets a clear refusal', async () => {
    const { run } = await runClient(client, app.socketPath, ROOT_USER, [{ names: ['default'] }], { beforeConnect: procFor('0::/user.slice/user-0.slice/session-1.scope\n') });
    expect(run.results[0]?.status).toBe(PERMISSION_DENIED);
    expect(run.results[0]?.message).toMatch(/matches no workload entry and identity template spiffe:\/\/\{trustDomain\}\/ns\/\{k8s:ns\}\/sa\/\{k8s:sa\}: the caller has no k8s:ns selector for \{k8s:ns\}; the caller has no k8s:sa selector for \{k8s:sa\}/);
  });
});
