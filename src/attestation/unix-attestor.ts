import fs from 'node:fs';
import path from 'node:path';
import { ErrorCode, SdsError } from '../ops/errors.js';
import { DEFAULT_PROC_ROOT, parseIdNames, parseStatus, readProcFileSync } from './proc.js';
import type { PeerCredentials, WorkloadAttestor } from './types.js';

export interface UnixAttestorOptions {
  /** procfs mount, default `/proc`. */
  procRoot?: string;
  /** User database for `unix:user`, default `/etc/passwd`. */
  passwdFile?: string;
  /** Group database for `unix:group`, default `/etc/group`. */
  groupFile?: string;
  /** After how long the passwd/group files are read again, in ms (default 1000; see CachedIdNames). */
  namesTtlMs?: number;
}

/**
 * Unix workload attestor, after SPIRE's `pkg/agent/plugin/workloadattestor/unix`. Selectors:
 * - `unix:uid:N`, `unix:user:NAME`, `unix:gid:N`, `unix:group:NAME` -- from the connection's peer
 *   credentials (the ids the kernel recorded at `connect()`, which a process cannot forge by changing
 *   ids afterwards); names from the passwd/group files, omitted when an id has no name;
 * - for every supplementary group in `/proc/<pid>/status` `Groups:`: `unix:supplementary_gid:N`,
 *   `unix:group:NAME` (so an entry can name any group the process is in) and SPIRE's
 *   `unix:supplementary_group:NAME`;
 * - `unix:path:/abs/exe` from readlink `/proc/<pid>/exe`; omitted when unreadable (kernel threads,
 *   a process of another user without CAP_SYS_PTRACE) -- soft, as fewer selectors grant less.
 *
 * Rejects with `SDS_ERR_ATTESTATION_FAILED` when `/proc/<pid>/status` cannot be read.
 */
export class UnixWorkloadAttestor implements WorkloadAttestor {
  readonly name = 'unix';
  private readonly procRoot: string;
  private readonly passwd: CachedIdNames;
  private readonly group: CachedIdNames;

  constructor(options: UnixAttestorOptions = {}) {
    this.procRoot = options.procRoot ?? DEFAULT_PROC_ROOT;
    const ttl = options.namesTtlMs ?? 1000;
    this.passwd = new CachedIdNames(options.passwdFile ?? '/etc/passwd', ttl);
    this.group = new CachedIdNames(options.groupFile ?? '/etc/group', ttl);
  }

  async attest(peer: PeerCredentials): Promise<string[]> {
    const dir = path.join(this.procRoot, String(peer.pid));
    // procfs is made by the kernel on read (no disk wait): synchronous reads cost tens of us,
    // a fraction of going through the libuv thread pool (see readProcFileSync).
    let statusText: string;
    try {
      statusText = readProcFileSync(path.join(dir, 'status'), 'utf8');
    } catch (err) {
      throw new SdsError(ErrorCode.AttestationFailed, `unix attestor: cannot read ${path.join(dir, 'status')} of pid ${peer.pid}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
    }
    const status = parseStatus(statusText);
    let exe: string | undefined;
    try {
      exe = fs.readlinkSync(path.join(dir, 'exe'));
    } catch {
      exe = undefined;
    }
    const users = await this.passwd.get();
    const groups = await this.group.get();
    const selectors = [`unix:uid:${peer.uid}`];
    const user = users.get(peer.uid);
    if (user !== undefined) selectors.push(`unix:user:${user}`);
    selectors.push(`unix:gid:${peer.gid}`);
    const primary = groups.get(peer.gid);
    if (primary !== undefined) selectors.push(`unix:group:${primary}`);
    for (const gid of status.groups) {
      selectors.push(`unix:supplementary_gid:${gid}`);
      const name = groups.get(gid);
      if (name !== undefined) selectors.push(`unix:group:${name}`, `unix:supplementary_group:${name}`);
    }
    // A deleted executable reads as "/path (deleted)": still the path it ran from.
    if (exe !== undefined && path.isAbsolute(exe)) selectors.push(`unix:path:${exe}`);
    return [...new Set(selectors)];
  }
}

/**
 * passwd/group id -> name. After the first read, lookups answer from memory at once and a read
 * older than `ttlMs` is refreshed in the background (stale-while-revalidate), so attestation
 * never waits on the disk or the thread pool; an unreadable file gives no names.
 */
class CachedIdNames {
  private names: Map<number, string> | undefined;
  private readAt = 0;
  private reading: Promise<Map<number, string>> | undefined;
  constructor(private readonly file: string, private readonly ttlMs: number) {}

  get(): Map<number, string> | Promise<Map<number, string>> {
    if (this.names && Date.now() - this.readAt <= this.ttlMs) return this.names;
    const reading = this.refresh();
    return this.names ?? reading;
  }

  private refresh(): Promise<Map<number, string>> {
    if (!this.reading) {
      this.readAt = Date.now();
      this.reading = fs.promises
        .readFile(this.file, 'utf8')
        .then(parseIdNames, () => new Map<number, string>())
        .then((names) => {
          this.names = names;
          this.reading = undefined;
          return names;
        });
    }
    return this.reading;
  }
}
