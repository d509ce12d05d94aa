/**
 * The moto AWS emulator in server mode, for tests of AWS-backed code (it is an emulator, not AWS:
 * see test/ca/aws-pca.emulator.test.ts for what it implements and ignores).
 *
 * Found at $MOTO_SERVER, else <repo>/.venv/moto/bin/moto_server (installed by
 * `bash scripts/ca/install-moto.sh`). Started on a free loopback port, stopped by `stop()`.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
export const MOTO_INSTALL_HINT = 'bash scripts/ca/install-moto.sh';

export interface MotoServer {
  /** http://127.0.0.1:<port> */
  endpoint: string;
  port: number;
  /** Everything moto printed, for failure messages. */
  output(): string;
  stop(): Promise<void>;
}

/** The moto_server executable, or undefined when it is not installed. */
export function findMotoServer(): string | undefined {
  // An explicit MOTO_SERVER is used alone: a wrong one is reported, not papered over.
  const candidate = process.env.MOTO_SERVER || path.join(REPO_ROOT, '.venv/moto/bin/moto_server');
  return isExecutable(candidate) ? candidate : undefined;
}

/**
 * What a test file should do about moto: run (with the executable), or skip with one line saying how
 * to install it. Under CI (process.env.CI set) a missing moto throws, so the suite fails loudly
 * instead of silently skipping.
 */
export function motoAvailability(): { executable: string; skipReason?: undefined } | { executable?: undefined; skipReason: string } {
  const executable = findMotoServer();
  if (executable) return { executable };
  const where = process.env.MOTO_SERVER ? `MOTO_SERVER=${process.env.MOTO_SERVER} is not an executable` : 'moto_server not found in .venv/moto';
  if (process.env.CI) {
    throw new Error(`${where}: the AWS emulator tests need moto under CI; run \`${MOTO_INSTALL_HINT}\` first (e.g. in .ci/run)`);
  }
  return { skipReason: `skipping moto emulator tests: ${where}; install it with \`${MOTO_INSTALL_HINT}\`` };
}

export async function startMoto(executable: string, opts: { readyTimeoutMs?: number } = {}): Promise<MotoServer> {
  const port = await freePort();
  const child = spawn(executable, ['-H', '127.0.0.1', '-p', String(port)], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, PYTHONUNBUFFERED: '1' },
  });
  let output = '';
  const collect = (chunk: Buffer): void => {
    output = (output + chunk.toString('utf8')).slice(-20_000);
  };
  child.stdout?.on('data', collect);
  child.stderr?.on('data', collect);
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  const spawnError = new Promise<Error>((resolve) => child.once('error', resolve));

  const endpoint = `http://127.0.0.1:${port}`;
  const server: MotoServer = { endpoint, port, output: () => output, stop: () => stopChild(child, exited) };
  const deadline = Date.now() + (opts.readyTimeoutMs ?? 20_000);
  for (;;) {
    const state = await Promise.race([
      answers(endpoint).then((ok) => (ok ? 'ready' : 'not-yet')),
      exited.then(() => 'exited' as const),
      spawnError.then(() => 'error' as const),
    ]);
    if (state === 'ready') return server;
    if (state === 'exited' || state === 'error') {
      throw new Error(`moto_server (${executable}) did not start:\n${output || String(await spawnError)}`);
    }
    if (Date.now() > deadline) {
      await server.stop();
      throw new Error(`moto_server did not answer on ${endpoint} within ${opts.readyTimeoutMs ?? 20_000} ms:\n${output}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** True once anything answers HTTP there (moto's dashboard API answers GET /moto-api/data.json). */
async function answers(endpoint: string): Promise<boolean> {
  try {
    const res = await fetch(`${endpoint}/moto-api/data.json`, { signal: AbortSignal.timeout(1000) });
    await res.arrayBuffer();
    return true;
  } catch {
    return false;
  }
}

async function stopChild(child: ChildProcess, exited: Promise<number | null>): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), 3000);
  await exited;
  clearTimeout(timer);
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      const port = typeof addr === 'object' && addr ? addr.port : 0;
      srv.close(() => (port ? resolve(port) : reject(new Error('no free port'))));
    });
  });
}

function isExecutable(file: string): boolean {
  try {
    fs.accessSync(file, fs.constants.X_OK);
    return fs.statSync(file).isFile();
  } catch {
    return false;
  }
}
