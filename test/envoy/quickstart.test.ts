/**
 * The README's "Quickstart: two Envoys, mTLS, on your laptop", followed as a newcomer would: from a
 * fresh `git clone` of the committed tree (HEAD; uncommitted edits are not seen), the README's
 * setup commands, then each "terminal N" command of its second block, literally, in the clone.
 *
 * Two setup steps are done by their equivalent, which the test checks the README still names:
 * `npm ci` becomes a symlink to this checkout's node_modules plus `npm run prepare` (the step npm ci
 * runs after installing; a real npm ci would fetch every package), and
 * `bash scripts/envoy/install-envoy.sh` becomes `.venv/envoy/bin/envoy` linked to the Envoy the
 * other tests use (it would download the wheel). The rest (the PATH line, sds-server through npx,
 * both Envoys, both curls) runs as written, on the README's ports and socket path, so a port already
 * taken on this machine fails the test with a message naming it.
 *
 * Without Envoy the quickstart is skipped with a note (under CI, `CI` set, it fails); the first
 * part, that `npm ci`'s prepare step leaves a working bin and that `npm start` does not rebuild a
 * current dist/, runs everywhere.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, symlinkSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { REPO_ROOT, describeWithEnvoy } from './find-envoy.js';

/** The README's quickstart section: its code blocks in order (setup, terminals, expected output). */
function quickstartBlocks(readme: string): string[] {
  const start = readme.indexOf('\n## Quickstart');
  expect(start, 'README.md has a "## Quickstart" section').toBeGreaterThan(0);
  const end = readme.indexOf('\n## ', start + 1);
  const section = readme.slice(start, end < 0 ? undefined : end);
  return [...section.matchAll(/```[a-z]*\n([\s\S]*?)```/g)].map((m) => m[1] ?? '');
}

/** A shell line without its trailing `# comment`. */
const command = (line: string): string => line.replace(/\s+#\s.*$/, '').trim();

/** `terminal N` -> its commands, in README order. */
function terminals(block: string): Map<number, string[]> {
  const out = new Map<number, string[]>();
  for (const line of block.split('\n').filter((l) => l.trim())) {
    const n = /#\s*terminal (\d+):/.exec(line)?.[1];
    expect(n, `every quickstart command says which terminal it runs in: ${line}`).toBeDefined();
    out.set(Number(n), [...(out.get(Number(n)) ?? []), command(line)]);
  }
  return out;
}

const README_SETUP = ['npm ci', 'bash scripts/envoy/install-envoy.sh', 'export PATH="$PWD/.venv/envoy/bin:$PATH"'];

let work: string;
let clone: string;

/** Runs `cmd` with bash in the clone, as the newcomer's shell would (PWD = the clone). */
function sh(cmd: string, env: NodeJS.ProcessEnv = {}, timeoutMs = 120_000): string {
  return execFileSync('bash', ['-c', cmd], { cwd: clone, env: { ...process.env, PWD: clone, XDG_DATA_HOME: path.join(work, 'data'), ...env }, encoding: 'utf8', timeout: timeoutMs });
}

/** Every file under `dir` with its modification time. */
function mtimes(dir: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const f of readdirSync(dir, { recursive: true, encoding: 'utf8' })) {
    const st = statSync(path.join(dir, f));
    if (st.isFile()) out.set(f, st.mtimeMs);
  }
  return out;
}

beforeAll(() => {
  work = mkdtempSync(path.join(tmpdir(), 'sds-quickstart-test-'));
  clone = path.join(work, 'clone');
  const head = execFileSync('git', ['rev-parse', 'HEAD'], { cwd: REPO_ROOT, encoding: 'utf8' }).trim();
  execFileSync('git', ['clone', '--quiet', '--no-checkout', REPO_ROOT, clone]);
  execFileSync('git', ['checkout', '--quiet', '--detach', head], { cwd: clone });
  // `npm ci`, minus the download: the same packages, then the lifecycle step npm ci runs last.
  symlinkSync(path.join(REPO_ROOT, 'node_modules'), path.join(clone, 'node_modules'));
  sh('npm run --silent prepare');
}, 240_000);

afterAll(() => {
  if (work) rmSync(work, { recursive: true, force: true });
});

describe('a fresh clone after `npm ci` (its prepare step)', () => {
  it('the bin works: node dist/cli/main.js --version, npx sds-server --help', () => {
    const version = (JSON.parse(readFileSync(path.join(clone, 'package.json'), 'utf8')) as { version: string }).version;
    expect(sh('node dist/cli/main.js --version').trim()).toBe(version);
    // npm_config_cache: npx links the project into its cache; keep that out of ~/.npm.
    expect(sh('npx sds-server --help', { npm_config_cache: path.join(work, 'npm-cache') })).toMatch(/^Usage: sds-server \[options\]/);
  });

  it('npm start does not rebuild a current dist/: its prestart step writes no file', () => {
    const before = mtimes(path.join(clone, 'dist'));
    expect(before.size).toBeGreaterThan(10);
    sh('npm run --silent prestart');
    expect(mtimes(path.join(clone, 'dist'))).toEqual(before);
  });
});

/** Resolves when `port` on 127.0.0.1 accepts nothing (free), else rejects naming it. */
async function assertFree(port: number): Promise<void> {
  const inUse = await new Promise<boolean>((resolve) => {
    const s = net.connect({ host: '127.0.0.1', port }, () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
  if (inUse) throw new Error(`127.0.0.1:${port} is already in use on this machine; the README quickstart needs it`);
}

describeWithEnvoy('README quickstart: two Envoys, mTLS, from a fresh clone', (envoyBin) => {
  const readme = readFileSync(path.join(REPO_ROOT, 'README.md'), 'utf8');
  const [setup = '', run = '', expected = ''] = quickstartBlocks(readme);
  const running: { name: string; child: ChildProcess; output: string[] }[] = [];

  afterAll(async () => {
    // Ctrl-C in each terminal: the whole process group (npx, its shell, node; Envoy).
    await Promise.all(
      running.map(async ({ child }) => {
        if (child.exitCode !== null || child.signalCode !== null) return;
        const gone = new Promise((resolve) => child.once('exit', resolve));
        process.kill(-child.pid!, 'SIGINT');
        const timer = setTimeout(() => process.kill(-child.pid!, 'SIGKILL'), 10_000);
        await gone;
        clearTimeout(timer);
      }),
    );
  });

  it('the setup block is npm ci, install-envoy.sh and the PATH line (what this test stands in for)', () => {
    expect(setup.split('\n').map(command).filter(Boolean)).toEqual(README_SETUP);
  });

  it('front -> back over mTLS: back saw the client certificate spiffe://example.org/front, front saw spiffe://example.org/back', async () => {
    for (const port of [9901, 9902, 10000, 10001]) await assertFree(port);
    // install-envoy.sh's result: the Envoy at .venv/envoy/bin/envoy.
    mkdirSync(path.join(clone, '.venv', 'envoy', 'bin'), { recursive: true });
    symlinkSync(envoyBin, path.join(clone, '.venv', 'envoy', 'bin', 'envoy'));
    const exportPath = README_SETUP[2]!;
    const env = { ...process.env, PWD: clone, XDG_DATA_HOME: path.join(work, 'data'), npm_config_cache: path.join(work, 'npm-cache') };

    const byTerminal = terminals(run);
    const numbers = [...byTerminal.keys()].sort((a, b) => a - b);
    expect(numbers).toEqual([1, 2, 3, 4]);
    const last = numbers.pop()!;
    // Terminals 1-3 keep running: one process group each, as a terminal's foreground job.
    for (const n of numbers) {
      const cmds = byTerminal.get(n)!;
      expect(cmds, `terminal ${n} runs one long-lived command`).toHaveLength(1);
      const child = spawn('bash', ['-c', `${exportPath}\n${cmds[0]}`], { cwd: clone, env, detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
      const output: string[] = [];
      child.stdout?.on('data', (d: Buffer) => output.push(d.toString()));
      child.stderr?.on('data', (d: Buffer) => output.push(d.toString()));
      running.push({ name: `terminal ${n}: ${cmds[0]}`, child, output });
    }
    // The last terminal: each command to completion (curl retries until both Envoys have their secrets).
    const outputs: string[] = [];
    try {
      for (const cmd of byTerminal.get(last)!) outputs.push(execFileSync('bash', ['-c', `${exportPath}\n${cmd}`], { cwd: clone, env, encoding: 'utf8', timeout: 60_000 }));
    } catch (err) {
      const logs = running.map((r) => `--- ${r.name} (exit ${r.child.exitCode ?? r.child.signalCode ?? 'running'})\n${r.output.join('').slice(-3000)}`).join('\n');
      throw new Error(`${(err as Error).message}\n${logs}`);
    }
    for (const r of running) expect(r.child.exitCode, `${r.name} is still running`).toBeNull();

    const [response = '', stats = '', status = ''] = outputs;
    expect(response).toMatch(/^HTTP\/1\.1 200 OK\r?$/m);
    // Back's Envoy required and verified a client certificate, and it named front's SPIFFE ID.
    expect(response).toMatch(/^x-client-spiffe-id: spiffe:\/\/example\.org\/front\r?$/m);
    expect(response).toMatch(/^x-back-spiffe-id: spiffe:\/\/example\.org\/back\r?$/m);
    expect(response).toMatch(/^hello from back$/m);
    expect(Number(/listener\.127\.0\.0\.1_10001\.ssl\.handshake: (\d+)/.exec(stats)?.[1])).toBeGreaterThanOrEqual(1);

    // Terminal 1 says it listens (at the quickstart's log level), not only a warning. Its pipe is
    // read only now: execFileSync above held the event loop.
    const terminal1 = running[0]!;
    const listening = await new Promise<boolean>((resolve) => {
      const timer = setTimeout(() => done(false), 5_000);
      const check = (): void => {
        if (/"msg":"listening"/.test(terminal1.output.join(''))) done(true);
      };
      const done = (seen: boolean): void => {
        clearTimeout(timer);
        terminal1.child.stdout?.off('data', check);
        resolve(seen);
      };
      terminal1.child.stdout?.on('data', check);
      check();
    });
    expect(listening, `terminal 1 logs "listening":\n${terminal1.output.join('')}`).toBe(true);
    // The server's admin (README's `sds-server status`): both Envoys' streams, by node id.
    expect(status).toMatch(/^[1-9]\d* open stream\(s\)$/m);
    expect(status).toMatch(/^\S+\s+.*\bfront\b/m);
    expect(status).toMatch(/^\S+\s+.*\bback\b/m);

    // And what the README says you will see is what was seen.
    const seen = `${response}\n${stats}`.replace(/\r/g, '').replace(/handshake: \d+/, 'handshake: N');
    for (const line of expected.split('\n').map((l) => l.replace(/\s+<-.*$/, '').trim())) {
      if (!line || line === '...') continue;
      expect(seen.split('\n'), `README's expected output line "${line}"`).toContain(line.replace(/handshake: \d+/, 'handshake: N'));
    }
  }, 120_000);
});
