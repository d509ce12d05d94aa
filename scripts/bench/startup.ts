/**
 * `npm run bench:startup`: start-up time, spawn -> first SDS response served, of
 *   - floor: a bare grpc-js server answering a canned response (scripts/bench/startup-floor.ts),
 *   - file:  `node dist/cli/main.js --config sds.yaml` serving one certificate and one bundle from files,
 *   - ca:    `node dist/cli/main.js --data-dir D` (no sources: the embedded CA issues the default
 *            identity; its root is already kept in D, as after a restart),
 * and each one's RSS once it has served and the stream is gone (idle, no streams).
 *
 * Runs the built `dist/` (what `bin` runs: `npm run build` first). Spawns alternate between the
 * three, each round in a rotated order, after one discarded warm-up spawn each (disk cache, CA
 * data dir). A client in this process connects as soon as the socket accepts (polling every 2 ms)
 * and sends one StreamSecrets request; the time is from just before spawn() to the response's
 * last byte. Options: --spawns=N (per mode, default 7), --idle-ms=MS (wait before reading idle
 * RSS, default 2000), --no-build.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs/promises';
import { readFileSync } from 'node:fs';
import http2 from 'node:http2';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { createRootCa, issueLeaf } from '../../src/x509/issue.js';
import { GrpcMessageReader, SDS_V3_STREAM_PATH, SECRET_TYPE_URL_V3, encodeDiscoveryRequest, encodeNode, grpcFrame, median, wallMs } from './common.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const OUT = path.join(ROOT, '.tmp/bench/startup');
const FILE_NAME = 'spiffe://example.org/bench';
const CA_NAME = 'spiffe://example.org/sds-server';

export type StartupMode = 'floor' | 'file' | 'ca';
const MODES: StartupMode[] = ['floor', 'file', 'ca'];

export interface StartupOptions {
  spawns: number;
  idleMs: number;
  build: boolean;
  log: (line: string) => void;
}

export interface StartupResult {
  /** Spawn -> first response served (ms), one per measured spawn. */
  firstResponseMs: Record<StartupMode, number[]>;
  /** RSS (bytes) `idleMs` after the first response, the stream closed. */
  idleRss: Record<StartupMode, number[]>;
  /**
   * CPU time (ms, all threads, 10 ms ticks) the process used until its first response: the work
   * start-up does, which a busy machine stretches in wall time but does not change.
   */
  cpuMs: Record<StartupMode, number[]>;
  loadavg: string[];
}

/** The rows `npm run bench` prints (same columns as its table). */
export interface StartupRow {
  metric: string;
  n: string;
  sds: string;
  floor: string;
  ratio: string;
  target: string;
  met: string;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const loadavg = (): string => readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ');

/** `npm run build`, and the floor server transpiled to JavaScript (esbuild, no bundling). */
async function build(opts: StartupOptions): Promise<void> {
  if (opts.build) {
    opts.log('building dist/ (npm run build)');
    execFileSync('npm', ['run', '--silent', 'build'], { cwd: ROOT, stdio: 'inherit' });
  }
  const esbuild = await import('esbuild');
  await fs.mkdir(OUT, { recursive: true });
  await esbuild.build({ entryPoints: [path.join(ROOT, 'scripts/bench/startup-floor.ts')], outfile: path.join(OUT, 'startup-floor.mjs'), platform: 'node', format: 'esm', logLevel: 'warning' });
}

interface Fixture {
  dir: string;
  config: string;
  dataDir: string;
}

async function makeFixture(): Promise<Fixture> {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'sds-startup-'));
  const ca = await createRootCa({ trustDomain: 'example.org' });
  const leaf = await issueLeaf(ca, { spiffeId: FILE_NAME });
  await fs.writeFile(path.join(dir, 'tls.crt'), leaf.chainPem);
  await fs.writeFile(path.join(dir, 'tls.key'), leaf.keyPem);
  await fs.writeFile(path.join(dir, 'ca.crt'), ca.certPem);
  const config = path.join(dir, 'sds.yaml');
  await fs.writeFile(
    config,
    [
      'certificates:',
      `  - { name: "${FILE_NAME}", cert: tls.crt, key: tls.key }`,
      'bundles:',
      '  - { name: "spiffe://example.org", ca: [ca.crt] }',
      'log: { level: warn }',
      '',
    ].join('\n'),
  );
  return { dir, config, dataDir: path.join(dir, 'ca-data') };
}

function command(mode: StartupMode, fx: Fixture, socket: string): { args: string[]; name: string } {
  const main = path.join(ROOT, 'dist/cli/main.js');
  switch (mode) {
    case 'floor':
      return { args: [path.join(OUT, 'startup-floor.mjs'), socket], name: FILE_NAME };
    case 'file':
      return { args: [main, '--config', fx.config, '--socket', socket], name: FILE_NAME };
    case 'ca':
      return { args: [main, '--socket', socket, '--data-dir', fx.dataDir, '--log-level', 'warn'], name: CA_NAME };
  }
}

/** One StreamSecrets request on a fresh connection; resolves when a whole response message arrived. */
function requestOnce(socket: string, name: string): Promise<number> {
  return new Promise((resolve, reject) => {
    let settled = false;
    const session = http2.connect('http://localhost', { createConnection: () => net.connect(socket) });
    const finish = (err: Error | undefined, at?: number): void => {
      if (settled) return;
      settled = true;
      session.destroy();
      if (err) reject(err);
      else resolve(at!);
    };
    session.on('error', (err) => finish(err));
    const req = session.request({ ':method': 'POST', ':path': SDS_V3_STREAM_PATH, 'content-type': 'application/grpc', te: 'trailers' });
    const reader = new GrpcMessageReader(() => finish(undefined, wallMs()));
    req.on('data', (chunk: Buffer) => reader.push(chunk));
    req.on('error', (err) => finish(err));
    req.on('close', () => finish(new Error(`stream closed without a response (grpc-status ${String(req.rstCode)})`)));
    req.write(grpcFrame(encodeDiscoveryRequest({ node: encodeNode('startup-bench', 'bench'), names: [name], typeUrl: SECRET_TYPE_URL_V3 })));
  });
}

/** Retries while the socket is missing or not listening yet; other failures are real. */
async function firstResponse(socket: string, name: string, child: ChildProcess, timeoutMs: number): Promise<number> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`the server exited (${child.exitCode}) before serving`);
    try {
      return await requestOnce(socket, name);
    } catch (err) {
      // grpc's pending-stream error carries the connect error as its cause.
      const e = err as NodeJS.ErrnoException & { cause?: NodeJS.ErrnoException };
      const code = e.code === 'ENOENT' || e.code === 'ECONNREFUSED' ? e.code : e.cause?.code;
      if ((code !== 'ENOENT' && code !== 'ECONNREFUSED') || Date.now() > deadline) throw err;
      await sleep(2);
    }
  }
}

function cpuMsOf(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
  return (Number(fields[11]) + Number(fields[12])) * 10;
}

function rssOf(pid: number): number {
  const kib = /VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1];
  return Number(kib) * 1024;
}

async function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
  await exited;
  clearTimeout(timer);
}

async function spawnOnce(mode: StartupMode, fx: Fixture, serial: number, idleMs: number): Promise<{ ms: number; rss: number; cpuMs: number }> {
  const socket = path.join(fx.dir, `${mode}-${serial}.sock`);
  const { args, name } = command(mode, fx, socket);
  let stderr = '';
  const t0 = wallMs();
  const child = spawn(process.execPath, args, { cwd: ROOT, stdio: ['ignore', 'ignore', 'pipe'] });
  child.stderr!.on('data', (c: Buffer) => void (stderr += c.toString()));
  try {
    const at = await firstResponse(socket, name, child, 30_000);
    const cpuMs = cpuMsOf(child.pid!);
    await sleep(idleMs);
    return { ms: at - t0, rss: rssOf(child.pid!), cpuMs };
  } catch (err) {
    throw new Error(`${mode}: ${(err as Error).message}\n${stderr}`);
  } finally {
    await stopChild(child);
  }
}

/** Measures every mode `opts.spawns` times, alternating. */
export async function measureStartup(opts: StartupOptions): Promise<StartupResult> {
  await build(opts);
  const fx = await makeFixture();
  const result: StartupResult = { firstResponseMs: { floor: [], file: [], ca: [] }, idleRss: { floor: [], file: [], ca: [] }, cpuMs: { floor: [], file: [], ca: [] }, loadavg: [loadavg()] };
  let serial = 0;
  try {
    for (const mode of MODES) await spawnOnce(mode, fx, serial++, 0); // warm-up (and the CA's root)
    for (let round = 0; round < opts.spawns; round++) {
      for (let k = 0; k < MODES.length; k++) {
        const mode = MODES[(round + k) % MODES.length]!;
        const r = await spawnOnce(mode, fx, serial++, opts.idleMs);
        result.firstResponseMs[mode].push(r.ms);
        result.idleRss[mode].push(r.rss);
        result.cpuMs[mode].push(r.cpuMs);
      }
      opts.log(`  round ${round + 1}/${opts.spawns}: ${MODES.map((m) => `${m} ${result.firstResponseMs[m].at(-1)!.toFixed(0)} ms`).join(', ')}`);
    }
  } finally {
    await fs.rm(fx.dir, { recursive: true, force: true });
  }
  result.loadavg.push(loadavg());
  return result;
}

const fmt = (v: number, digits = 0): string => (Number.isNaN(v) ? 'n/a' : v.toFixed(digits));
const MiB = 1024 * 1024;

/** Rows for the `npm run bench` table: medians, the ratio to the floor, the targets of issue 14. */
export function startupRows(r: StartupResult): { rows: StartupRow[]; notes: string[] } {
  const floor = median(r.firstResponseMs.floor);
  const rows: StartupRow[] = [];
  for (const mode of ['file', 'ca'] as const) {
    const m = median(r.firstResponseMs[mode]);
    rows.push({
      metric: `start-up: spawn -> first response, ${mode === 'file' ? 'file mode' : 'embedded CA'} (ms)`,
      n: String(r.firstResponseMs[mode].length),
      sds: fmt(m),
      floor: fmt(floor),
      ratio: `${(m / floor).toFixed(2)}x`,
      target: '<= 1.3x floor',
      met: m <= 1.3 * floor ? 'yes' : '**NO**',
    });
  }
  for (const mode of ['file', 'ca'] as const) {
    const m = median(r.cpuMs[mode]);
    const f = median(r.cpuMs.floor);
    rows.push({
      metric: `start-up: CPU time until first response, ${mode === 'file' ? 'file mode' : 'embedded CA'} (ms)`,
      n: String(r.cpuMs[mode].length),
      sds: fmt(m),
      floor: fmt(f),
      ratio: `${(m / f).toFixed(2)}x`,
      target: '',
      met: '',
    });
  }
  for (const mode of ['file', 'ca'] as const) {
    const m = median(r.idleRss[mode]);
    rows.push({
      metric: `idle RSS after start, no streams, ${mode === 'file' ? 'file mode' : 'embedded CA'} (MiB)`,
      n: String(r.idleRss[mode].length),
      sds: fmt(m / MiB, 1),
      floor: fmt(median(r.idleRss.floor) / MiB, 1),
      ratio: `${(m / median(r.idleRss.floor)).toFixed(2)}x`,
      target: '<= 55 MiB (SPIRE agent)',
      met: m <= 55 * MiB ? 'yes' : '**NO**',
    });
  }
  const spread = (xs: number[]): string => `${fmt(Math.min(...xs))}-${fmt(Math.max(...xs))}`;
  const notes = [
    `start-up spread (min-max ms): floor ${spread(r.firstResponseMs.floor)}, file ${spread(r.firstResponseMs.file)}, embedded CA ${spread(r.firstResponseMs.ca)}; load average before/after: ${r.loadavg.join(' / ')}`,
  ];
  return { rows, notes };
}

function table(rows: StartupRow[]): string {
  const head: StartupRow = { metric: 'metric', n: 'spawns', sds: 'sds-server', floor: 'grpc-js floor', ratio: 'ratio', target: 'target', met: 'met' };
  const keys = Object.keys(head) as Array<keyof StartupRow>;
  const widths = keys.map((k) => Math.max(...[head, ...rows].map((row) => row[k].length)));
  const line = (row: StartupRow): string => `| ${keys.map((k, i) => row[k].padEnd(widths[i]!)).join(' | ')} |`;
  return [line(head), `|${widths.map((w) => '-'.repeat(w + 2)).join('|')}|`, ...rows.map(line)].join('\n');
}

async function main(): Promise<void> {
  const argv = process.argv.slice(2);
  const num = (name: string, dflt: number): number => Number(argv.find((a) => a.startsWith(`--${name}=`))?.split('=')[1] ?? dflt);
  const result = await measureStartup({
    spawns: num('spawns', 7),
    idleMs: num('idle-ms', 2000),
    build: !argv.includes('--no-build'),
    log: (s) => void process.stderr.write(`${s}\n`),
  });
  const { rows, notes } = startupRows(result);
  process.stdout.write(`\n${table(rows)}\n\n${notes.map((n) => `- ${n}`).join('\n')}\n- node ${process.version}, ${os.availableParallelism()} CPUs\n`);
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  main().then(
    () => process.exit(0),
    (err: Error) => {
      process.stderr.write(`bench:startup failed: ${err.stack ?? err.message}\n`);
      process.exit(1);
    },
  );
}
