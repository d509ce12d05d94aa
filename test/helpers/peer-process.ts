import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';

/** uid/gid of `nobody` (Debian and most distributions). */
export const NOBODY = 65534;

/**
 * A connecting client as a plain Node script with built-ins only, so it runs as another user from a
 * folder that user can read: it connects to the socket named by argv[2], prints its pid/uid/gid,
 * and stays connected until stdin ends or the server closes the connection (then prints "closed").
 */
const PEER_CLIENT_MJS = `import net from 'node:net';
const socket = net.connect(process.argv[2]);
socket.on('connect', () => process.stdout.write(JSON.stringify({ pid: process.pid, uid: process.getuid(), gid: process.getgid() }) + '\\n'));
socket.on('error', (err) => { process.stderr.write(err.message + '\\n'); process.exit(3); });
socket.on('close', () => { process.stdout.write('closed\\n'); process.exit(0); });
process.stdin.on('end', () => process.exit(0));
process.stdin.resume();
`;

/** A temp folder every user can read and enter (mkdtemp makes 0700). */
export async function makeSharedDir(prefix: string): Promise<string> {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), prefix));
  await fs.chmod(dir, 0o755);
  await fs.writeFile(path.join(dir, 'peer-client.mjs'), PEER_CLIENT_MJS, { mode: 0o644 });
  return dir;
}

export interface PeerProcess {
  child: ChildProcess;
  /** As the client saw itself once connected. */
  info: { pid: number; uid: number; gid: number };
  /** Resolves when the server closed the connection (the client prints "closed"). */
  closedByServer: Promise<void>;
  /** Resolves when the process has exited and been reaped. */
  exited: Promise<void>;
  stop(): Promise<void>;
}

/**
 * Starts `peer-client.mjs` from `dir` (see {@link makeSharedDir}), as `user` if given. `wrap` is a
 * command line that runs the rest (`node peer-client.mjs <socket>` is appended to it), e.g.
 * `['unshare', '-Urm', 'sh', '-c', '...']`.
 */
export async function startPeer(dir: string, socketPath: string, user?: { uid: number; gid: number }, wrap: string[] = []): Promise<PeerProcess> {
  const argv = [...wrap, process.execPath, path.join(dir, 'peer-client.mjs'), socketPath];
  const child = spawn(argv[0]!, argv.slice(1), {
    cwd: dir,
    stdio: ['pipe', 'pipe', 'pipe'],
    ...(user ?? {}),
  });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  let out = '';
  let onClosed: () => void = () => {};
  const closedByServer = new Promise<void>((resolve) => (onClosed = resolve));
  const info = await new Promise<PeerProcess['info']>((resolve, reject) => {
    child.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      const first = out.split('\n')[0];
      if (out.includes('\n') && first) {
        try {
          resolve(JSON.parse(first) as PeerProcess['info']);
        } catch {
          /* "closed" before connect: handled by exit */
        }
      }
      if (out.includes('closed\n')) onClosed();
    });
    child.once('exit', (code) => reject(new Error(`peer client exited (${code}) before connecting: ${stderr}`)));
    child.once('error', reject);
  });
  return {
    child,
    info,
    closedByServer,
    exited,
    stop: async () => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      await exited;
    },
  };
}
