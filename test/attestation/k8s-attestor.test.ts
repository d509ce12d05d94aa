import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { CallerAttestation } from '../../src/attestation/caller-attestation.js';
import { K8sWorkloadAttestor, type K8sAttestorOptions } from '../../src/attestation/k8s-attestor.js';
import { UnixWorkloadAttestor } from '../../src/attestation/unix-attestor.js';
import { SecretStore } from '../../src/secrets/store.js';
import { SdsServer } from '../../src/server/sds-server.js';
import { captureLogs, waitFor } from '../helpers/files.js';
import { SdsTestClient } from '../helpers/sds-client.js';
import { podJson, startKubeletDouble, type KubeletDouble } from '../helpers/kubelet-double.js';

const FRONT_UID = '2c48913c-b29f-11e7-9350-020968147796';
const BACK_UID = '72f7f152-440c-46ac-9084-e0fc1d8a910c';
const FRONT_CID = '9bca8d63d5fa610783847915bcff0ecac1273e5b4bed3f6fa1b07350e0135961';
const BACK_CID = 'b2a102854b4969b2ce98dc329c86b4fb2b06e4ad2cc8da9d8a7578c9cd2004a2';
const BACK_INIT_CID = '4f6f1c1b7ab0c2bd0d5df0f4a5a8a9b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7';
const CRIO_CID = '09bc3d7ade839efec32b6bec4ec79d099027a668ddba043083ec21d3c3b8f1e6';
const CRIO_UID = 'a2830d0d-b0f0-4ff0-81b5-0ee4e299cf80';

const frontPod = podJson({
  name: 'front-7d4b9c6f5-x2x9q',
  namespace: 'shop',
  uid: FRONT_UID,
  serviceAccount: 'front',
  labels: { app: 'front', 'pod-template-hash': '7d4b9c6f5' },
  containers: [
    { name: 'envoy', image: 'docker.io/envoyproxy/envoy:v1.40.0', imageID: 'docker.io/envoyproxy/envoy@sha256:1111111111111111111111111111111111111111111111111111111111111111', containerID: `containerd://${FRONT_CID}` },
    { name: 'app', image: 'registry.example/front:1.2', imageID: 'registry.example/front@sha256:2222222222222222222222222222222222222222222222222222222222222222', containerID: 'containerd://aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa' },
  ],
});
const backPod = podJson({
  name: 'back-0',
  namespace: 'shop',
  uid: BACK_UID,
  serviceAccount: 'back',
  labels: { app: 'back' },
  containers: [{ name: 'envoy', image: 'docker.io/envoyproxy/envoy:v1.40.0', imageID: 'docker.io/envoyproxy/envoy:v1.40.0', containerID: `containerd://${BACK_CID}` }],
  initContainers: [{ name: 'init-certs', image: 'busybox:1.36', imageID: 'docker.io/library/busybox@sha256:3333333333333333333333333333333333333333333333333333333333333333', containerID: `containerd://${BACK_INIT_CID}` }],
});
const crioPod = podJson({
  name: 'pay-1',
  namespace: 'payments',
  uid: CRIO_UID,
  serviceAccount: 'default',
  containers: [{ name: 'envoy', image: 'quay.io/envoy:v1.40.0', imageID: 'quay.io/envoy@sha256:4444444444444444444444444444444444444444444444444444444444444444', containerID: `cri-o://${CRIO_CID}` }],
});

const FRONT_SELECTORS = [
  'k8s:ns:shop',
  'k8s:sa:front',
  'k8s:pod-name:front-7d4b9c6f5-x2x9q',
  `k8s:pod-uid:${FRONT_UID}`,
  'k8s:node-name:node-1',
  'k8s:pod-label:app:front',
  'k8s:pod-label:pod-template-hash:7d4b9c6f5',
  'k8s:container-name:envoy',
  'k8s:container-image:docker.io/envoyproxy/envoy:v1.40.0',
  'k8s:container-image:docker.io/envoyproxy/envoy@sha256:1111111111111111111111111111111111111111111111111111111111111111',
];

describe('Kubernetes workload attestor against a kubelet test double', () => {
  let root: string;
  let kubelet: KubeletDouble;
  let closers: (() => Promise<void>)[];

  beforeEach(async () => {
    root = await fs.mkdtemp(path.join(os.tmpdir(), 'sds-k8s-attestor-'));
    kubelet = await startKubeletDouble();
    kubelet.pods = [frontPod, backPod, crioPod];
    closers = [() => kubelet.close()];
    await fs.writeFile(path.join(root, 'token'), `${kubelet.token}\n`);
    await fs.writeFile(path.join(root, 'ca.crt'), kubelet.caPem);
  });
  afterEach(async () => {
    for (const close of closers) await close();
    await fs.rm(root, { recursive: true, force: true });
  });

  const procFor = async (pid: number, cgroup: string) => {
    await fs.mkdir(path.join(root, 'proc', String(pid)), { recursive: true });
    await fs.writeFile(path.join(root, 'proc', String(pid), 'cgroup'), cgroup);
  };
  const attestor = (extra: Partial<K8sAttestorOptions> = {}) =>
    new K8sWorkloadAttestor({ url: kubelet.url, tokenFile: path.join(root, 'token'), caFile: path.join(root, 'ca.crt'), procRoot: path.join(root, 'proc'), ...extra });
  const peer = (pid: number) => ({ pid, uid: 1000, gid: 1000 });

  const ROWS: { name: string; cgroup: string; want: string[] }[] = [
    {
      name: 'containerd, cgroup v1 (cgroupfs): the pod\'s selectors',
      cgroup: ['12:pids', '5:memory', '1:cpuset'].map((h) => `${h}:/kubepods/burstable/pod${FRONT_UID}/${FRONT_CID}`).join('\n') + '\n0::/\n',
      want: FRONT_SELECTORS,
    },
    {
      name: 'containerd, cgroup v2 (systemd): the pod\'s selectors',
      cgroup: `0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod${BACK_UID.replaceAll('-', '_')}.slice/cri-containerd-${BACK_CID}.scope\n`,
      want: ['k8s:ns:shop', 'k8s:sa:back', 'k8s:pod-name:back-0', `k8s:pod-uid:${BACK_UID}`, 'k8s:node-name:node-1', 'k8s:pod-label:app:back', 'k8s:container-name:envoy', 'k8s:container-image:docker.io/envoyproxy/envoy:v1.40.0'],
    },
    {
      name: 'an init container is found too',
      cgroup: `0::/kubepods/besteffort/pod${BACK_UID}/${BACK_INIT_CID}\n`,
      want: expect.arrayContaining(['k8s:sa:back', 'k8s:container-name:init-certs', 'k8s:container-image:busybox:1.36']) as unknown as string[],
    },
    {
      name: 'CRI-O, cgroup v2 (systemd): the pod\'s selectors',
      cgroup: `0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod${CRIO_UID.replaceAll('-', '_')}.slice/crio-${CRIO_CID}.scope\n`,
      want: ['k8s:ns:payments', 'k8s:sa:default', 'k8s:pod-name:pay-1', `k8s:pod-uid:${CRIO_UID}`, 'k8s:node-name:node-1', 'k8s:container-name:envoy', 'k8s:container-image:quay.io/envoy:v1.40.0', 'k8s:container-image:quay.io/envoy@sha256:4444444444444444444444444444444444444444444444444444444444444444'],
    },
    { name: 'CRI-O in a cgroup namespace (container id only): found by id', cgroup: `0::/../crio-${CRIO_CID}.scope\n`, want: expect.arrayContaining(['k8s:ns:payments', 'k8s:pod-name:pay-1']) as unknown as string[] },
    { name: 'a host process: no k8s selectors, no error', cgroup: '0::/user.slice/user-1000.slice/session-3.scope\n', want: [] },
    { name: 'a Docker container outside Kubernetes: no k8s selectors, no error', cgroup: `0::/system.slice/docker-${'c'.repeat(64)}.scope\n`, want: [] },
  ];

  it.each(ROWS)('$name', async ({ cgroup, want }) => {
    await procFor(4242, cgroup);
    expect(await attestor().attest(peer(4242))).toEqual(want);
  });

  it('a host process does not even ask the kubelet', async () => {
    await procFor(4242, '0::/system.slice/sshd.service\n');
    expect(await attestor().attest(peer(4242))).toEqual([]);
    expect(kubelet.requests).toBe(0);
  });

  it('concurrent attestations share one /pods request', async () => {
    await procFor(1, `0::/kubepods/burstable/pod${FRONT_UID}/${FRONT_CID}\n`);
    await procFor(2, `0::/kubepods/besteffort/pod${BACK_UID}/${BACK_CID}\n`);
    const a = attestor();
    const results = await Promise.all(Array.from({ length: 20 }, (_, i) => a.attest(peer((i % 2) + 1))));
    expect(results[0]).toContain('k8s:sa:front');
    expect(results[1]).toContain('k8s:sa:back');
    expect(kubelet.requests).toBe(1);
  });

  it('a pod the kubelet lists only later (container just started) is found by asking again', async () => {
    kubelet.pods = [backPod];
    await procFor(4242, `0::/kubepods/burstable/pod${FRONT_UID}/${FRONT_CID}\n`);
    const a = attestor({ podLookupRetryMs: 20, podLookupTimeoutMs: 5_000 });
    const result = a.attest(peer(4242));
    await waitFor('first /pods request', () => kubelet.requests >= 1);
    kubelet.pods = [backPod, frontPod];
    expect(await result).toEqual(FRONT_SELECTORS);
    expect(kubelet.requests).toBeGreaterThanOrEqual(2);
  });

  it('a pod never listed fails with SDS_ERR_KUBELET_UNAVAILABLE naming the pod', async () => {
    kubelet.pods = [backPod];
    await procFor(4242, `0::/kubepods/burstable/pod${FRONT_UID}/${FRONT_CID}\n`);
    await expect(attestor({ podLookupRetryMs: 20, podLookupTimeoutMs: 200 }).attest(peer(4242))).rejects.toMatchObject({
      code: 'SDS_ERR_KUBELET_UNAVAILABLE',
      message: expect.stringContaining(`pod ${FRONT_UID}`),
    });
    expect(kubelet.requests).toBeGreaterThan(2);
  });

  it('a refused token fails with SDS_ERR_KUBELET_UNAVAILABLE showing the kubelet\'s answer, never the token', async () => {
    await fs.writeFile(path.join(root, 'token'), 'not-the-token');
    await procFor(4242, `0::/kubepods/burstable/pod${FRONT_UID}/${FRONT_CID}\n`);
    const err = (await attestor().attest(peer(4242)).catch((e: unknown) => e)) as Error & { code: string };
    expect(err.code).toBe('SDS_ERR_KUBELET_UNAVAILABLE');
    expect(err.message).toContain('answered 401: Unauthorized');
    expect(err.message).not.toContain('not-the-token');
  });

  it('a kubelet certificate not signed by the configured CA is refused (SDS_ERR_KUBELET_UNAVAILABLE)', async () => {
    const other = await startKubeletDouble();
    closers.push(() => other.close());
    await fs.writeFile(path.join(root, 'ca.crt'), other.caPem);
    await procFor(4242, `0::/kubepods/burstable/pod${FRONT_UID}/${FRONT_CID}\n`);
    await expect(attestor().attest(peer(4242))).rejects.toMatchObject({ code: 'SDS_ERR_KUBELET_UNAVAILABLE', message: expect.stringMatching(/cannot be reached: .*certificate/i) });
    expect(kubelet.requests).toBe(0);
  });

  it('checks the kubelet certificate\'s name when asked to (verifyHostname)', async () => {
    await procFor(4242, `0::/kubepods/burstable/pod${FRONT_UID}/${FRONT_CID}\n`);
    await expect(attestor({ verifyHostname: true }).attest(peer(4242))).rejects.toMatchObject({ code: 'SDS_ERR_KUBELET_UNAVAILABLE', message: expect.stringMatching(/does not match certificate/) });
  });

  it('the read-only port (plain HTTP, no token) works too', async () => {
    const ro = await startKubeletDouble({ secure: false });
    closers.push(() => ro.close());
    ro.pods = [frontPod];
    await procFor(4242, `0::/kubepods/burstable/pod${FRONT_UID}/${FRONT_CID}\n`);
    expect(await attestor({ url: ro.url, tokenFile: '/nonexistent' }).attest(peer(4242))).toEqual(FRONT_SELECTORS);
  });

  it('end to end: a real gRPC connection to SdsServer is attested with unix and k8s selectors (kubelet test double, cgroup file of this pid)', async () => {
    await procFor(process.pid, `0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod${FRONT_UID.replaceAll('-', '_')}.slice/cri-containerd-${FRONT_CID}.scope\n`);
    const logs = captureLogs();
    const server = new SdsServer({
      socketPath: path.join(root, 'sds.sock'),
      catalog: new SecretStore(),
      log: logs.logger,
      // The pid-reuse guard and unix attestor read the real /proc; only the cgroup file is staged.
      attestation: new CallerAttestation({ attestors: [new UnixWorkloadAttestor(), attestor()] }),
    });
    await server.start();
    closers.unshift(() => server.stop(200));
    const client = new SdsTestClient(server.socketPath);
    const stream = client.stream();
    stream.send({ type_url: client.typeUrl, resource_names: ['spiffe://example.org/front'] });
    let peerTag: string | undefined;
    await waitFor('stream opened', () => (peerTag = logs.records().find((r) => r.msg === 'stream opened')?.peer as string | undefined) !== undefined);
    const caller = await server.callerOf(peerTag!);
    expect(caller?.pid).toBe(process.pid);
    expect(caller?.selectors).toEqual(expect.arrayContaining([`unix:uid:${process.getuid!()}`, ...FRONT_SELECTORS]));
    client.close();
  });
});
