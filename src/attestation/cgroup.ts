import { ErrorCode, SdsError } from '../core/errors.js';

/** What `/proc/<pid>/cgroup` says about a process's container. */
export interface ContainerRef {
  /** Pod UID in its Kubernetes form (dashes), when the cgroup path names a pod. */
  podUid?: string;
  /** Container runtime's id (64 hex digits), as in the pod status's `containerID` after `<runtime>://`. */
  containerId: string;
}

// `pod` + a UID written with dashes (cgroupfs driver) or underscores (systemd driver), or the 32-hex
// config hash the kubelet gives static pods.
const POD_UID = /(?:^|[-_.:/])pod([0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{12}|[0-9a-f]{32})(?=$|[-_.:/])/;
// The container's own cgroup: the last path element, optionally `<runtime>-<id>.scope` (systemd
// driver) or `<slice>:<runtime>:<id>` (containerd's systemd naming under cgroupfs paths).
const CONTAINER_LEAF = /^(?:(cri-containerd|crio|docker|containerd|libpod)[-:])?([0-9a-f]{64})(?:\.scope)?$/;
const RUNTIME_SCOPE_NAMES = ['cri-containerd', 'crio', 'docker', 'containerd', 'libpod'];

/**
 * The container of one cgroup path (the third field of a `/proc/<pid>/cgroup` line), or undefined
 * when the path is not a container's. Shapes (kubelet cgroup drivers x runtimes):
 * - cgroupfs: `/kubepods/<qos>/pod<uid>/<id>` (containerd, CRI-O, Docker), also nested under
 *   `/docker/<id>/...` (kind) or relative `/../pod<uid>/<id>` (cgroup namespaces);
 * - systemd: `/kubepods.slice/kubepods-<qos>.slice/kubepods-<qos>-pod<uid_with_underscores>.slice/`
 *   + `cri-containerd-<id>.scope` | `crio-<id>.scope` | `docker-<id>.scope`;
 * - containerd with systemd names under a cgroupfs path: `.../kubepods-<qos>-pod<uid>.slice:cri-containerd:<id>`;
 * - cgroup v2 in a cgroup namespace: `/../crio-<id>.scope` (runtime prefix, no pod: found by id).
 * A bare 64-hex leaf without a pod element (e.g. `/docker/<id>`, a container outside Kubernetes)
 * is not taken as a container; CRI-O's `crio-conmon-<id>.scope` (its monitor) is not one either.
 */
export function parseCgroupPath(cgroupPath: string): ContainerRef | undefined {
  const elements = cgroupPath.split('/').filter((e) => e !== '' && e !== '.' && e !== '..');
  const leaf = elements.at(-1);
  if (leaf === undefined) return undefined;
  // `<slice>:<runtime>:<id>` carries the pod in the same element as the container.
  const parts = leaf.split(':');
  let candidate = leaf;
  const podElements = elements.slice(0, -1);
  if (parts.length === 3) {
    candidate = `${parts[1]}-${parts[2]}`;
    podElements.push(parts[0]!);
  } else if (parts.length !== 1) {
    return undefined;
  }
  const m = CONTAINER_LEAF.exec(candidate);
  if (!m || m[2] === undefined) return undefined;
  const containerId = m[2];
  for (const element of podElements.reverse()) {
    const pod = POD_UID.exec(element);
    if (pod?.[1]) return { podUid: canonicalPodUid(pod[1]), containerId };
  }
  // No pod element: only a runtime-named scope says it is a container (looked up by id alone).
  if (m[1] !== undefined && RUNTIME_SCOPE_NAMES.includes(m[1])) return { containerId };
  return undefined;
}

/** `2c48913c_b29f_11e7_...` (systemd) -> `2c48913c-b29f-11e7-...`; a 32-hex static-pod hash is kept. */
function canonicalPodUid(uid: string): string {
  return uid.replaceAll('_', '-');
}

/**
 * The container of a process from its whole `/proc/<pid>/cgroup` text (cgroup v1: one line per
 * hierarchy, `ID:controllers:path`; v2: one `0::path` line; paths may contain `:`).
 *
 * @returns undefined when no line names a container (a process outside any container).
 * @throws SdsError `SDS_ERR_ATTESTATION_FAILED` when lines name different containers or pods
 *   (SPIRE refuses these too: the process cannot be told apart).
 */
export function parseCgroupFile(text: string, pid?: number): ContainerRef | undefined {
  let found: ContainerRef | undefined;
  for (const line of text.split('\n')) {
    const first = line.indexOf(':');
    const second = first < 0 ? -1 : line.indexOf(':', first + 1);
    if (second < 0) continue;
    const ref = parseCgroupPath(line.slice(second + 1).trim());
    if (!ref) continue;
    if (!found) {
      found = ref;
      continue;
    }
    if (ref.containerId !== found.containerId || (ref.podUid !== undefined && found.podUid !== undefined && ref.podUid !== found.podUid)) {
      throw new SdsError(
        ErrorCode.AttestationFailed,
        `k8s attestor: the cgroups of pid ${pid ?? '?'} name two containers (${found.containerId} in pod ${found.podUid ?? '?'}, ${ref.containerId} in pod ${ref.podUid ?? '?'})`,
      );
    }
    found = { containerId: found.containerId, ...(found.podUid ?? ref.podUid ? { podUid: found.podUid ?? ref.podUid } : {}) };
  }
  return found;
}
