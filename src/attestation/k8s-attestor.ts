import path from 'node:path';
import { ErrorCode, SdsError } from '../core/errors.js';
import { parseCgroupFile, type ContainerRef } from './cgroup.js';
import { KubeletClient, type ContainerStatus, type KubeletClientOptions, type Pod, type PodList } from './kubelet-client.js';
import { DEFAULT_PROC_ROOT, readProcFileSync } from './proc.js';
import type { PeerCredentials, WorkloadAttestor } from './types.js';

export interface K8sAttestorOptions extends KubeletClientOptions {
  /** procfs mount, default `/proc` (the server needs the host's: `hostPID: true`). */
  procRoot?: string;
  /** A pod list younger than this is reused by concurrent attestations, ms. Default 1,000. */
  podListMaxAgeMs?: number;
  /**
   * How long to keep asking the kubelet for a pod named by the cgroup but not listed yet (a
   * container that just started), ms. Default 10,000. Then `SDS_ERR_KUBELET_UNAVAILABLE`.
   */
  podLookupTimeoutMs?: number;
  /** Pause between those attempts, ms. Default 250. */
  podLookupRetryMs?: number;
  /** A kubelet client of one's own (tests); otherwise built from these options. */
  kubelet?: Pick<KubeletClient, 'listPods'>;
}

/**
 * Kubernetes workload attestor, after SPIRE's `pkg/agent/plugin/workloadattestor/k8s`: finds the
 * caller's pod UID and container ID in `/proc/<pid>/cgroup` ({@link parseCgroupFile}), then the pod
 * in the kubelet's `/pods` list, and emits
 * `k8s:ns:NS`, `k8s:sa:NAME`, `k8s:pod-name:NAME`, `k8s:pod-uid:UID`, `k8s:node-name:NODE`,
 * `k8s:pod-label:KEY:VALUE` (each label), `k8s:container-name:NAME`, `k8s:container-image:IMAGE`
 * (the status's image and, when different, its imageID, as SPIRE does).
 *
 * A process that is not in a container, or whose container is in no pod of this node (and the
 * cgroup names no pod), gets no selectors: not an error. A pod named by the cgroup but never
 * listed, or a kubelet that cannot be asked, fails attestation (`SDS_ERR_KUBELET_UNAVAILABLE`):
 * the caller is refused rather than given fewer selectors silently.
 */
export class K8sWorkloadAttestor implements WorkloadAttestor {
  readonly name = 'k8s';
  private readonly procRoot: string;
  private readonly kubelet: Pick<KubeletClient, 'listPods'>;
  private cached: { at: number; list: Promise<PodList> } | undefined;

  constructor(private readonly options: K8sAttestorOptions = {}) {
    this.procRoot = options.procRoot ?? DEFAULT_PROC_ROOT;
    this.kubelet = options.kubelet ?? new KubeletClient(options);
  }

  async attest(peer: PeerCredentials): Promise<string[]> {
    const file = path.join(this.procRoot, String(peer.pid), 'cgroup');
    let text: string;
    try {
      text = readProcFileSync(file, 'utf8'); // procfs: no disk wait, see readProcFileSync
    } catch (err) {
      throw new SdsError(ErrorCode.AttestationFailed, `k8s attestor: cannot read ${file} of pid ${peer.pid}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
    }
    const ref = parseCgroupFile(text, peer.pid);
    if (!ref) return [];
    const started = Date.now();
    const timeoutMs = this.options.podLookupTimeoutMs ?? 10_000;
    const retryMs = this.options.podLookupRetryMs ?? 250;
    // The first attempt may use a list fetched shortly before; after a miss, only a newer one.
    let notBefore = started - (this.options.podListMaxAgeMs ?? 1000);
    for (let attempt = 0; ; attempt++) {
      const { at, list } = await this.podList(notBefore);
      notBefore = at + 1;
      const found = findContainer(list, ref);
      if (found) return selectorsOf(found.pod, found.status);
      // A container outside any pod (e.g. a Docker container on the node): nothing to say.
      if (ref.podUid === undefined) return [];
      if (Date.now() - started + retryMs > timeoutMs) {
        throw new SdsError(
          ErrorCode.KubeletUnavailable,
          `k8s attestor: pod ${ref.podUid} (container ${ref.containerId}) of pid ${peer.pid} is not in the kubelet's pod list after ${attempt + 1} attempts in ${Date.now() - started} ms`,
        );
      }
      await new Promise((resolve) => setTimeout(resolve, retryMs));
    }
  }

  /** A pod list requested at or after `notBefore` (ms since epoch); concurrent callers share one request. */
  private async podList(notBefore: number): Promise<{ at: number; list: PodList }> {
    let entry = this.cached;
    if (!entry || entry.at < notBefore) {
      const fresh = { at: Date.now(), list: this.kubelet.listPods() };
      entry = this.cached = fresh;
      fresh.list.catch(() => {
        if (this.cached === fresh) this.cached = undefined;
      });
    }
    return { at: entry.at, list: await entry.list };
  }
}

/** The runtime id in a status's `containerID` (`containerd://<id>`, `cri-o://<id>`, `docker://<id>`). */
function runtimeId(status: ContainerStatus): string | undefined {
  const id = status.containerID;
  if (!id) return undefined;
  const sep = id.indexOf('://');
  return sep >= 0 ? id.slice(sep + 3) : id;
}

function findContainer(list: PodList, ref: ContainerRef): { pod: Pod; status: ContainerStatus } | undefined {
  for (const pod of list.items) {
    if (ref.podUid !== undefined && pod.metadata.uid !== ref.podUid) continue;
    const s = pod.status;
    for (const status of [...(s?.containerStatuses ?? []), ...(s?.initContainerStatuses ?? []), ...(s?.ephemeralContainerStatuses ?? [])]) {
      if (runtimeId(status) === ref.containerId) return { pod, status };
    }
  }
  return undefined;
}

function selectorsOf(pod: Pod, status: ContainerStatus): string[] {
  const out: string[] = [];
  const add = (key: string, value: string | undefined) => {
    if (value !== undefined && value !== '') out.push(`k8s:${key}:${value}`);
  };
  add('ns', pod.metadata.namespace);
  add('sa', pod.spec?.serviceAccountName);
  add('pod-name', pod.metadata.name);
  add('pod-uid', pod.metadata.uid);
  add('node-name', pod.spec?.nodeName);
  for (const [key, value] of Object.entries(pod.metadata.labels ?? {})) out.push(`k8s:pod-label:${key}:${value}`);
  add('container-name', status.name);
  add('container-image', status.image);
  if (status.imageID !== status.image) add('container-image', status.imageID);
  return out;
}
