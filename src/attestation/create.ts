import { CallerAttestation } from './caller-attestation.js';
import { K8sWorkloadAttestor, type K8sAttestorOptions } from './k8s-attestor.js';
import type { Logger } from '../core/logger.js';
import type { WorkloadAttestor } from './types.js';
import { UnixWorkloadAttestor, type UnixAttestorOptions } from './unix-attestor.js';

/**
 * Which workload attestors run, and their settings: the shape a config section can map onto.
 * - `unix`: on unless `false` (selectors `unix:*`, see UnixWorkloadAttestor);
 * - `k8s`: off unless given (selectors `k8s:*` from the kubelet, see K8sWorkloadAttestor);
 *   `{}` takes every default: https://127.0.0.1:10250, the pod's service-account token and CA.
 * `procRoot` (default `/proc`) applies to both and to the pid-reuse guard.
 */
export interface AttestationSettings {
  unix?: UnixAttestorOptions | false;
  k8s?: K8sAttestorOptions | false;
  procRoot?: string;
  /** Handed to the unix attestor (debug lines) unless its own settings give one. */
  log?: Logger;
}

/** Builds the CallerAttestation for {@link AttestationSettings} (unix, then k8s). */
export function createCallerAttestation(settings: AttestationSettings = {}): CallerAttestation {
  const procRoot = settings.procRoot;
  const withRoot = <T extends { procRoot?: string }>(o: T): T => (procRoot !== undefined && o.procRoot === undefined ? { ...o, procRoot } : o);
  const attestors: WorkloadAttestor[] = [];
  if (settings.unix !== false) {
    const unix = withRoot(settings.unix ?? {});
    attestors.push(new UnixWorkloadAttestor(settings.log && !unix.log ? { ...unix, log: settings.log } : unix));
  }
  if (settings.k8s) attestors.push(new K8sWorkloadAttestor(withRoot(settings.k8s)));
  return new CallerAttestation({ attestors, ...(procRoot !== undefined ? { procRoot } : {}) });
}
