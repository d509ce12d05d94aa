import type { PeerCredentials } from './peer-credentials.js';

export type { PeerCredentials } from './peer-credentials.js';

/**
 * An attested caller: the kernel's peer credentials of its connection plus the selectors the
 * workload attestors derived from its process (SPIRE-style `type:key:value` strings such as
 * `unix:uid:1001` or `k8s:ns:shop`, in attestor order, without duplicates).
 */
export interface Caller {
  pid: number;
  uid: number;
  gid: number;
  selectors: string[];
}

/**
 * Turns a caller's process into selectors (SPIRE's WorkloadAttestor plugin interface).
 * `attest` resolves to the selectors it can vouch for -- an empty list when it has nothing to say
 * about this process (e.g. the Kubernetes attestor for a process outside any pod) -- and rejects
 * with an `SdsError` only when it cannot tell (e.g. the kubelet is unreachable): attestation then
 * fails closed.
 */
export interface WorkloadAttestor {
  /** Selector type this attestor emits (`unix`, `k8s`), used in logs and error messages. */
  readonly name: string;
  attest(peer: PeerCredentials): Promise<string[]>;
}
