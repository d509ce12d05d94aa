import http from 'node:http';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import { createRootCa, issueLeaf } from '../../src/x509/issue.js';

/**
 * A kubelet TEST DOUBLE: a real HTTPS (or plain HTTP, like the read-only port) server on loopback
 * that answers `GET /pods` with a core/v1 PodList in the kubelet's JSON shape, and 401
 * "Unauthorized" unless the request carries `Authorization: Bearer <token>` (secure port only).
 */
export interface KubeletDouble {
  url: string;
  caPem: string;
  token: string;
  /** Pods served; change it to make pods appear or go. */
  pods: unknown[];
  /** Requests to /pods so far (including refused ones). */
  requests: number;
  close(): Promise<void>;
}

export async function startKubeletDouble(opts: { secure?: boolean; token?: string; serverName?: string } = {}): Promise<KubeletDouble> {
  const secure = opts.secure ?? true;
  const token = opts.token ?? 'eyJhbGciOiJSUzI1NiJ9.test-service-account-token.signature';
  const ca = await createRootCa({ commonName: 'kubernetes' });
  // Kubelet serving certificates name the node, not the loopback address.
  const leaf = await issueLeaf(ca, { dnsNames: [opts.serverName ?? 'node-1'] });
  const state: KubeletDouble = {
    url: '',
    caPem: ca.certPem,
    token,
    pods: [],
    requests: 0,
    close: async () => {},
  };
  const handler: http.RequestListener = (req, res) => {
    if (req.url !== '/pods' || req.method !== 'GET') {
      res.writeHead(404).end('404 page not found\n');
      return;
    }
    state.requests++;
    if (secure && req.headers.authorization !== `Bearer ${token}`) {
      res.writeHead(401, { 'content-type': 'text/plain; charset=utf-8' }).end('Unauthorized');
      return;
    }
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ kind: 'PodList', apiVersion: 'v1', metadata: {}, items: state.pods }));
  };
  const server = secure ? https.createServer({ cert: leaf.certPem, key: leaf.keyPem }, handler) : http.createServer(handler);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  state.url = `${secure ? 'https' : 'http'}://127.0.0.1:${port}`;
  state.close = () => new Promise<void>((resolve) => server.close(() => resolve()));
  return state;
}

/** A pod as the kubelet's /pods serves it (trimmed of fields nothing reads, but in their real places). */
export function podJson(p: {
  name: string;
  namespace: string;
  uid: string;
  serviceAccount: string;
  labels?: Record<string, string>;
  containers: { name: string; image: string; imageID: string; containerID: string }[];
  initContainers?: { name: string; image: string; imageID: string; containerID: string }[];
}): unknown {
  const status = (c: { name: string; image: string; imageID: string; containerID: string }, running: boolean) => ({
    name: c.name,
    state: running ? { running: { startedAt: '2026-11-30T04:00:00Z' } } : { terminated: { exitCode: 0, reason: 'Completed' } },
    lastState: {},
    ready: running,
    restartCount: 0,
    image: c.image,
    imageID: c.imageID,
    containerID: c.containerID,
    started: running,
  });
  return {
    metadata: {
      name: p.name,
      generateName: `${p.name.split('-')[0]}-`,
      namespace: p.namespace,
      uid: p.uid,
      resourceVersion: '12345',
      creationTimestamp: '2026-11-30T04:00:00Z',
      labels: p.labels ?? {},
      annotations: { 'kubernetes.io/config.seen': '2026-11-30T04:00:00.000000000Z', 'kubernetes.io/config.source': 'api' },
      ownerReferences: [{ apiVersion: 'apps/v1', kind: 'ReplicaSet', name: `${p.name}-rs`, uid: '0b8c2d9e-0000-4000-8000-000000000001', controller: true, blockOwnerDeletion: true }],
    },
    spec: {
      volumes: [{ name: 'kube-api-access', projected: { sources: [{ serviceAccountToken: { expirationSeconds: 3607, path: 'token' } }] } }],
      containers: p.containers.map((c) => ({ name: c.name, image: c.image, resources: {}, imagePullPolicy: 'IfNotPresent' })),
      restartPolicy: 'Always',
      serviceAccountName: p.serviceAccount,
      serviceAccount: p.serviceAccount,
      nodeName: 'node-1',
      schedulerName: 'default-scheduler',
    },
    status: {
      phase: 'Running',
      conditions: [{ type: 'Ready', status: 'True', lastProbeTime: null, lastTransitionTime: '2026-11-30T04:00:01Z' }],
      hostIP: '10.0.0.11',
      podIP: '10.244.1.7',
      startTime: '2026-11-30T04:00:00Z',
      ...(p.initContainers ? { initContainerStatuses: p.initContainers.map((c) => status(c, false)) } : {}),
      containerStatuses: p.containers.map((c) => status(c, true)),
      qosClass: 'Burstable',
    },
  };
}
