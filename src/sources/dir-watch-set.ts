/**
 * Watches every directory that holds (or will hold) secret files with Node's own `fs.watch`
 * (inotify on Linux, FSEvents/kqueue elsewhere): one watch per directory, events as they happen.
 *
 * Directories, not files: a watch on a file follows its inode, and both rename-over-the-file and
 * Kubernetes' `..data` symlink swap replace that inode. The directory survives every rotation
 * style, and any event in it only means "re-read the secrets that live here"; the event type and
 * path are not trusted for anything else. A file reached through symlinks is watched in the
 * directory of every link on the way (see {@link watchPointsOf}), so a swap of a link elsewhere is
 * seen too. A watched directory that is deleted or replaced is noticed by the next sync (dev:ino),
 * which the owner runs after every read; the owner's periodic re-read covers anything missed.
 *
 * Why not chokidar (used here before): for a followed symlink it stats, reads and re-watches on
 * every event, and that work competed with the read of the rotation for the event loop (in the
 * `..data` swap bench the server's share fell from ~28 ms to ~7 ms with chokidar switched off); it
 * also drops a second change of a path within 50 ms, and its first directory scan delayed start-up.
 * A plain watch per directory does what we need with fewer moving parts.
 */
import { watch as fsWatch, type FSWatcher } from 'node:fs';
import { lstat, readlink, stat } from 'node:fs/promises';
import path from 'node:path';
import type { Logger } from '../core/logger.js';

/** Directory -> names of the entries in it that matter (files, links, or the next directory down). */
export type WatchTargets = Map<string, Set<string>>;

interface ActiveWatch {
  watcher: FSWatcher;
  namesKey: string;
  /** dev:ino of the directory when the watch started, to notice a deleted and re-created directory. */
  identity: string;
}

/** Longest symlink chain followed when looking for the directories to watch (as the kernel's 40, but smaller: secrets do not nest links deeply). */
const MAX_LINK_HOPS = 16;

export class DirWatchSet {
  private readonly active = new Map<string, ActiveWatch>();
  private closed = false;

  constructor(
    private readonly onEvent: (dir: string) => void,
    private readonly log: Logger,
  ) {}

  /**
   * Makes the watched set equal `targets`: drops watches no longer wanted or whose directory was
   * replaced, and starts the missing ones (an fs.watch is armed when it returns). Returns the
   * directories that got a new watch (a change made before it was armed gave no event).
   */
  async sync(targets: WatchTargets): Promise<string[]> {
    for (const [dir, current] of this.active) {
      const names = targets.get(dir);
      if (names && keyOf(names) === current.namesKey && (await identityOf(dir)) === current.identity) continue;
      this.active.delete(dir);
      current.watcher.close();
    }
    const added: string[] = [];
    for (const [dir, names] of targets) {
      if (this.closed) break;
      if (this.active.has(dir)) continue;
      const identity = await identityOf(dir);
      if (identity === undefined || this.closed) continue; // gone since the targets were computed; the next sync fixes it
      const watcher = this.open(dir, names);
      if (!watcher) continue;
      this.active.set(dir, { watcher, namesKey: keyOf(names), identity });
      added.push(dir);
    }
    return added;
  }

  /** Directories currently watched (for tests and status). */
  dirs(): string[] {
    return [...this.active.keys()];
  }

  /** Stops every watch (synchronous underneath; async for callers that await it). */
  async close(): Promise<void> {
    this.closed = true;
    for (const w of this.active.values()) w.watcher.close();
    this.active.clear();
  }

  private emit(dir: string): void {
    if (this.closed) return;
    try {
      this.onEvent(dir);
    } catch (err) {
      this.log.error('file event handler failed', { dir, error: err });
    }
  }

  private open(dir: string, names: Set<string>): FSWatcher | undefined {
    try {
      const self = path.basename(dir);
      const watcher = fsWatch(dir, { persistent: false }, (_type, name) => {
        // No name (some platforms): cannot tell, so re-read. The directory's own name: it was
        // renamed or deleted, and the re-read's sync re-arms the watch.
        const base = name === null ? undefined : String(name);
        if (base === undefined || base === self || isWanted(base, names)) this.emit(dir);
      });
      // E.g. the directory was removed: re-read, whose sync moves the watch.
      watcher.on('error', (err) => {
        this.log.debug('directory watch error', { dir, error: err });
        this.emit(dir);
      });
      return watcher;
    } catch (err) {
      this.log.warn('cannot watch directory; relying on the periodic re-read', { dir, error: err });
      return undefined;
    }
  }
}

/**
 * Where to watch for `file`: its directory if that exists, else the nearest existing ancestor,
 * together with the entry name in that directory that leads towards the file.
 */
export async function watchPointOf(file: string): Promise<{ dir: string; name: string }> {
  let child = path.resolve(file);
  let dir = path.dirname(child);
  for (;;) {
    if ((await identityOf(dir)) !== undefined) return { dir, name: path.basename(child) };
    const parent = path.dirname(dir);
    if (parent === dir) return { dir, name: path.basename(child) };
    child = dir;
    dir = parent;
  }
}

/**
 * Every (directory, entry) whose change can change what `file` reads: {@link watchPointOf} of the
 * file, then, while the path is a symlink, of each link's target; and for each of those paths
 * whose directory is itself a symlink (Kubernetes' `tls.crt -> ..data/tls.crt`, `..data ->
 * ..2026_...`), the directory holding that link. At most {@link MAX_LINK_HOPS} links are followed.
 */
export async function watchPointsOf(file: string): Promise<{ dir: string; name: string }[]> {
  const points: { dir: string; name: string }[] = [];
  const add = (p: { dir: string; name: string }): void => {
    if (!points.some((q) => q.dir === p.dir && q.name === p.name)) points.push(p);
  };
  let current = path.resolve(file);
  for (let hop = 0; hop <= MAX_LINK_HOPS; hop++) {
    add(await watchPointOf(current));
    const parent = path.dirname(current);
    if (await isSymlink(parent)) add({ dir: path.dirname(parent), name: path.basename(parent) });
    const target = await linkTarget(current);
    if (target === undefined) break;
    current = path.resolve(parent, target);
  }
  return points;
}

async function isSymlink(p: string): Promise<boolean> {
  try {
    return (await lstat(p)).isSymbolicLink();
  } catch {
    return false;
  }
}

async function linkTarget(p: string): Promise<string | undefined> {
  try {
    return await readlink(p);
  } catch {
    return undefined; // not a link, or missing
  }
}

/** The entries we care about, plus Kubernetes' `..data`-style entries, whose swap is the rotation. */
function isWanted(base: string, names: Set<string>): boolean {
  return names.has(base) || base.startsWith('..');
}

/** dev:ino of a directory, or undefined when it does not exist (or is not a directory). */
async function identityOf(dir: string): Promise<string | undefined> {
  try {
    const s = await stat(dir);
    return s.isDirectory() ? `${s.dev}:${s.ino}` : undefined;
  } catch {
    return undefined;
  }
}

function keyOf(names: Set<string>): string {
  return [...names].sort().join('\0');
}
