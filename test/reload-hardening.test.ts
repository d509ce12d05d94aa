import { execFileSync, spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import http from 'node:http';
import fs from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { SdsTestClient, decodeSecret, envoyNode } from './helpers/sds-client.js';
import { issueLeaf } from '../src/x509/issue.js';
import { rootCa } from './helpers/identities.js';
import { parseCommandLine } from '../src/cli/args.js';
import { startApp, type RunningApp } from '../src/cli/app.js';
import type { ServerConfig } from '../src/cli/config.js';
import { createLogger } from '../src/core/logger.js';

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
  /** Resolves once the program has logged `text` (`times` times); rejects if it exits first. */
  const logged = (text: string, times = 1): Promise<void> =>
    new Promise((resolve, reject) => {
      const check = (): void => {
        if (output.split(text).length - 1 >= times) resolve();
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

  /** GET on the admin endpoint's Unix socket; the parsed JSON body. */
  const adminGet = (socketPath: string, p: string): Promise<Record<string, unknown>> =>
    new Promise((resolve, reject) => {
      http
        .get({ socketPath, path: p }, (res) => {
          let body = '';
          res.on('data', (d: Buffer) => (body += d.toString()));
          res.on('end', () => resolve(JSON.parse(body) as Record<string, unknown>));
        })
        .on('error', reject);
    });

  it.each([
    { kind: 'a FIFO (named pipe)', reason: 'named pipe' },
    { kind: 'a symlink to /dev/zero', reason: 'a device' },
    { kind: 'a 2 MiB file', reason: 'limit for a config file' },
  ])('a config file swapped for $kind is refused on SIGHUP without blocking: SDS_ERR_CONFIG_INVALID naming the file, in /status, and the running config keeps serving', async ({ kind, reason }) => {
    const ca = await rootCa('example.org');
    const leaf = await issueLeaf(ca, { spiffeId: `${TD}/one` });
    await fs.writeFile(path.join(dir, 'one.crt'), leaf.chainPem);
    await fs.writeFile(path.join(dir, 'one.key'), leaf.keyPem, { mode: 0o600 });
    const socketPath = path.join(dir, 'sds.sock');
    const adminSocket = path.join(dir, 'admin.sock');
    const file = path.join(dir, 'sds.yaml');
    const good = `socket: { path: ${socketPath} }\nadmin: { address: "unix:${adminSocket}" }\ncertificates:\n  - { name: "${TD}/one", cert: one.crt, key: one.key }\n`;
    await fs.writeFile(file, good);
    run(['--config', file]);
    await logged('all secrets ready');
    client = new SdsTestClient(socketPath);
    const kept = client.stream();
    kept.send({ node: envoyNode(), resource_names: [`${TD}/one`], type_url: client.typeUrl });
    await kept.next(10_000);

    // Swapped in as a rename over the config, as a deployment tool would.
    const swap = path.join(dir, 'swap');
    if (kind.includes('FIFO')) execFileSync('mkfifo', [swap]);
    else if (kind.includes('/dev/zero')) await fs.symlink('/dev/zero', swap);
    else await fs.writeFile(swap, `${good}${'# padding\n'.repeat(210_000)}`);
    await fs.rename(swap, file);
    child!.kill('SIGHUP');
    await logged('config reload refused');
    const refusal = output.split('\n').find((l) => l.includes('config reload refused'))!;
    expect(refusal).toContain('SDS_ERR_CONFIG_INVALID');
    expect(refusal).toContain(file);
    expect(refusal).toContain(reason);
    const status = await adminGet(adminSocket, '/status');
    const lastReloadError = (status.config as { lastReloadError?: { code: string; message: string } }).lastReloadError;
    expect(lastReloadError).toMatchObject({ code: 'SDS_ERR_CONFIG_INVALID' });
    expect(lastReloadError!.message).toContain(file);
    expect(lastReloadError!.message).toContain(reason);
    // Still serving the running config: a new stream is answered on the same connection.
    const again = client.stream();
    again.send({ node: envoyNode(), resource_names: [`${TD}/one`], type_url: client.typeUrl });
    expect(decodeSecret((await again.next(10_000)).resources[0]!).name).toBe(`${TD}/one`);

    // And a good config put back is applied.
    await fs.rm(file);
    await fs.writeFile(file, good);
    child!.kill('SIGHUP');
    await logged('"msg":"config reloaded');
    await stop();
  }, 60_000);

  it('at start-up too, --config naming a FIFO, a device or a 2 MiB file is refused at once with SDS_ERR_CONFIG_INVALID naming the file', async () => {
    const fifo = path.join(dir, 'fifo.yaml');
    execFileSync('mkfifo', [fifo]);
    const zero = path.join(dir, 'zero.yaml');
    await fs.symlink('/dev/zero', zero);
    const big = path.join(dir, 'big.yaml');
    await fs.writeFile(big, '# padding\n'.repeat(210_000));
    for (const [file, reason] of [
      [fifo, 'not a regular file'],
      [zero, 'not a regular file'],
      [big, 'limit for a config file'],
    ] as const) {
      expect(() => parseCommandLine(['--config', file], {})).toThrow(expect.objectContaining({ code: 'SDS_ERR_CONFIG_INVALID', message: expect.stringContaining(`${file}: `) }));
      expect(() => parseCommandLine(['--config', file], {})).toThrow(reason);
    }
  });
});

describe('config reload that starts the CA with a new trust domain', () => {
  let dir: string;
  let app: RunningApp | undefined;
  let client: SdsTestClient | undefined;
  beforeEach(async () => {
    dir = await fs.mkdtemp(path.join(os.tmpdir(), 'sds-reload-td-'));
  });
  afterEach(async () => {
    client?.close();
    client = undefined;
    await app?.stop();
    app = undefined;
    await fs.rm(dir, { recursive: true, force: true });
  });

  it('the identity template is expanded with the new ca.trustDomain: the caller gets spiffe://other.org/uid/<uid>, and spiffe://example.org/uid/<uid> is not issued', async () => {
    const uid = process.getuid!();
    const ca = await rootCa('example.org');
    const leaf = await issueLeaf(ca, { spiffeId: `${TD}/front` });
    await fs.writeFile(path.join(dir, 'front.crt'), leaf.chainPem);
    await fs.writeFile(path.join(dir, 'front.key'), leaf.keyPem, { mode: 0o600 });
    const file = path.join(dir, 'sds.yaml');
    const base = `socket: { path: ${path.join(dir, 'sds.sock')} }
certificates:
  - { name: "${TD}/front", cert: front.crt, key: front.key }
workloads:
  - { selectors: ["unix:uid:${uid}"], identities: ["${TD}/front"] }
`;
    await fs.writeFile(file, base);
    const load = (): ServerConfig => {
      const command = parseCommandLine(['--config', file], {});
      if (command.kind !== 'run') throw new Error('expected run');
      return command.config;
    };
    app = await startApp(load(), createLogger({ level: 'error', write: () => undefined }), { load, configFile: file });
    await fs.writeFile(
      file,
      `${base}ca: { trustDomain: other.org, embedded: { dataDir: ${path.join(dir, 'ca')} }, bundlePropagationMs: 0 }\nidentityTemplate: "spiffe://{trustDomain}/uid/{unix:uid}"\n`,
    );
    expect(await app.reloadConfig('test')).toMatchObject({ outcome: 'applied', restartRequired: [] });

    client = new SdsTestClient(app.socketPath);
    const ask = (name: string): ReturnType<SdsTestClient['stream']> => {
      const s = client!.stream();
      s.send({ node: envoyNode(), resource_names: [name], type_url: client!.typeUrl });
      return s;
    };
    const mine = `spiffe://other.org/uid/${uid}`;
    expect(decodeSecret((await ask(mine).next(15_000)).resources[0]!).name).toBe(mine);
    const wrong = await ask(`${TD}/uid/${uid}`).ended;
    expect(wrong.code).toBe(7); // PERMISSION_DENIED
    expect(app.store.get(`${TD}/uid/${uid}`)).toBeUndefined();
  }, 60_000);
});
