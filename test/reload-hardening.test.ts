import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import fs from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { SdsTestClient, decodeSecret, envoyNode } from './helpers/sds-client.js';

/**
 * Red-team findings on live config reload: a reload (SIGHUP, --watch-config) must never stop or
 * freeze the server, and whatever it is asked to read, the running config keeps serving.
 */
const TD = 'spiffe://example.org';
const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

describe('config reload hardening', () => {
  let dir: string;
  let child: ChildProcessWithoutNullStreams | undefined;
  let exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }> | undefined;
  let client: SdsTestClient | undefined;
  let output: string;

  beforeEach(async () => {
    dir = await fs.mkdtemp(path.join(os.tmpdir(), 'sds-reload-hard-'));
    output = '';
  });
  afterEach(async () => {
    client?.close();
    client = undefined;
    if (child && child.exitCode === null && child.signalCode === null) {
      child.kill('SIGKILL');
      await exited;
    }
    child = undefined;
    await fs.rm(dir, { recursive: true, force: true });
  });

  /** The real program (`node --import tsx src/cli/main.ts`) with these arguments. */
  const run = (args: string[]): void => {
    const proc = spawn(process.execPath, ['--import', 'tsx', path.join(ROOT, 'src', 'cli', 'main.ts'), ...args], { cwd: ROOT, stdio: ['pipe', 'pipe', 'pipe'] });
    child = proc;
    exited = new Promise((resolve) => proc.once('exit', (code, signal) => resolve({ code, signal })));
    proc.stdout.on('data', (d: Buffer) => (output += d.toString()));
    proc.stderr.on('data', (d: Buffer) => (output += d.toString()));
  };
  /** Resolves once the program has logged `text`; rejects if it exits first. */
  const logged = (text: string): Promise<void> =>
    new Promise((resolve, reject) => {
      const check = (): void => {
        if (output.includes(text)) resolve();
      };
      check();
      child!.stdout.on('data', check);
      void exited!.then((e) => reject(new Error(`exited (${e.code ?? e.signal}) before logging ${text}:\n${output}`)));
    });
  const stop = async (): Promise<void> => {
    client?.close();
    client = undefined;
    child!.kill('SIGTERM');
    expect(await exited).toEqual({ code: 0, signal: null });
  };

  it('a SIGHUP during start-up (CA being set up, before "all secrets ready") does not kill the server: it starts, serves, and applies the reload once', async () => {
    const socketPath = path.join(dir, 'sds.sock');
    const file = path.join(dir, 'sds.yaml');
    await fs.writeFile(
      file,
      `socket: { path: ${socketPath} }\nca: { trustDomain: example.org, embedded: { dataDir: ${path.join(dir, 'ca')} }, bundlePropagationMs: 0 }\nidentities:\n  - { spiffeId: "${TD}/a" }\n`,
    );
    run(['--config', file]);
    // Logged by startApp before the CA is created and the identity issued.
    await logged('authorization is off');
    child!.kill('SIGHUP');
    await logged('all secrets ready');
    await logged('"msg":"config reloaded');
    client = new SdsTestClient(socketPath);
    const s = client.stream();
    s.send({ node: envoyNode(), resource_names: [`${TD}/a`], type_url: client.typeUrl });
    expect(decodeSecret((await s.next(10_000)).resources[0]!).name).toBe(`${TD}/a`);
    expect(output.match(/"msg":"config reloaded/g)).toHaveLength(1);
    await stop();
  }, 60_000);
});
