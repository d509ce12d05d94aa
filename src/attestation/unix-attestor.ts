import fs from 'node:fs';
import path from 'node:path';
import { ErrorCode, SdsError } from '../core/errors.js';
import type { Logger } from '../core/logger.js';
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
  /** Where a caller left without `unix:path` (other namespace) is noted, at debug. */
  log?: Logger;
}

/**
 * The namespaces a process's executable path is only meaningful in: `readlink /proc/<pid>/exe`
 * resolves inside the caller's mount namespace, and a user namespace lets an unprivileged user make
 * a mount namespace of its own (`unshare -Urm`) and bind-mount any program over any path.
 */
const PATH_NAMESPACES = ['mnt', 'user'] as const;

/**
 * Unix workload attestor, after SPIRE's `pkg/agent/plugin/workloadattestor/unix`. Selectors:
 * - `unix:uid:N`, `unix:user:NAME`, `unix:gid:N`, `unix:group:NAME` -- from the connection's peer
 *   credentials (the ids the kernel recorded at `connect()`, which a process cannot forge by changing
 *   ids afterwards); names from the passwd/group files, omitted when an id has no name;
 * - for every supplementary group in `/proc/<pid>/status` `Groups:`: `unix:supplementary_gid:N`,
 *   `unix:group:NAME` (so an entry can name any group the process is in) and SPIRE's
 *   `unix:supplementary_group:NAME`;
 * - `unix:path:/abs/exe` from readlink `/proc/<pid>/exe`, only for a caller in the server's own mount
 *   AND user namespace (`/proc/<pid>/ns/{mnt,user}` read the same as `/proc/self/ns/...`): in another
 *   one the path is the caller's to choose (bind mount in `unshare -Urm`). Omitted then, and when
 *   unreadable (kernel threads, a process of another user without CAP_SYS_PTRACE) -- soft, as fewer
 *   selectors grant less.
 *
 * Rejects with `SDS_ERR_ATTESTATION_FAILED` when `/proc/<pid>/status` cannot be read.
 */
export class UnixWorkloadAttestor implements WorkloadAttestor {
  readonly name = 'unix';
  private readonly procRoot: string;
  private readonly passwd: CachedIdNames;
  private readonly group: CachedIdNames;
  private readonly log: Logger | undefined;
  /** This process's namespace links (they never change: Node cannot setns); undefined entry = unreadable. */
  private ownNamespaces: (string | undefined)[] | undefined;

  constructor(options: UnixAttestorOptions = {}) {
    this.procRoot = options.procRoot ?? DEFAULT_PROC_ROOT;
    this.log = options.log;
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
    const otherNamespace = this.otherNamespace(dir);
    if (otherNamespace === undefined) {
      try {
        exe = fs.readlinkSync(path.join(dir, 'exe'));
      } catch {
        exe = undefined;
      }
    } else {
      this.log?.debug('caller gets no unix:path selector: not in the server\'s mount and user namespace', { pid: peer.pid, uid: peer.uid, namespace: otherNamespace });
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

  /**
   * Which of {@link PATH_NAMESPACES} the process at `dir` does not share with this process
   * (`mnt`/`user`), as `mnt:[4026532178]`-style text; undefined when it shares both. A link that
   * cannot be read on either side counts as different (fail closed: no path).
   */
  private otherNamespace(dir: string): string | undefined {
    this.ownNamespaces ??= PATH_NAMESPACES.map((ns) => readLink(path.join(this.procRoot, 'self', 'ns', ns)));
    for (const [i, ns] of PATH_NAMESPACES.entries()) {
      const own = this.ownNamespaces[i];
      const theirs = readLink(path.join(dir, 'ns', ns));
      if (own === undefined || theirs === undefined || own !== theirs) return `${ns}: ${theirs ?? 'unreadable'} (server ${own ?? 'unreadable'})`;
    }
    return undefined;
  }
}

function readLink(file: string): string | undefined {
  try {
    return fs.readlinkSync(file);
  } catch {
    return undefined;
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
