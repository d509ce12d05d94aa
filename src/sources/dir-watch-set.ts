/**
 * Watches every directory that holds (or will hold) secret files, twice over: a plain `fs.watch`
 * (inotify on Linux) on the directory, and a chokidar watcher.
 *
 * Directories, not files: a watch on a file follows its inode, and both rename-over-the-file and
 * Kubernetes' `..data` symlink swap replace that inode. The directory survives every rotation
 * style, and any event in it only means "re-read the secrets that live here"; the event type and
 * path are not trusted for anything else.
 *
 * Why both: the plain watch reports every rename, create and write in the directory as it
 * happens, while chokidar drops a second change of the same path within 50 ms (its built-in
 * throttle) and reports through several stat/readdir round trips; a rotation following another
 * closely would otherwise be missed until the periodic re-read. Chokidar still follows symlinks to
 * files outside the directory, which the plain watch cannot see.
 */
import { watch as fsWatch, type FSWatcher as FsWatcher } from 'node:fs';
import { stat } from 'node:fs/promises';
import path from 'node:path';
import { watch, type FSWatcher } from 'chokidar';
import type { Logger } from '../core/logger.js';

/** Directory -> names of the entries in it that matter (files, or the next directory down). */
export type WatchTargets = Map<string, Set<string>>;

interface ActiveWatch {
  watcher: FSWatcher;
  /** The plain directory watch; undefined when fs.watch failed (chokidar and the poll remain). */
  direct: FsWatcher | undefined;
  namesKey: string;
  /** dev:ino of the directory when the watch started, to notice a deleted and re-created directory. */
  identity: string;
}

// Long enough for a slow disk; if chokidar never gets ready we still have the poll.
const READY_TIMEOUT_MS = 5_000;

export class DirWatchSet {
  private readonly active = new Map<string, ActiveWatch>();
  private closed = false;

  constructor(
    private readonly onEvent: (dir: string) => void,
    private readonly log: Logger,
  ) {}

  /**
   * Makes the watched set equal `targets`: drops watchers no longer wanted or whose directory was
   * replaced, starts the missing ones and waits until they are ready. Returns the directories that
   * got a new watcher (a change made before it was ready may have been missed).
   */
  async sync(targets: WatchTargets): Promise<string[]> {
    for (const [dir, current] of this.active) {
      const names = targets.get(dir);
      if (names && keyOf(names) === current.namesKey && (await identityOf(dir)) === current.identity) continue;
      this.active.delete(dir);
      await this.closeWatcher(dir, current);
    }
    const added: string[] = [];
    for (const [dir, names] of targets) {
      if (this.closed) break;
      if (this.active.has(dir)) continue;
      const identity = await identityOf(dir);
      if (identity === undefined) continue; // gone since the targets were computed; the next sync fixes it
      const direct = this.openDirect(dir, names);
      const watcher = await this.open(dir, names);
      const active = { watcher, direct, namesKey: keyOf(names), identity };
      if (this.closed) {
        await this.closeWatcher(dir, active);
        break;
      }
      this.active.set(dir, active);
      added.push(dir);
    }
    return added;
  }

  /** Directories currently watched (for tests and status). */
  dirs(): string[] {
    return [...this.active.keys()];
  }

  async close(): Promise<void> {
    this.closed = true;
    const all = [...this.active];
    this.active.clear();
    await Promise.all(all.map(([dir, w]) => this.closeWatcher(dir, w)));
  }

  private emit(dir: string): void {
    try {
      this.onEvent(dir);
    } catch (err) {
      this.log.error('file event handler failed', { dir, error: err });
    }
  }

  /** fs.watch on the directory itself: one inotify watch, events as they happen, no throttle. */
  private openDirect(dir: string, names: Set<string>): FsWatcher | undefined {
    try {
      const watcher = fsWatch(dir, { persistent: false }, (_type, name) => {
        // No name (some platforms): cannot tell, so re-read.
        if (name === null || isWanted(String(name), names, true)) this.emit(dir);
      });
      // E.g. the directory was removed: chokidar and the next sync handle that.
      watcher.on('error', (err) => this.log.debug('directory watch error', { dir, error: err }));
      return watcher;
    } catch (err) {
      this.log.warn('cannot watch directory directly; relying on chokidar and the periodic re-read', { dir, error: err });
      return undefined;
    }
  }

  private async open(dir: string, names: Set<string>): Promise<FSWatcher> {
    const watcher = watch(dir, {
      // Direct children only: never descend into `..2026_...` timestamped directories.
      depth: 0,
      ignoreInitial: true,
      // Follow symlinks (the default): `tls.crt -> ..data/tls.crt` is then watched through to the
      // file it points at, so the swap is reported as a change of `tls.crt`. With followSymlinks
      // false chokidar 4 re-emits `add` for symlinks after start despite ignoreInitial.
      followSymlinks: true,
      // atomic would hold back unlink events for 100 ms to merge them with a re-add; we do not
      // care about event types.
      atomic: false,
      // Only the secret files themselves: the plain watch reports Kubernetes' `..` entries, and
      // chokidar following each new `..data_tmp` link and timestamped directory cost more event
      // loop time, right when a rotation is read, than the read itself.
      ignored: onlyEntries(dir, names, false),
    });
    watcher.on('all', () => this.emit(dir));
    // Without an 'error' listener an EventEmitter error would be thrown and crash the process.
    watcher.on('error', (err) => this.log.warn('file watcher error', { dir, error: err }));
    if (!(await readyWithin(watcher, READY_TIMEOUT_MS))) {
      this.log.warn('file watcher not ready in time; relying on the periodic re-read until it is', { dir });
    }
    return watcher;
  }

  private async closeWatcher(dir: string, { watcher, direct }: { watcher: FSWatcher; direct: FsWatcher | undefined }): Promise<void> {
    direct?.close();
    try {
      await watcher.close();
    } catch (err) {
      this.log.warn('closing file watcher failed', { dir, error: err });
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
 * Ignore everything but the entries we care about, plus (with `dotDot`) Kubernetes' `..data`-style
 * entries, whose swap is the rotation. In a shared directory such as /etc/ssl/certs this also
 * keeps chokidar from putting an inotify watch on every unrelated file.
 */
function onlyEntries(dir: string, names: Set<string>, dotDot: boolean): (p: string) => boolean {
  return (p) => {
    const abs = path.resolve(p);
    if (abs === dir) return false;
    if (path.dirname(abs) !== dir) return true;
    return !isWanted(path.basename(abs), names, dotDot);
  };
}

function isWanted(base: string, names: Set<string>, dotDot: boolean): boolean {
  return names.has(base) || (dotDot && base.startsWith('..'));
}

function readyWithin(watcher: FSWatcher, ms: number): Promise<boolean> {
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve(false), ms);
    watcher.once('ready', () => {
      clearTimeout(timer);
      resolve(true);
    });
  });
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
