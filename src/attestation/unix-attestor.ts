import fs from 'node:fs/promises';
import path from 'node:path';
import { ErrorCode, SdsError } from '../ops/errors.js';
import { DEFAULT_PROC_ROOT, parseIdNames, parseStatus } from './proc.js';
import type { PeerCredentials, WorkloadAttestor } from './types.js';

export interface UnixAttestorOptions {
  /** procfs mount, default `/proc`. */
  procRoot?: string;
  /** User database for `unix:user`, default `/etc/passwd`. */
  passwdFile?: string;
  /** Group database for `unix:group`, default `/etc/group`. */
  groupFile?: string;
  /** How long the passwd/group files are cached, in ms (default 1000). */
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
    let statusText: string;
    try {
      statusText = await fs.readFile(path.join(dir, 'status'), 'utf8');
    } catch (err) {
      throw new SdsError(ErrorCode.AttestationFailed, `unix attestor: cannot read ${path.join(dir, 'status')} of pid ${peer.pid}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
    }
    const status = parseStatus(statusText);
    const [users, groups, exe] = await Promise.all([
      this.passwd.get(),
      this.group.get(),
      fs.readlink(path.join(dir, 'exe')).catch(() => undefined),
    ]);
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

/** passwd/group id -> name, re-read at most every `ttlMs`; an unreadable file gives no names. */
class CachedIdNames {
  private cached: { at: number; names: Promise<Map<number, string>> } | undefined;
  constructor(private readonly file: string, private readonly ttlMs: number) {}

  get(): Promise<Map<number, string>> {
    const now = Date.now();
    if (!this.cached || now - this.cached.at > this.ttlMs) {
      const names = fs.readFile(this.file, 'utf8').then(parseIdNames, () => new Map<number, string>());
      this.cached = { at: now, names };
    }
    return this.cached.names;
  }
}
