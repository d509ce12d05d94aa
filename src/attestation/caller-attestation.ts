import fs from 'node:fs';
import type net from 'node:net';
import { ErrorCode, SdsError } from '../core/errors.js';
import { openPeerPidfd, pidfdAlive, readPeerCredentials, type PeerPidfd } from './peer-credentials.js';
import { DEFAULT_PROC_ROOT, readStartTimeSync } from './proc.js';
import type { Caller, PeerCredentials, WorkloadAttestor } from './types.js';

/** Start time of a process in clock ticks since boot (`/proc/<pid>/stat` field 22); undefined = no such process. */
export type ProcessStartTime = number | undefined;

export interface CallerAttestationOptions {
  /** Run in this order; their selectors are concatenated. */
  attestors: WorkloadAttestor[];
  /** procfs mount, default `/proc` (tests pass a folder of their own). */
  procRoot?: string;
  /**
   * Test hook: awaited after every attestor ran and before the process start time is read again,
   * so a test can make the pid change hands at exactly that point.
   */
  beforeRecheck?: (peer: PeerCredentials) => Promise<void> | void;
  /** How a connection's credentials are read; default SO_PEERCRED. Tests pass a test double. */
  readPeer?: (socket: net.Socket) => PeerCredentials;
  /**
   * Also hold a pidfd of the connecting process (SO_PEERPIDFD, Linux >= 6.5) until the re-check.
   * Default: on, unless `readPeer` is replaced. Off (or on older kernels): start time alone.
   */
  pidfd?: boolean;
}

/** What {@link CallerAttestation.begin} learnt about an accepted connection. */
export interface ConnectionAttestation {
  peer: PeerCredentials;
  /** Settles once: the attested caller, or an `SdsError` (fail closed). Never an unhandled rejection. */
  caller: Promise<Caller>;
  /** Whether a pidfd of the connecting process guards this attestation (SO_PEERPIDFD). */
  pidfd: boolean;
}

/**
 * Attests the process behind a connection: peer credentials at accept, then every workload
 * attestor, then a check that the pid still names the process that connected.
 *
 * The pid-reuse guard (as SPIRE's `pkg/common/peertracker`): the process start time is read at
 * accept and again after the attestors; if the process is gone (`SDS_ERR_CALLER_GONE`) or the pid
 * now has another start time (`SDS_ERR_PID_REUSED`) the caller is refused, because the selectors
 * may describe another process. Selectors are therefore only ever those of the process that held
 * the pid from accept until the end of attestation.
 *
 * Where the kernel has SO_PEERPIDFD (Linux >= 6.5), a pidfd of the connecting process is also held
 * from accept to the re-check: it names that process and no other, so even a pid reused before the
 * connection was accepted (when the start time read at accept is already the impostor's) is
 * caught. The pidfd is closed when attestation ends.
 *
 * Limits (shared with SPIRE): a process that hands its connection to another process (fd passing,
 * fork) or execs another binary keeps its pid and start time, so it stays the same caller.
 */
export class CallerAttestation {
  private readonly procRoot: string;
  private readonly readPeer: (socket: net.Socket) => PeerCredentials;
  private readonly usePidfd: boolean;

  constructor(private readonly options: CallerAttestationOptions) {
    this.procRoot = options.procRoot ?? DEFAULT_PROC_ROOT;
    this.readPeer = options.readPeer ?? readPeerCredentials;
    this.usePidfd = options.pidfd ?? options.readPeer === undefined;
  }

  /** Names of the configured attestors, in order (for logs and `/status`). */
  get attestorNames(): string[] {
    return this.options.attestors.map((a) => a.name);
  }

  /**
   * Start time of `pid`, read synchronously: call it in the accept callback, right after the peer
   * credentials, to keep the window in which the pid could change hands as short as possible.
   */
  startTimeOf(pid: number): ProcessStartTime {
    return readStartTimeSync(pid, this.procRoot);
  }

  /**
   * Reads the peer credentials and start time of a just-accepted socket (synchronously) and starts
   * attestation.
   *
   * @throws SdsError `SDS_ERR_PEER_CREDENTIALS` if the credentials cannot be read: close the socket.
   */
  begin(socket: net.Socket): ConnectionAttestation {
    const peer = this.readPeer(socket);
    const pidfd: PeerPidfd = this.usePidfd ? openPeerPidfd(socket) : { kind: 'unsupported' };
    const caller = this.attest(peer, this.startTimeOf(peer.pid), pidfd);
    // The caller may never be asked for (a connection that sends nothing); keep Node quiet about it.
    caller.catch(() => {});
    return { peer, caller, pidfd: pidfd.kind !== 'unsupported' };
  }

  /**
   * Runs every attestor for `peer`, then checks the connecting process still holds `peer.pid`: its
   * pidfd (when there is one) still names a running process, and the start time is unchanged.
   *
   * @param startTime the start time read when the connection was accepted ({@link startTimeOf}).
   * @param pidfd what SO_PEERPIDFD gave ({@link openPeerPidfd}); a pidfd is closed by this call.
   * @returns the caller: `peer`'s pid/uid/gid and the attestors' selectors, deduplicated.
   * @throws SdsError (rejects) `SDS_ERR_CALLER_GONE` if the process had exited at accept or has
   *   exited since; `SDS_ERR_PID_REUSED` if the pid belongs to another process now;
   *   `SDS_ERR_ATTESTATION_FAILED` / `SDS_ERR_KUBELET_UNAVAILABLE` (or an attestor's own code) if an
   *   attestor failed while the process was still the same.
   */
  async attest(peer: PeerCredentials, startTime: ProcessStartTime, pidfd: PeerPidfd = { kind: 'unsupported' }): Promise<Caller> {
    try {
      return await this.attestHeld(peer, startTime, pidfd);
    } finally {
      if (pidfd.kind === 'pidfd') fs.closeSync(pidfd.fd);
    }
  }

  private async attestHeld(peer: PeerCredentials, startTime: ProcessStartTime, pidfd: PeerPidfd): Promise<Caller> {
    if (startTime === undefined) {
      throw new SdsError(ErrorCode.CallerGone, `caller pid ${peer.pid} (uid ${peer.uid}) had exited when its connection was accepted`);
    }
    const results = await Promise.allSettled(this.options.attestors.map((a) => a.attest(peer)));
    if (this.options.beforeRecheck) await this.options.beforeRecheck(peer);
    // The re-check comes first: if the process changed, that is the reason, whatever an attestor said.
    const now = readStartTimeSync(peer.pid, this.procRoot);
    if (pidfd.kind === 'exited' || (pidfd.kind === 'pidfd' && !pidfdAlive(pidfd.fd))) {
      // The process that connected is gone, whatever the pid names now.
      if (now === undefined) throw new SdsError(ErrorCode.CallerGone, `caller pid ${peer.pid} (uid ${peer.uid}) exited before its attestation finished`);
      throw new SdsError(ErrorCode.PidReused, `caller pid ${peer.pid} (uid ${peer.uid}) has exited and its pid belongs to another process now (pidfd check)`);
    }
    if (now === undefined) {
      throw new SdsError(ErrorCode.CallerGone, `caller pid ${peer.pid} (uid ${peer.uid}) exited before its attestation finished`);
    }
    if (now !== startTime) {
      throw new SdsError(
        ErrorCode.PidReused,
        `caller pid ${peer.pid} (uid ${peer.uid}) now belongs to another process (start time ${now} ticks, was ${startTime} at accept)`,
      );
    }
    const selectors: string[] = [];
    for (const [i, result] of results.entries()) {
      if (result.status === 'rejected') {
        const err = result.reason as unknown;
        if (err instanceof SdsError) throw err;
        const name = this.options.attestors[i]?.name ?? String(i);
        throw new SdsError(ErrorCode.AttestationFailed, `${name} attestor failed for pid ${peer.pid}: ${err instanceof Error ? err.message : String(err)}`);
      }
      selectors.push(...result.value);
    }
    return { pid: peer.pid, uid: peer.uid, gid: peer.gid, selectors: [...new Set(selectors)] };
  }
}
