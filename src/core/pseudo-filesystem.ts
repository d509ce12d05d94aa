import fs from 'node:fs/promises';
import path from 'node:path';

/** statfs f_type magic numbers (linux/magic.h) of kernel pseudo filesystems: no sockets, no files of ours. */
const PSEUDO_FILESYSTEMS = new Map<number, string>([
  [0x9fa0, 'proc'],
  [0x62656572, 'sysfs'],
  [0x27e0eb, 'cgroup'],
  [0x63677270, 'cgroup2'],
  [0x64626720, 'debugfs'],
  [0x73636673, 'securityfs'],
]);

/**
 * The pseudo filesystem (proc, sysfs, cgroup, ...) holding `target`'s nearest existing ancestor
 * (`target` itself included), as `{ kind, probe }` with `probe` the path statfs'd; undefined on a
 * regular filesystem or when nothing on the way can be statfs'd. Callers refuse such paths up
 * front, because Node 20's recursive mkdir on /proc or /sys never returns.
 */
export async function pseudoFilesystemOf(target: string): Promise<{ kind: string; probe: string } | undefined> {
  let probe = path.resolve(target);
  for (;;) {
    try {
      const { type } = await fs.statfs(probe);
      const kind = PSEUDO_FILESYSTEMS.get(Number(type));
      return kind ? { kind, probe } : undefined;
    } catch {
      const parent = path.dirname(probe);
      if (parent === probe) return undefined;
      probe = parent;
    }
  }
}
