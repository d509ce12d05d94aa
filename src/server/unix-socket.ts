import fs from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import os from 'node:os';
import { ErrorCode, SdsError } from '../core/errors.js';
import { pseudoFilesystemOf } from '../core/pseudo-filesystem.js';

/**
 * The socket path when neither --socket nor APPMESH_SDS_SOCKET_PATH is given: per user, so two
 * users of one machine each get their own, and no root is needed.
 * - `$XDG_RUNTIME_DIR/sds-server/sds.sock` when XDG_RUNTIME_DIR is an absolute path (the user's
 *   private runtime directory, XDG Base Directory spec; rootless podman and docker put their
 *   sockets there);
 * - else `<tmpdir>/sds-server-<uid>/sds.sock` (`/tmp/sds-server-1000/sds.sock`). Someone who
 *   creates that directory first cannot take the socket over: an existing directory must be ours
 *   and closed to others (`SDS_ERR_SOCKET_DIR_UNSAFE`), see prepareSocketPath.
 * `uid` defaults to this process's (absent on Windows, where the name has no uid).
 */
export function defaultSocketPath(env: NodeJS.ProcessEnv = process.env, uid: number | undefined = process.getuid?.()): string {
  const runtimeDir = env.XDG_RUNTIME_DIR;
  if (runtimeDir && path.isAbsolute(runtimeDir)) return path.join(runtimeDir, 'sds-server', 'sds.sock');
  return path.join(os.tmpdir(), uid === undefined ? 'sds-server' : `sds-server-${uid}`, 'sds.sock');
}

export function resolveSocketPath(flag: string | undefined, env: NodeJS.ProcessEnv = process.env): string {
  return flag || env.APPMESH_SDS_SOCKET_PATH || defaultSocketPath(env);
}

/**
 * Longest socket path Linux accepts: `sun_path` is 108 bytes including the terminating NUL
 * (unix(7)); counted in bytes of the UTF-8 path, not characters.
 */
export const MAX_SOCKET_PATH_BYTES = 107;

export interface SocketDirectoryOptions {
  /** The socket file's mode: the directory we create lets through the classes the socket lets through. */
  mode: number;
  /** With a socket group, the directory we create belongs to that group. */
  group?: number;
  /** Report an unsafe directory in `unsafe` instead of throwing SDS_ERR_SOCKET_DIR_UNSAFE. */
  allowShared?: boolean;
}

/**
 * Checks the socket path before anything touches the filesystem: its length against
 * {@link MAX_SOCKET_PATH_BYTES} (`SDS_ERR_SOCKET_PATH_TOO_LONG`) and the filesystem of its nearest
 * existing ancestor (`SDS_ERR_SOCKET_PATH_UNSUPPORTED` on /proc, /sys and other pseudo
 * filesystems, where Node's recursive mkdir never returns).
 */
export async function checkSocketPath(socketPath: string): Promise<void> {
  const bytes = Buffer.byteLength(socketPath);
  if (bytes > MAX_SOCKET_PATH_BYTES) {
    throw new SdsError(ErrorCode.SocketPathTooLong, `socket path is ${bytes} bytes, over the platform limit of ${MAX_SOCKET_PATH_BYTES} (sun_path): ${socketPath.slice(0, 60)}...; choose a shorter --socket`);
  }
  const pseudo = await pseudoFilesystemOf(path.dirname(path.resolve(socketPath)));
  if (pseudo) throw new SdsError(ErrorCode.SocketPathUnsupported, `socket path ${socketPath} is on the ${pseudo.kind} pseudo filesystem (${pseudo.probe}), where a socket cannot be created; choose another --socket`);
}

/**
 * Makes sure the socket's directory exists and that nobody but us (or root) can change what is in
 * it: an existing directory (and each of its ancestors) must be owned by us or root and not be
 * writable by group or others, unless it is a root-owned sticky directory such as /tmp
 * (`SDS_ERR_SOCKET_DIR_UNSAFE`, naming owner and mode). A directory we create gets mode 0700 plus
 * r-x for the classes the socket mode lets connect, and the socket group when one is given.
 */
export async function prepareSocketDirectory(dir: string, options: SocketDirectoryOptions): Promise<{ created: boolean; groupBlocked?: string; unsafe?: string }> {
  const missing: string[] = [];
  let existing = path.resolve(dir);
  for (;;) {
    try {
      const stat = await fs.stat(existing);
      if (!stat.isDirectory()) throw new SdsError(ErrorCode.SocketSetup, `cannot create socket directory ${dir}: ${existing} is not a directory`);
      break;
    } catch (err) {
      if (err instanceof SdsError) throw err;
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') {
        throw (await deniedError(existing, 'inspect socket directory', err)) ?? new SdsError(ErrorCode.SocketSetup, `cannot inspect socket directory ${existing}: ${(err as Error).message}`);
      }
      missing.unshift(existing);
      existing = path.dirname(existing);
    }
  }
  let unsafe: string | undefined;
  try {
    await checkDirectoryChain(existing);
  } catch (err) {
    if (!(options.allowShared && err instanceof SdsError && err.code === ErrorCode.SocketDirUnsafe)) throw err;
    unsafe = err.message;
  }
  // One level at a time: our own parents are private (0755 for the ones above the socket directory).
  for (const [i, d] of missing.entries()) {
    const last = i === missing.length - 1;
    try {
      await fs.mkdir(d, { mode: 0o700 });
      if (last && options.group !== undefined) await fs.chown(d, -1, options.group);
      await fs.chmod(d, last ? directoryModeFor(options.mode) : 0o755);
    } catch (err) {
      throw (await deniedError(d, 'create socket directory', err)) ?? new SdsError(ErrorCode.SocketSetup, `cannot create socket directory ${d}: ${(err as Error).message}`);
    }
  }
  if (missing.length === 0 && options.group !== undefined) {
    // An existing directory is left as it is; say so when it keeps the socket group out.
    const st = await fs.stat(dir);
    const groupPasses = st.gid === options.group ? (st.mode & 0o010) !== 0 : (st.mode & 0o001) !== 0;
    if (!groupPasses) {
      return { created: false, ...(unsafe ? { unsafe } : {}), groupBlocked: `directory ${dir} (owner uid ${st.uid}, group ${st.gid}, mode ${(st.mode & 0o7777).toString(8).padStart(4, '0')}) does not let group ${options.group} through; members of that group will get EACCES` };
    }
  }
  return { created: missing.length > 0, ...(unsafe ? { unsafe } : {}) };
}

/**
 * For an EACCES/EPERM met on the way to `target` (a socket path or directory): an
 * `SDS_ERR_SOCKET_DIR_UNSAFE` naming the directory that refuses us, its owner and mode -- typically
 * another user's socket directory (a second user running the quickstart). Other errors: undefined.
 * The refusing directory is the first, from the root down, we may not search; when every one lets
 * us through, it is the target's parent (we may not write there).
 */
async function deniedError(target: string, doing: string, err: unknown): Promise<SdsError | undefined> {
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  if (code !== 'EACCES' && code !== 'EPERM') return undefined;
  const me = process.getuid?.() ?? 0;
  const parent = path.dirname(path.resolve(target));
  let refusing = parent;
  const parts = parent.split(path.sep).filter(Boolean);
  for (let i = 0; i <= parts.length; i++) {
    const prefix = path.sep + parts.slice(0, i).join(path.sep);
    try {
      await fs.access(prefix, fs.constants.X_OK);
    } catch {
      refusing = prefix;
      break;
    }
  }
  let described = '';
  try {
    const st = await fs.stat(refusing);
    described = ` (owner uid ${st.uid}, group ${st.gid}, mode ${(st.mode & 0o7777).toString(8).padStart(4, '0')})`;
  } catch {
    // Its parent refuses us too: the path alone must do.
  }
  return new SdsError(
    ErrorCode.SocketDirUnsafe,
    `cannot ${doing} ${target}: directory ${refusing}${described} does not let us (uid ${me}) through (${code}); it belongs to another user (another user's server?). Choose another socket path (--socket, socket.path or APPMESH_SDS_SOCKET_PATH)`,
    { cause: err },
  );
}

/** The mode of a socket directory we create for a socket of mode `socketMode` (0660 -> 0750). */
export function directoryModeFor(socketMode: number): number {
  return 0o700 | (socketMode & 0o060 ? 0o050 : 0) | (socketMode & 0o006 ? 0o005 : 0);
}

async function checkDirectoryChain(dir: string): Promise<void> {
  const me = process.getuid?.() ?? 0;
  // A symlink on the way belongs to whoever made it, who can point it elsewhere later (even in a
  // sticky /tmp): only ours or root's are followed.
  const parts = path.resolve(dir).split(path.sep).filter(Boolean);
  for (let i = 1; i <= parts.length; i++) {
    const prefix = path.sep + parts.slice(0, i).join(path.sep);
    const link = await fs.lstat(prefix);
    if (link.isSymbolicLink() && link.uid !== me && link.uid !== 0) {
      throw new SdsError(ErrorCode.SocketDirUnsafe, `refusing socket directory ${dir}: ${prefix} is a symbolic link owned by uid ${link.uid}, not by us (uid ${me}) or root; its owner could point it elsewhere`);
    }
  }
  let d = await fs.realpath(dir);
  for (;;) {
    const stat = await fs.stat(d);
    const mode = stat.mode & 0o7777;
    const ownerOk = stat.uid === me || stat.uid === 0;
    const stickyRoot = stat.uid === 0 && (mode & 0o1000) !== 0;
    const writableByOthers = (mode & 0o022) !== 0 && !stickyRoot;
    if (!ownerOk || writableByOthers) {
      const why = !ownerOk ? `is owned by uid ${stat.uid}, not by us (uid ${me}) or root` : `is writable by ${mode & 0o002 ? 'every user' : `group ${stat.gid}`}`;
      throw new SdsError(
        ErrorCode.SocketDirUnsafe,
        `refusing socket directory ${dir}: ${d === dir ? 'it' : `its ancestor ${d}`} ${why} (owner uid ${stat.uid}, group ${stat.gid}, mode ${mode.toString(8).padStart(4, '0')}); another user could replace the socket. Use a directory only we (or root) can write`,
      );
    }
    const parent = path.dirname(d);
    if (parent === d) return;
    d = parent;
  }
}

/**
 * Makes `socketPath` ready to bind: removes a stale socket left by a dead process, and refuses
 * (with a clear error) to touch a non-socket file or a live socket.
 */
export async function prepareSocketPath(socketPath: string): Promise<{ removedStale: boolean }> {
  let stat;
  try {
    stat = await fs.lstat(socketPath);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { removedStale: false };
    throw (await deniedError(socketPath, 'inspect socket path', err)) ?? new SdsError(ErrorCode.SocketSetup, `cannot inspect socket path ${socketPath}: ${(err as Error).message}`);
  }
  if (!stat.isSocket()) {
    throw new SdsError(ErrorCode.SocketPathNotSocket, `refusing to replace ${socketPath}: it exists and is not a socket (${kindOf(stat)}); remove it or choose another --socket`);
  }
  if (await isListening(socketPath)) {
    throw new SdsError(ErrorCode.SocketInUse, `refusing to take over ${socketPath}: another process is listening on it (is another sds-server or SPIRE agent running?)`);
  }
  await fs.unlink(socketPath);
  return { removedStale: true };
}

export interface BindOptions {
  mode: number;
  group?: number;
  backlog: number;
  /** Test hook: runs after bind, before mode/group are set and the socket is moved into place. */
  afterBind?: (privatePath: string) => Promise<void>;
}

/**
 * Binds `listener` so that nobody else can ever connect before the socket has its final mode and
 * group, whatever the umask: it binds inside a fresh 0700 directory next to the target (so the
 * socket is unreachable while it has the umask's mode), sets mode and group there, where no one
 * else can swap the path for a symlink, then renames it into place (rename never follows a
 * symlink at the target). Errors are `SDS_ERR_SOCKET_SETUP`, or `SDS_ERR_SOCKET_PATH_TOO_LONG`
 * when the private path does not fit `sun_path`.
 */
export async function bindPrivately(listener: net.Server, socketPath: string, options: BindOptions): Promise<void> {
  const dir = path.dirname(socketPath);
  let privateDir: string;
  try {
    // mkdtemp adds 6 characters; with a one-letter file name the private path is as long as
    // <dir>/<8-byte name>, so the default sds.sock never needs more room than its own path.
    privateDir = await fs.mkdtemp(dir + path.sep);
  } catch (err) {
    throw (await deniedError(socketPath, 'bind the socket at', err)) ?? new SdsError(ErrorCode.SocketSetup, `cannot create a private directory in ${dir} to bind the socket: ${(err as Error).message}`);
  }
  const privatePath = path.join(privateDir, 's');
  try {
    await fs.chmod(privateDir, 0o700);
    if (Buffer.byteLength(privatePath) > MAX_SOCKET_PATH_BYTES) {
      throw new SdsError(ErrorCode.SocketPathTooLong, `socket path ${socketPath} leaves no room to bind privately: ${privatePath} is ${Buffer.byteLength(privatePath)} bytes, over the limit of ${MAX_SOCKET_PATH_BYTES}; shorten the path by ${Buffer.byteLength(privatePath) - MAX_SOCKET_PATH_BYTES} bytes`);
    }
    await new Promise<void>((resolve, reject) => {
      const onError = (err: Error): void => reject(new SdsError(ErrorCode.SocketSetup, `cannot listen on ${socketPath}: ${err.message}`));
      listener.once('error', onError);
      listener.listen({ path: privatePath, backlog: options.backlog }, () => {
        listener.removeListener('error', onError);
        resolve();
      });
    });
    await options.afterBind?.(privatePath);
    try {
      await fs.chmod(privatePath, options.mode);
      if (options.group !== undefined) await fs.chown(privatePath, -1, options.group);
    } catch (err) {
      throw new SdsError(ErrorCode.SocketSetup, `cannot set mode ${options.mode.toString(8)}${options.group !== undefined ? ` / group ${options.group}` : ''} on ${socketPath}: ${(err as Error).message}`);
    }
    try {
      await fs.rename(privatePath, socketPath);
    } catch (err) {
      throw new SdsError(ErrorCode.SocketSetup, `cannot move the socket into place at ${socketPath}: ${(err as Error).message}`);
    }
  } catch (err) {
    if (listener.listening) await new Promise<void>((resolve) => listener.close(() => resolve()));
    throw err;
  } finally {
    await fs.rm(privateDir, { recursive: true, force: true });
  }
}

/** Resolves a group name or numeric id to a gid, reading /etc/group (Node has no getgrnam). */
export async function resolveGroup(group: string): Promise<number> {
  if (/^\d+$/.test(group)) return Number(group);
  let text = '';
  try {
    text = await fs.readFile('/etc/group', 'utf8');
  } catch {
    // fall through to the error below
  }
  for (const line of text.split('\n')) {
    const [name, , gid] = line.split(':');
    if (name === group && gid !== undefined) return Number(gid);
  }
  throw new SdsError(ErrorCode.ConfigInvalid, `socket group "${group}" not found in /etc/group; give a numeric gid or an existing group`);
}

export async function removeSocket(socketPath: string): Promise<void> {
  try {
    const stat = await fs.lstat(socketPath);
    if (stat.isSocket()) await fs.unlink(socketPath);
  } catch {
    // already gone
  }
}

function isListening(socketPath: string): Promise<boolean> {
  return new Promise((resolve) => {
    const conn = net.connect(socketPath);
    const done = (alive: boolean): void => {
      conn.destroy();
      resolve(alive);
    };
    conn.once('connect', () => done(true));
    conn.once('error', () => done(false));
    conn.setTimeout(1000, () => done(false));
  });
}

function kindOf(stat: import('node:fs').Stats): string {
  if (stat.isDirectory()) return 'a directory';
  if (stat.isFile()) return 'a regular file';
  if (stat.isSymbolicLink()) return 'a symbolic link';
  return 'not a socket';
}
