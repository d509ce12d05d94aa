/**
 * `npm run bench`: load and fan-out benchmark of the SDS server against a grpc-js floor.
 *
 * Processes: this orchestrator; the server under test (scripts/bench/sds-entry.ts: the real app
 * built by startApp from a file config) or the floor (scripts/bench/floor-entry.ts); and ONE
 * separate load generator (scripts/bench/loadgen.ts) speaking SDS over the Unix socket with ACKs.
 * Every server process is fresh for each scenario, so its memory figures start from a clean heap.
 * The children run as plain JavaScript compiled by tsc (scripts/bench/tsconfig.json ->
 * .tmp/bench/out), i.e. the code `node dist/cli/main.js` runs, not tsx's transform of it.
 *
 * Options: --write (update BENCHMARKS.md), --quick (short churn/idle, fewer rotations: a smoke
 * test, not the specified figures), --only=fanout,storm2k,churn (subset), --levels=100,1000
 * (fan-out levels), --profile (server CPU profiles into the temp dir), --heap-snapshot (server
 * heap snapshots after subscribing), --churn-floor (also churn the floor).
 * --only=startup: the start-up comparison alone (scripts/bench/startup.ts, also bench:startup).
 * --peer spire: instead, the side-by-side comparison with SPIRE agent (scripts/bench/spire/compare.ts).
 * `--only=rotation`: file rotation to real Envoy, this server against Envoy's own file-based SDS
 * (scripts/bench/rotation-vs-envoy.ts; also `npm run bench:rotation`).
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs/promises';
import { readFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { createRootCa, issueLeaf } from '../../src/x509/issue.js';
import type { KeyType } from '../../src/x509/keys.js';
import { BenchChild, median, percentile, wallMs, type ProcessSample, type StormReply } from './common.js';
import { measureStartup, startupRows, type StartupRow } from './startup.js';
import { runSpireComparison, wantsSpirePeer } from './spire/compare.js';
import { runRotationVsEnvoy, type RotationBenchResult } from './rotation-vs-envoy.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const OUT = path.join(ROOT, '.tmp/bench/out');
const HERE = path.join(OUT, 'scripts/bench');
const argv = process.argv.slice(2);
const QUICK = argv.includes('--quick');
const WRITE = argv.includes('--write');
const PROFILE = argv.includes('--profile');
const HEAP_SNAPSHOT = argv.includes('--heap-snapshot');
const ONLY = argv.find((a) => a.startsWith('--only='))?.slice('--only='.length).split(',');
const wanted = (part: string): boolean => !ONLY || ONLY.includes(part);
const LEVELS = argv.find((a) => a.startsWith('--levels='))?.slice('--levels='.length).split(',').map(Number);

const ROTATIONS = QUICK ? 5 : 12; // measured, after one warm-up rotation
const IDLE_SECONDS = QUICK ? 5 : 30;
const CHURN_SECONDS = QUICK ? 10 : 60;
const CHURN_WARMUP_SECONDS = QUICK ? 2 : 5;
const CHURN_RATE = 500;
const NAME = 'spiffe://example.org/bench';

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const KiB = 1024;
const MiB = 1024 * 1024;

// ---- child processes ---------------------------------------------------------------------------

type Sample = ProcessSample & { warnings: number; errors: number; watchers: number };

// ---- fixtures ----------------------------------------------------------------------------------

interface Fixture {
  dir: string;
  config: string;
  pairs: string;
  certDir: string;
}

/** `keyType`: the leaves' key; RSA-2048 for the floor comparison, P-256 (SPIRE's) for `--peer spire`. */
async function makeFixture(keyType: KeyType = 'rsa-2048'): Promise<Fixture> {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'sds-bench-'));
  const ca = await createRootCa({ trustDomain: 'example.org' });
  // RSA-2048 leaves by default: one Secret is ~2.9 KB on the wire, close to the floor's 3 KB message.
  // One pair per rotation of a scenario (+ the initial one), so no version repeats within a scenario.
  const pairs = [];
  for (let i = 0; i < ROTATIONS + 2; i++) {
    const leaf = await issueLeaf(ca, { spiffeId: NAME, keyType });
    pairs.push({ chainPem: leaf.chainPem, keyPem: leaf.keyPem });
  }
  const certDir = path.join(dir, 'certs');
  await fs.mkdir(certDir);
  await fs.writeFile(path.join(certDir, 'tls.crt'), pairs[0]!.chainPem);
  await fs.writeFile(path.join(certDir, 'tls.key'), pairs[0]!.keyPem);
  const pairsFile = path.join(dir, 'pairs.json');
  await fs.writeFile(pairsFile, JSON.stringify(pairs));
  const config = path.join(dir, 'sds.yaml');
  // Defaults otherwise (no debounce, poll 10 s): what an operator would run.
  await fs.writeFile(config, [`certificates:`, `  - { name: "${NAME}", cert: certs/tls.crt, key: certs/tls.key }`, `log: { level: warn }`, ''].join('\n'));
  return { dir, config, pairs: pairsFile, certDir };
}

type Target = 'sds' | 'floor';
let serial = 0;

async function startTarget(target: Target, fx: Fixture): Promise<{ child: BenchChild<Sample>; socket: string }> {
  serial += 1;
  const socket = path.join(fx.dir, `${target}-${serial}.sock`);
  const prof = PROFILE ? ['--cpu-prof', `--cpu-prof-dir=${path.join(fx.dir, `profiles-${target}-${serial}`)}`] : [];
  const child =
    target === 'sds'
      ? await BenchChild.start<Sample>('sds-server', path.join(HERE, 'sds-entry.js'), ['--config', fx.config, '--socket', socket, '--dir', fx.certDir, '--pairs', fx.pairs, '--name', NAME], { cwd: ROOT, execArgv: prof })
      : await BenchChild.start<Sample>('floor', path.join(HERE, 'floor-entry.js'), ['--socket', socket], { cwd: ROOT, execArgv: prof });
  return { child, socket };
}

/** Compiles src/ and the bench processes to JavaScript (about 10 s). */
async function build(): Promise<void> {
  try {
    execFileSync(process.execPath, [path.join(ROOT, 'node_modules/typescript/bin/tsc'), '-p', path.join(ROOT, 'scripts/bench/tsconfig.json')], { stdio: 'inherit' });
  } catch {
    // tsc still emits; a type error elsewhere in the tree need not stop a measurement.
    process.stderr.write('tsc reported errors (above); benchmarking the emitted JavaScript anyway\n');
  }
  // src/api/proto-root.ts finds the .proto files at ../../proto from its own module.
  const link = path.join(OUT, 'proto');
  await fs.rm(link, { force: true });
  await fs.symlink(path.join(ROOT, 'proto'), link);
}

// ---- scenarios ---------------------------------------------------------------------------------


interface LevelResult {
  n: number;
  conns: number;
  perConn: number;
  storm: StormReply;
  rssPerStream: number;
  heapPerStream: number;
  /** V8 heap committed (used + free) and off-heap (Buffers) per stream: where RSS goes. */
  heapTotalPerStream: number;
  externalPerStream: number;
  rssBefore: number;
  rssAfter: number;
  fanoutMs: number[];
  fromRenameMs: number[];
  /** CPU time per rotation (ms) of the server and of the load generator: push, N ACKs, and for the sds-server the file re-read. */
  serverCpuMs: number[];
  loadgenCpuMs: number[];
  /** Publish -> the store has called every subscriber (the synchronous part of a push). */
  loopMs: number[];
  /** Publish -> FIRST client received (latency floor of one delivery). */
  firstMs: number[];
  incomplete: number;
  warnings: number;
  errors: number;
}

interface Held {
  child: BenchChild<Sample>;
  group: string;
}

async function runLevel(target: Target, fx: Fixture, loadgen: BenchChild<Sample>, n: number, conns: number, perConn: number, rotations: number, hold: boolean): Promise<{ result: LevelResult; held?: Held }> {
  const { child, socket } = await startTarget(target, fx);
  await sleep(300);
  const before = await child.sample();
  const group = `${target}-${n}-${serial}`;
  const storm = await loadgen.call<StormReply>('open', { group, socket, conns, perConn, name: NAME });
  await sleep(500);
  const after = await child.sample();
  if (HEAP_SNAPSHOT) process.stderr.write(`  heap snapshot: ${await child.call<string>('heapSnapshot', { file: path.join(fx.dir, `${target}-${n}.heapsnapshot`) })}\n`);
  const fanoutMs: number[] = [];
  const fromRenameMs: number[] = [];
  let incomplete = 0;
  const firstMs: number[] = [];
  const loopMs: number[] = [];
  const serverCpuMs: number[] = [];
  const loadgenCpuMs: number[] = [];
  for (let i = 0; i <= rotations; i++) {
    await loadgen.call('arm', { group });
    const cpuS0 = await child.sample(false);
    const cpuL0 = await loadgen.sample(false);
    const r = await child.call<{ renamedAt: number; publishedAt: number; loopDoneAt?: number; version: string }>('rotate');
    const w = await loadgen.call<{ complete: boolean; firstAt?: number; lastAt?: number; count: number }>('wait', { group, version: r.version, timeoutMs: 30_000 });
    // Let the ACKs land and the file watcher's events of this rotation settle, so rotations never merge.
    await sleep(150);
    const cpuS1 = await child.sample(false);
    const cpuL1 = await loadgen.sample(false);
    if (!w.complete || w.lastAt === undefined) {
      incomplete += 1;
      process.stderr.write(`  ${target} N=${n}: rotation ${i}: only ${w.count} of ${n} streams received ${r.version}\n`);
    } else if (i > 0) {
      fanoutMs.push(w.lastAt - r.publishedAt);
      fromRenameMs.push(w.lastAt - r.renamedAt);
      firstMs.push(w.firstAt! - r.publishedAt);
      if (r.loopDoneAt) loopMs.push(r.loopDoneAt - r.publishedAt);
      serverCpuMs.push((cpuS1.cpuUserUs + cpuS1.cpuSystemUs - cpuS0.cpuUserUs - cpuS0.cpuSystemUs) / 1000);
      loadgenCpuMs.push((cpuL1.cpuUserUs + cpuL1.cpuSystemUs - cpuL0.cpuUserUs - cpuL0.cpuSystemUs) / 1000);
    }
  }
  const end = await child.sample(false);
  const result: LevelResult = {
    n,
    conns,
    perConn,
    storm,
    rssBefore: before.rss,
    rssAfter: after.rss,
    rssPerStream: (after.rss - before.rss) / n,
    heapPerStream: (after.heapUsed - before.heapUsed) / n,
    heapTotalPerStream: (after.heapTotal - before.heapTotal) / n,
    externalPerStream: (after.external - before.external) / n,
    fanoutMs,
    fromRenameMs,
    firstMs,
    loopMs,
    serverCpuMs,
    loadgenCpuMs,
    incomplete,
    warnings: end.warnings,
    errors: end.errors,
  };
  if (hold) return { result, held: { child, group } };
  await loadgen.call('close', { group });
  await child.stop();
  return { result };
}

interface IdleResult {
  seconds: number;
  cpuPercent: number;
  /** The busiest 5 s slice, in % of one core. */
  maxSlicePercent: number;
  streams: number;
}

async function measureIdle(held: Held[], loadgen: BenchChild<Sample>, seconds: number): Promise<IdleResult[]> {
  // Start from a collected heap, then sample in 5 s slices (to show any one-off burst).
  await Promise.all(held.map((h) => h.child.sample(true)));
  await sleep(2000);
  const cpuMs = (x: ProcessSample): number => (x.cpuUserUs + x.cpuSystemUs) / 1000;
  const first = await Promise.all(held.map((h) => h.child.sample(false)));
  const lgFirst = await loadgen.sample(false);
  let prev = first;
  const slices: number[][] = held.map(() => []);
  const sliceS = 5;
  for (let t = 0; t < seconds; t += sliceS) {
    await sleep(Math.min(sliceS, seconds - t) * 1000);
    const now = await Promise.all(held.map((h) => h.child.sample(false)));
    now.forEach((x, i) => slices[i]!.push(((cpuMs(x) - cpuMs(prev[i]!)) / (x.at - prev[i]!.at)) * 100));
    prev = now;
  }
  const lgLast = await loadgen.sample(false);
  loadgenIdleCpu = ((cpuMs(lgLast) - cpuMs(lgFirst)) / (lgLast.at - lgFirst.at)) * 100;
  return held.map((_, i) => ({
    seconds: (prev[i]!.at - first[i]!.at) / 1000,
    cpuPercent: ((cpuMs(prev[i]!) - cpuMs(first[i]!)) / (prev[i]!.at - first[i]!.at)) * 100,
    maxSlicePercent: Math.max(...slices[i]!),
    streams: prev[i]!.watchers,
  }));
}
let loadgenIdleCpu = NaN;

interface ChurnResult {
  before: Sample;
  after: Sample;
  stats: { opened: number; served: number; errors: number; errorSamples: string[]; refused: number; connections: number; peakOpenStreams: number; openPerSecond: number; firstResponseP50Ms: number; firstResponseP99Ms: number; cancelled: number; halfClosedOk: number; aborted: number };
  serverWarnings: number;
  serverErrors: number;
}

async function runChurn(target: Target, fx: Fixture, loadgen: BenchChild<Sample>): Promise<ChurnResult> {
  const { child, socket } = await startTarget(target, fx);
  await sleep(300);
  // Warm-up: JIT, heap sizing, grpc-js lazy state; the leak check compares steady states.
  await loadgen.call('churn', { socket, name: NAME, rate: CHURN_RATE, seconds: CHURN_WARMUP_SECONDS });
  await sleep(1500);
  const before = await child.sample();
  const stats = await loadgen.call<ChurnResult['stats']>('churn', { socket, name: NAME, rate: CHURN_RATE, seconds: CHURN_SECONDS });
  await sleep(2000);
  const after = await child.sample();
  await child.stop();
  return { before, after, stats, serverWarnings: after.warnings, serverErrors: after.errors };
}

// ---- report ------------------------------------------------------------------------------------

/** A row of the report table (startup.ts defines the columns for both). */
type Row = StartupRow;

const fmt = (v: number | undefined, digits = 1): string => (v === undefined || Number.isNaN(v) ? 'n/a' : v.toFixed(digits));
const ratio = (a: number | undefined, b: number | undefined): string => (a === undefined || b === undefined || !b || Number.isNaN(a) || Number.isNaN(b) ? '' : `${(a / b).toFixed(2)}x`);
const yes = (ok: boolean): string => (ok ? 'yes' : '**NO**');

function table(rows: Row[]): string {
  const head: Row = { metric: 'metric', n: 'N', sds: 'sds-server', floor: 'floor', ratio: 'ratio', target: 'target', met: 'met' };
  const keys = Object.keys(head) as Array<keyof Row>;
  const widths = keys.map((k) => Math.max(...[head, ...rows].map((r) => r[k].length)));
  const line = (r: Row): string => `| ${keys.map((k, i) => r[k].padEnd(widths[i]!)).join(' | ')} |`;
  return [line(head), `|${widths.map((w) => '-'.repeat(w + 2)).join('|')}|`, ...rows.map(line)].join('\n');
}

function machine(): string[] {
  const cpuinfo = readFileSync('/proc/cpuinfo', 'utf8');
  const model = /model name\s*:\s*(.*)/.exec(cpuinfo)?.[1] ?? 'unknown';
  const grpcVersion = (JSON.parse(readFileSync(path.join(ROOT, 'node_modules/@grpc/grpc-js/package.json'), 'utf8')) as { version: string }).version;
  return [
    `- CPU: ${model}, nproc ${os.availableParallelism()}`,
    `- memory: ${(os.totalmem() / 1024 ** 3).toFixed(1)} GiB`,
    `- OS: ${os.type()} ${os.release()}`,
    `- node ${process.version}, @grpc/grpc-js ${grpcVersion}`,
  ];
}

// ---- main --------------------------------------------------------------------------------------

async function main(): Promise<void> {
  if (wantsSpirePeer(argv)) {
    // `--peer spire`: only the side-by-side comparison with SPIRE agent (scripts/bench/spire/compare.ts).
    await runSpireComparison({
      root: ROOT,
      // The bundle operators run (`npm run build`), as scripts/bench/startup.ts measures it.
      cliMain: path.join(ROOT, 'dist/cli/main.js'),
      argv,
      name: NAME,
      build: async () => {
        await build();
        execFileSync('npm', ['run', '--silent', 'build'], { cwd: ROOT, stdio: 'inherit' });
      },
      // SPIRE's SVIDs are P-256: the same key type on both sides, so responses are alike in size.
      makeFixture: () => makeFixture('ec-p256'),
      startLoadgen: () => BenchChild.start('loadgen', path.join(HERE, 'loadgen.js'), [], { cwd: ROOT }),
      machine,
    });
    return;
  }
  const t0 = wallMs();
  const log = (s: string): void => void process.stderr.write(`${s}\n`);
  log('building (tsc -p scripts/bench/tsconfig.json)');
  await build();
  const fx = await makeFixture();
  const loadgen = await BenchChild.start<Sample>('loadgen', path.join(HERE, 'loadgen.js'), [], { cwd: ROOT });
  const rows: Row[] = [];
  const notes: string[] = [];
  const levels: Array<{ n: number; conns: number; perConn: number }> = [
    { n: 100, conns: 100, perConn: 1 },
    { n: 1000, conns: 1000, perConn: 1 },
    { n: 10_000, conns: 1000, perConn: 10 },
  ];
  if (LEVELS) levels.splice(0, levels.length, ...levels.filter((l) => LEVELS.includes(l.n)));
  const fan = new Map<string, { sds: LevelResult; floor: LevelResult }>();
  let idle: IdleResult[] | undefined;
  let storm2k: { sds: LevelResult; floor: LevelResult } | undefined;
  let churnSds: ChurnResult | undefined;
  let churnFloor: ChurnResult | undefined;
  const held: Held[] = [];

  try {
    if (wanted('fanout')) {
      for (const lv of levels) {
        const hold = lv.n === 10_000 && wanted('idle');
        log(`fan-out, memory and connect storm: N=${lv.n} (${lv.conns} connections x ${lv.perConn})`);
        const floor = await runLevel('floor', fx, loadgen, lv.n, lv.conns, lv.perConn, ROTATIONS, hold);
        const sds = await runLevel('sds', fx, loadgen, lv.n, lv.conns, lv.perConn, ROTATIONS, hold);
        fan.set(String(lv.n), { sds: sds.result, floor: floor.result });
        // Both keep their 10,000 streams, idle, until the idle measurement at the end.
        if (hold && sds.held && floor.held) held.push(sds.held, floor.held);
      }
    }
    if (wanted('storm2k')) {
      log('connect storm: 2000 connections x 1 stream');
      const floor = await runLevel('floor', fx, loadgen, 2000, 2000, 1, 0, false);
      const sds = await runLevel('sds', fx, loadgen, 2000, 2000, 1, 0, false);
      storm2k = { sds: sds.result, floor: floor.result };
    }
    if (wanted('churn')) {
      log(`churn: ${CHURN_RATE} streams/s opening and closing for ${CHURN_SECONDS} s (after ${CHURN_WARMUP_SECONDS} s warm-up)`);
      churnSds = await runChurn('sds', fx, loadgen);
      // The churn targets are absolute; the floor's churn (another 65 s) only with --churn-floor.
      if (argv.includes('--churn-floor')) churnFloor = await runChurn('floor', fx, loadgen);
    }
    if (held.length === 2) {
      // Measured last: the two servers have been idle through the storm and churn scenarios
      // (other processes), so V8's one-off memory-reducing GC that follows a burst of activity
      // (~30 s later) is behind them, and the window sees the steady cost of idle streams.
      log(`idle: ${IDLE_SECONDS} s with 10000 idle streams on both servers at once`);
      idle = await measureIdle(held, loadgen, IDLE_SECONDS);
      for (const h of held) {
        await loadgen.call('close', { group: h.group });
        await h.child.stop();
      }
    }
  } finally {
    await loadgen.stop();
  }
  let rotation: RotationBenchResult | undefined;
  if (wanted('rotation')) {
    log('rotation to real Envoy: sds-server against Envoy file-based SDS');
    rotation = await runRotationVsEnvoy({ rounds: QUICK ? 1 : 3, rotations: QUICK ? 10 : 50, idleSeconds: QUICK ? 3 : 10, log });
  }
  // Start-up (scripts/bench/startup.ts): fresh processes of the built dist/, after the rest.
  const startup = wanted('startup') ? await measureStartup({ spawns: QUICK ? 3 : 7, idleMs: 2000, build: true, log }) : undefined;

  // ---- rows ----
  for (const [n, { sds, floor }] of fan) {
    const N = Number(n).toLocaleString('en-US');
    const sMed = median(sds.fanoutMs);
    const fMed = median(floor.fanoutMs);
    let target = '';
    let met = '';
    if (n === '1000') {
      target = '<= 50 ms';
      met = yes(sMed <= 50);
    } else if (n === '10000') {
      target = '<= 500 ms, <= 1.3x floor';
      met = yes(sMed <= 500 && sMed <= 1.3 * fMed);
    }
    rows.push({ metric: 'push fan-out median (ms)', n: N, sds: fmt(sMed), floor: fmt(fMed), ratio: ratio(sMed, fMed), target, met });
    rows.push({ metric: 'push fan-out p99 (ms)', n: N, sds: fmt(percentile(sds.fanoutMs, 99)), floor: fmt(percentile(floor.fanoutMs, 99)), ratio: ratio(percentile(sds.fanoutMs, 99), percentile(floor.fanoutMs, 99)), target: '', met: '' });
    rows.push({ metric: 'publish -> FIRST client, median (ms)', n: N, sds: fmt(median(sds.firstMs)), floor: fmt(median(floor.firstMs)), ratio: '', target: '', met: '' });
    rows.push({ metric: 'publish -> every stream written (ms)', n: N, sds: fmt(median(sds.loopMs)), floor: fmt(median(floor.loopMs)), ratio: ratio(median(sds.loopMs), median(floor.loopMs)), target: '', met: '' });
    rows.push({ metric: 'CPU per rotation: server / load gen (ms)', n: N, sds: `${fmt(median(sds.serverCpuMs))} / ${fmt(median(sds.loadgenCpuMs))}`, floor: `${fmt(median(floor.serverCpuMs))} / ${fmt(median(floor.loadgenCpuMs))}`, ratio: ratio(median(sds.serverCpuMs), median(floor.serverCpuMs)), target: '', met: '' });
    rows.push({ metric: 'file rename -> last client, median (ms)', n: N, sds: fmt(median(sds.fromRenameMs)), floor: '', ratio: '', target: '', met: '' });
  }
  for (const [n, { sds, floor }] of fan) {
    const N = Number(n).toLocaleString('en-US');
    const isTarget = n === '10000';
    rows.push({
      metric: 'RSS per subscribed stream (KiB)',
      n: N,
      sds: fmt(sds.rssPerStream / KiB, 2),
      floor: fmt(floor.rssPerStream / KiB, 2),
      ratio: ratio(sds.rssPerStream, floor.rssPerStream),
      target: isTarget ? '<= 16 KiB' : '',
      met: isTarget ? yes(sds.rssPerStream <= 16 * KiB) : '',
    });
    notes.push(`N=${N} memory per stream (KiB), sds-server / floor: V8 heap committed ${fmt(sds.heapTotalPerStream / KiB, 2)} / ${fmt(floor.heapTotalPerStream / KiB, 2)}, off-heap (Buffers) ${fmt(sds.externalPerStream / KiB, 2)} / ${fmt(floor.externalPerStream / KiB, 2)}`);
    rows.push({ metric: 'heap per subscribed stream (KiB)', n: N, sds: fmt(sds.heapPerStream / KiB, 2), floor: fmt(floor.heapPerStream / KiB, 2), ratio: ratio(sds.heapPerStream, floor.heapPerStream), target: '', met: '' });
  }
  const stormRow = (label: string, n: string, sds: LevelResult, floor: LevelResult, isTarget: boolean): void => {
    const s = sds.storm;
    const f = floor.storm;
    rows.push({
      metric: `connect storm: all served (ms)${label}`,
      n,
      sds: s.allServedMs === undefined ? `timeout (${s.served}/${s.expected})` : fmt(s.allServedMs, 0),
      floor: f.allServedMs === undefined ? `timeout (${f.served}/${f.expected})` : fmt(f.allServedMs, 0),
      ratio: ratio(s.allServedMs, f.allServedMs),
      target: isTarget ? '<= 2000 ms' : '',
      met: isTarget ? yes(s.allServedMs !== undefined && s.allServedMs <= 2000) : '',
    });
    rows.push({
      metric: `connect storm: refused connects${label}`,
      n,
      sds: String(s.refused),
      floor: String(f.refused),
      ratio: '',
      target: isTarget ? '0' : '',
      met: isTarget ? yes(s.refused === 0) : '',
    });
  };
  for (const [n, { sds, floor }] of fan) stormRow('', Number(n).toLocaleString('en-US'), sds, floor, false);
  if (storm2k) stormRow('', '2,000', storm2k.sds, storm2k.floor, true);
  if (idle) {
    const [s, f] = idle;
    rows.push({ metric: `idle CPU over ${IDLE_SECONDS} s (% of one core)`, n: '10,000', sds: fmt(s!.cpuPercent, 2), floor: fmt(f!.cpuPercent, 2), ratio: ratio(s!.cpuPercent, f!.cpuPercent), target: '< 1 %', met: yes(s!.cpuPercent < 1) });
  }
  if (churnSds) {
    const c = churnSds;
    const cf = churnFloor;
    const rssGrowth = (c.after.rss - c.before.rss) / c.before.rss;
    rows.push({ metric: 'churn: streams opened / served', n: `${CHURN_RATE}/s`, sds: `${c.stats.opened} / ${c.stats.served}`, floor: cf ? `${cf.stats.opened} / ${cf.stats.served}` : '', ratio: '', target: '', met: '' });
    rows.push({ metric: 'churn: RSS before -> after (MiB)', n: `${CHURN_SECONDS} s`, sds: `${fmt(c.before.rss / MiB)} -> ${fmt(c.after.rss / MiB)} (${rssGrowth >= 0 ? '+' : ''}${fmt(rssGrowth * 100)} %)`, floor: cf ? `${fmt(cf.before.rss / MiB)} -> ${fmt(cf.after.rss / MiB)}` : '', ratio: '', target: 'within 5 %', met: yes(Math.abs(rssGrowth) <= 0.05) });
    rows.push({ metric: 'churn: heap used before -> after (MiB)', n: `${CHURN_SECONDS} s`, sds: `${fmt(c.before.heapUsed / MiB)} -> ${fmt(c.after.heapUsed / MiB)}`, floor: cf ? `${fmt(cf.before.heapUsed / MiB)} -> ${fmt(cf.after.heapUsed / MiB)}` : '', ratio: '', target: '', met: '' });
    rows.push({ metric: 'churn: active handles before -> after', n: `${CHURN_SECONDS} s`, sds: `${c.before.handles} -> ${c.after.handles}`, floor: cf ? `${cf.before.handles} -> ${cf.after.handles}` : '', ratio: '', target: 'back to baseline', met: yes(c.after.handles <= c.before.handles) });
    rows.push({ metric: 'churn: active resources before -> after', n: `${CHURN_SECONDS} s`, sds: `${c.before.resources} -> ${c.after.resources}`, floor: cf ? `${cf.before.resources} -> ${cf.after.resources}` : '', ratio: '', target: 'back to baseline', met: yes(c.after.resources <= c.before.resources) });
    rows.push({ metric: 'churn: store watchers before -> after', n: `${CHURN_SECONDS} s`, sds: `${c.before.watchers} -> ${c.after.watchers}`, floor: '', ratio: '', target: 'back to baseline', met: yes(c.after.watchers <= c.before.watchers) });
    const errs = c.stats.errors + c.serverErrors;
    rows.push({ metric: 'churn: errors (client + server)', n: `${CHURN_SECONDS} s`, sds: `${c.stats.errors} + ${c.serverErrors}`, floor: cf ? `${cf.stats.errors}` : '', ratio: '', target: '0', met: yes(errs === 0) });
    if (c.stats.errorSamples.length) notes.push(`churn error samples: ${c.stats.errorSamples.join(' | ')}`);
    notes.push(`churn memory (sds-server) before -> after, MiB: V8 heap committed ${fmt(c.before.heapTotal / MiB)} -> ${fmt(c.after.heapTotal / MiB)}, off-heap Buffers ${fmt(c.before.external / MiB)} -> ${fmt(c.after.external / MiB)}`);
    notes.push(`churn detail (sds-server): ${c.stats.connections} connections (${c.stats.refused} refused), peak ${c.stats.peakOpenStreams} open streams, first response p50 ${fmt(c.stats.firstResponseP50Ms)} ms / p99 ${fmt(c.stats.firstResponseP99Ms)} ms; closed by RST ${c.stats.cancelled}, by half-close with OK ${c.stats.halfClosedOk}, by dropped connection ${c.stats.aborted}; server warnings ${c.serverWarnings}`);
  }
  if (startup) {
    const s = startupRows(startup);
    rows.push(...s.rows);
    notes.push(...s.notes);
  }
  const anyFan = fan.get('1000') ?? fan.get('100');
  if (anyFan) notes.push(`response size: sds-server ${anyFan.sds.storm.responseBytes} B, floor ${anyFan.floor.storm.responseBytes} B`);
  for (const [n, { sds }] of fan) if (sds.incomplete || sds.storm.streamErrors || sds.errors) notes.push(`N=${n}: ${sds.incomplete} incomplete rotations, ${sds.storm.streamErrors} stream errors, server errors ${sds.errors}, warnings ${sds.warnings}; ${sds.storm.errorSamples.join(' | ')}`);
  for (const [n, { sds, floor }] of [...fan, ...(storm2k ? [['2000', storm2k] as const] : [])]) {
    for (const [who, s] of [['sds-server', sds.storm], ['floor', floor.storm]] as const) {
      if (s.refused) notes.push(`N=${n} ${who}: ${s.refused} refused connects (${Object.entries(s.refusedCodes).map(([k, v]) => `${k} x${v}`).join(', ')}), retried by the client`);
    }
  }
  if (idle) notes.push(`idle: busiest 5 s slice sds-server ${fmt(idle[0]!.maxSlicePercent, 2)} %, floor ${fmt(idle[1]!.maxSlicePercent, 2)} % of one core; load generator (holding both servers' streams) ${fmt(loadgenIdleCpu, 2)} %`);
  const totalS = (wallMs() - t0) / 1000;
  notes.push(`bench wall time: ${fmt(totalS, 0)} s${QUICK ? ' (--quick: short churn/idle, fewer rotations; not the specified figures)' : ''}`);

  const out = [table(rows), '', ...notes.map((n) => `- ${n}`), ...(rotation ? ['', rotation.report] : [])].join('\n');
  process.stdout.write(`\n${out}\n\nMachine:\n${machine().join('\n')}\n`);
  const json = path.join(fx.dir, 'results.json');
  await fs.writeFile(json, JSON.stringify({ fan: Object.fromEntries(fan), storm2k, idle, churnSds, churnFloor, rotation: rotation && { ...rotation, rounds: rotation.rounds.map((r) => ({ ...r, ms: Object.fromEntries(r.ms) })) } }, null, 2));
  // Keep the results (and any profiles or snapshots); drop certificates, keys and sockets.
  for (const entry of await fs.readdir(fx.dir)) {
    if (entry === 'results.json' || entry.startsWith('profiles-') || entry.endsWith('.heapsnapshot')) continue;
    await fs.rm(path.join(fx.dir, entry), { recursive: true, force: true });
  }
  process.stdout.write(`\nraw results: ${json}\n`);
  if (WRITE) await writeBenchmarksMd(out, rotationsNote());
}

function rotationsNote(): string {
  return `Fan-out figures are over ${ROTATIONS} rotations (after one warm-up); p99 of ${ROTATIONS} samples is their maximum.`;
}

async function writeBenchmarksMd(results: string, note: string): Promise<void> {
  const file = path.join(ROOT, 'BENCHMARKS.md');
  const text = await fs.readFile(file, 'utf8');
  const start = '<!-- bench:results:start -->';
  const end = '<!-- bench:results:end -->';
  const i = text.indexOf(start);
  const j = text.indexOf(end);
  if (i < 0 || j < 0) throw new Error('BENCHMARKS.md has no results markers');
  const body = [`Run of ${new Date().toISOString().slice(0, 10)}. ${note}`, '', results, '', 'Machine:', '', ...machine()].join('\n');
  await fs.writeFile(file, `${text.slice(0, i + start.length)}\n${body}\n${text.slice(j)}`);
  process.stdout.write('BENCHMARKS.md updated\n');
}

main().then(
  () => process.exit(0),
  (err: Error) => {
    process.stderr.write(`bench failed: ${err.stack ?? err.message}\n`);
    process.exit(1);
  },
);
