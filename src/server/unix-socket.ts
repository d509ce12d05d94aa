import fs from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import os from 'node:os';
import { ErrorCode, SdsError } from '../ops/errors.js';

/** The socket path when neither --socket nor APPMESH_SDS_SOCKET_PATH is given: needs no root. */
export function defaultSocketPath(): string {
  return path.join(os.tmpdir(), 'sds-server', 'sds.sock');
}

export function resolveSocketPath(flag: string | undefined, env: NodeJS.ProcessEnv = process.env): string {
  return flag || env.APPMESH_SDS_SOCKET_PATH || defaultSocketPath();
}

/**
 * Makes `socketPath` ready to bind: creates the parent directory, removes a stale socket left by a
 * dead process, and refuses (with a clear error) to touch a non-socket file or a live socket.
 */
export async function prepareSocketPath(socketPath: string): Promise<{ removedStale: boolean }> {
  try {
    await fs.mkdir(path.dirname(socketPath), { recursive: true, mode: 0o750 });
  } catch (err) {
    throw new SdsError(ErrorCode.SocketSetup, `cannot create socket directory ${path.dirname(socketPath)}: ${(err as Error).message}`);
  }
  let stat;
  try {
    stat = await fs.lstat(socketPath);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { removedStale: false };
    throw new SdsError(ErrorCode.SocketSetup, `cannot inspect socket path ${socketPath}: ${(err as Error).message}`);
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

/** Applies the configured mode and, optionally, group to the bound socket. */
export async function applySocketPermissions(socketPath: string, mode: number, group: number | undefined): Promise<void> {
  try {
    await fs.chmod(socketPath, mode);
    if (group !== undefined) await fs.chown(socketPath, -1, group);
  } catch (err) {
    throw new SdsError(ErrorCode.SocketSetup, `cannot set mode ${mode.toString(8)}${group !== undefined ? ` / group ${group}` : ''} on ${socketPath}: ${(err as Error).message}`);
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
