import { spawn } from 'node:child_process';
import fs from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/**
 * Real SDS clients as real processes under chosen uids: `raw-sds-client.mjs` (Node built-ins only)
 * copied into a folder every user can read, run as that user.
 */
export const ROOT_USER = { uid: 0, gid: 0 };
export const NOBODY_USER = { uid: 65534, gid: 65534 };
/** `daemon` on Debian: a third uid that no workload entry names. */
export const DAEMON_USER = { uid: 1, gid: 1 };

export interface ClientSecret {
  name: string;
  kind: 'tls_certificate' | 'validation_context' | 'other';
  spiffeId?: string;
  serial?: string;
  hasKey: boolean;
}
export interface ClientResult {
  method: 'StreamSecrets' | 'FetchSecrets';
  names: string[];
  /** gRPC status code, or 'timeout' / 'error'. */
  status: number | string;
  message?: string;
  ms: number;
  secrets?: ClientSecret[];
}
export interface ClientRun {
  pid: number;
  uid: number;
  results: ClientResult[];
}

const CLIENT = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'authorization', 'fixtures', 'raw-sds-client.mjs');

/** Copies the client into `dir` (which must be 0755 up to the root for other users). */
export async function installClient(dir: string): Promise<string> {
  const target = path.join(dir, 'raw-sds-client.mjs');
  await fs.copyFile(CLIENT, target);
  await fs.chmod(target, 0o644);
  return target;
}

export interface HeldClient {
  run: ClientRun;
  /** Ends the client (its connection and streams close). */
  stop(): Promise<void>;
}

/** Runs the client as `user` with these calls on one connection; with `hold`, keeps it connected. */
export async function runClient(
  client: string,
  socketPath: string,
  user: { uid: number; gid: number },
  calls: Array<{ method?: ClientResult['method']; names: string[] }>,
  opts: { hold?: boolean; beforeConnect?: (pid: number) => Promise<void> } = {},
): Promise<HeldClient> {
  const args = [client, socketPath, JSON.stringify(calls.map((c) => ({ method: c.method ?? 'StreamSecrets', names: c.names })))];
  if (opts.hold) args.push('--hold');
  if (opts.beforeConnect) args.push('--wait-go');
  const child = spawn(process.execPath, args, { cwd: path.dirname(client), stdio: ['pipe', 'pipe', 'pipe'], uid: user.uid, gid: user.gid });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  let out = '';
  let err = '';
  child.stderr.on('data', (d: Buffer) => (err += d.toString()));
  if (opts.beforeConnect) {
    if (child.pid === undefined) throw new Error('client did not start');
    await opts.beforeConnect(child.pid);
    child.stdin.write('go\n');
  }
  const run = await new Promise<ClientRun>((resolve, reject) => {
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString();
      const line = out.split('\n')[0];
      if (out.includes('\n') && line) resolve(JSON.parse(line) as ClientRun);
    });
    // 'close', not 'exit': 'exit' can come before the last stdout chunk has been read, which
    // failed a run whose client had printed its result (seen once in CI).
    child.once('close', (code) => reject(new Error(`client as uid ${user.uid} exited (${code}) without a result: ${err}`)));
  });
  return {
    run,
    stop: async () => {
      child.stdin.end();
      if (!opts.hold) child.kill('SIGKILL');
      await exited;
    },
  };
}
