/**
 * Caller attestation: who is on the other end of a Unix-socket connection (peer credentials), and
 * what can be said about that process (workload attestors turning it into selectors).
 */
export { openPeerPidfd, pidfdAlive, readPeerCredentials, type PeerCredentials, type PeerPidfd } from './peer-credentials.js';
export type { Caller, WorkloadAttestor } from './types.js';
export { CallerAttestation, type CallerAttestationOptions, type ConnectionAttestation, type ProcessStartTime } from './caller-attestation.js';
export { UnixWorkloadAttestor, type UnixAttestorOptions } from './unix-attestor.js';
export { DEFAULT_PROC_ROOT, parseIdNames, parseStartTime, parseStat, parseStatus, readStartTime, readStartTimeSync, type ProcStat, type ProcStatus } from './proc.js';
export { parseCgroupFile, parseCgroupPath, type ContainerRef } from './cgroup.js';
export { K8sWorkloadAttestor, type K8sAttestorOptions } from './k8s-attestor.js';
export { KubeletClient, DEFAULT_CA_FILE, DEFAULT_KUBELET_URL, DEFAULT_TOKEN_FILE, type KubeletClientOptions, type Pod, type PodList, type ContainerStatus } from './kubelet-client.js';
export { createCallerAttestation, type AttestationSettings } from './create.js';
