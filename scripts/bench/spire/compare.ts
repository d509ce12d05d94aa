/**
 * `npm run bench -- --peer spire`: the sds-server side by side with SPIRE agent 1.13.3 (SDS v3 on
 * its Workload API socket), same load generator, same machine, in one invocation.
 *
 * One run = one fresh server process at one stream count N (one SotW stream per connection, like
 * one Envoy asking for one secret); runs alternate between the two servers (round 1: sds-server
 * first, round 2: SPIRE first, ...). Each run measures, all from outside the process (/proc), the
 * same way for both:
 *   1. start-up: spawn -> the first SDS response served (a probe in the load generator retries a
 *      stream every 2 ms until it is answered);
 *   2. connect storm: N connections opened at once -> every stream has its first response;
 *   3. RSS per stream: (RSS 2 s after the storm - RSS before it) / N, and again after the idle window;
 *   4. push spread on a rotation: first -> last of the N streams to receive the new certificate,
 *      and trigger -> last stream;
 *   5. idle CPU once settled: CPU time of all threads over an idle window with N streams held.
 *
 * Rotations: the sds-server's files are replaced (write temp + rename, key then certificate, as
 * scripts/bench/sds-entry.ts does). SPIRE's workload entry is updated with a new DNS name
 * (`spire-server entry update`); the agent picks up the new entry revision at its next sync with
 * the server (5 s by default) and pushes a newly signed SVID. So "trigger -> last" for SPIRE is
 * dominated by that sync interval; the spread (first -> last stream) is what compares the push.
 *
 * Names: the load generator asks both for the SVID by its SPIFFE ID, spiffe://example.org/bench
 * (SPIRE also answers `default`; bundles are `ROOTCA` or the trust-domain ID on both).
 *
 * Options (with --peer spire): --rounds=N (default 3), --levels=100,1000, --settle=S (seconds between
 * the last rotation and the idle window, default 10; V8's memory reducer shrinks the heap in GCs
 * some seconds into a quiet spell, which can land inside the idle window), --quick (1 round at 100,
 * 3 rotations, 5 s idle: a smoke test, not figures to publish).
 */
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { median, wallMs, type BenchChild, type StormReply } from '../common.js';
import { installSpire, procFigures, spawnPeer, SpireServer, SPIRE_VERSION, type PeerProcess, type ProcFigures } from './spire.js';

const KiB = 1024;
const MiB = 1024 * 1024;
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** What run.ts hands over (its build, fixture and load generator), so run.ts stays the one entry point. */
export interface SpireComparisonDeps {
  root: string;
  /** The bundled CLI, dist/cli/main.js (what `bin` runs), built by `build`. */
  cliMain: string;
  argv: string[];
  /** The secret both servers serve; the SPIRE workload entry's SPIFFE ID. */
  name: string;
  /** Compiles the bench processes and `npm run build`s dist/. */
  build(): Promise<void>;
  /** A config serving `name` from certDir/tls.crt + tls.key, and pairsFile: JSON [{chainPem, keyPem}] to rotate through. */
  makeFixture(): Promise<{ dir: string; config: string; certDir: string; pairs: string }>;
  startLoadgen(): Promise<BenchChild>;
  machine(): string[];
}

type Peer = 'sds' | 'spire';
const PEER_LABEL: Record<Peer, string> = { sds: 'sds-server', spire: `SPIRE agent ${SPIRE_VERSION}` };

interface RunResult {
  peer: Peer;
  n: number;
  round: number;
  startupMs: number;
  stormMs?: number;
  stormRefused: number;
  stormErrors: number;
  /** Size of one DiscoveryResponse (bytes) as received. */
  responseBytes: number;
  rssIdle: number;
  rssPerStream: number;
  rssPerStreamSettled: number;
  spreadMs: number[];
  triggerToLastMs: number[];
  incompleteRotations: number;
  idleCpuPercent: number;
  idleSeconds: number;
  /** spire-server's CPU over the same idle window (SPIRE's control plane; the sds-server has none). */
  controlPlaneIdleCpuPercent?: number;
}

interface Options {
  rounds: number;
  levels: number[];
  rotations: number;
  settleSeconds: number;
  idleSeconds: number;
}

function options(argv: string[]): Options {
  const quick = argv.includes('--quick');
  const value = (key: string): string | undefined => argv.find((a) => a.startsWith(`--${key}=`))?.slice(key.length + 3);
  const levels = value('levels')?.split(',').map(Number) ?? (quick ? [100] : [100, 1000]);
  return {
    rounds: Number(value('rounds') ?? (quick ? 1 : 3)),
    levels,
    rotations: quick ? 3 : 5,
    settleSeconds: Number(value('settle') ?? (quick ? 3 : 10)),
    idleSeconds: quick ? 5 : 30,
  };
}

/** True when the command line asks for the SPIRE comparison (`--peer spire` or `--peer=spire`). */
export function wantsSpirePeer(argv: string[]): boolean {
  const i = argv.indexOf('--peer');
  return (i >= 0 && argv[i + 1] === 'spire') || argv.includes('--peer=spire');
}

/** Replaces the served pair the way an operator's tooling does: temp files, then rename key, then certificate. */
async function rotateFiles(certDir: string, pair: { chainPem: string; keyPem: string }): Promise<number> {
  await fs.writeFile(path.join(certDir, 'tls.key.tmp'), pair.keyPem);
  await fs.writeFile(path.join(certDir, 'tls.crt.tmp'), pair.chainPem);
  await fs.rename(path.join(certDir, 'tls.key.tmp'), path.join(certDir, 'tls.key'));
  await fs.rename(path.join(certDir, 'tls.crt.tmp'), path.join(certDir, 'tls.crt'));
  return wallMs();
}

const cpuPercent = (a: ProcFigures, b: ProcFigures, ms: number): number => ((b.cpuNs - a.cpuNs) / 1e6 / ms) * 100;

export async function runSpireComparison(deps: SpireComparisonDeps): Promise<void> {
  const t0 = wallMs();
  const log = (s: string): void => void process.stderr.write(`${s}\n`);
  const opt = options(deps.argv);
  if (process.platform !== 'linux') throw new Error('--peer spire reads /proc for memory and CPU: Linux only');
  log(`--peer spire: ${opt.rounds} round(s) at N = ${opt.levels.join(', ')}; ${opt.rotations} rotations, ${opt.idleSeconds} s idle window per run`);
  const bin = await installSpire(deps.root);
  log('building (tsc -p scripts/bench/tsconfig.json, then npm run build for dist/cli/main.js)');
  await deps.build();
  const fx = await deps.makeFixture();
  const pairs = JSON.parse(await fs.readFile(fx.pairs, 'utf8')) as Array<{ chainPem: string; keyPem: string }>;
  let pairIndex = 0;
  const spireDir = await fs.mkdtemp(path.join(os.tmpdir(), 'sds-bench-spire-'));
  const uid = process.getuid?.() ?? 0;
  const loadgen = await deps.startLoadgen();
  log(`starting spire-server (sqlite datastore, memory key manager, join_token) in ${spireDir}; registering unix:uid:${uid} as ${deps.name}`);
  const spire = await SpireServer.start(bin, spireDir, deps.name, uid);
  const results: RunResult[] = [];
  const loads: string[] = [];
  let serial = 0;

  /** Spawns one peer process, with the start-up probe already polling its socket. */
  const spawnMeasured = async (peer: Peer): Promise<{ proc: PeerProcess; socket: string; startupMs: number }> => {
    serial += 1;
    let proc: PeerProcess;
    let socket: string;
    let spawnedAt: number;
    let probe: Promise<{ at: number }>;
    if (peer === 'sds') {
      socket = path.join(fx.dir, `sds-${serial}.sock`);
      probe = loadgen.call<{ at: number }>('probe', { socket, name: deps.name, timeoutMs: 60_000 });
      ({ peer: proc, spawnedAt } = spawnPeer(`sds-server #${serial}`, process.execPath, [deps.cliMain, '--config', fx.config, '--socket', socket, '--log-level', 'warn'], path.join(fx.dir, `sds-${serial}.log`), deps.root));
    } else {
      // The agent's socket path is only known once its config is written; the probe starts right
      // after spawn() returns, before the agent can have opened it.
      const a = await spire.spawnAgent();
      ({ agent: proc, socket, spawnedAt } = a);
      probe = loadgen.call<{ at: number }>('probe', { socket, name: deps.name, timeoutMs: 60_000 });
    }
    const exited = proc.exited.then((code) => {
      throw new Error(`${proc.label} exited (${code}) before serving:\n${proc.tail()}`);
    });
    try {
      const { at } = await Promise.race([probe, exited]);
      return { proc, socket, startupMs: at - spawnedAt };
    } catch (err) {
      await proc.stop();
      throw err;
    }
  };

  const runOne = async (peer: Peer, n: number, round: number): Promise<RunResult> => {
    const { proc, socket, startupMs } = await spawnMeasured(peer);
    try {
      await sleep(1000);
      const before = procFigures(proc.pid);
      const group = `${peer}-${n}-${serial}`;
      const storm = await loadgen.call<StormReply>('open', { group, socket, conns: n, perConn: 1, name: deps.name });
      if (storm.streamErrors) log(`  ${PEER_LABEL[peer]} N=${n}: ${storm.streamErrors} stream errors: ${storm.errorSamples.join(' | ')}`);
      await sleep(2000);
      const afterStorm = procFigures(proc.pid);
      const spreadMs: number[] = [];
      const triggerToLastMs: number[] = [];
      let incomplete = 0;
      for (let i = 0; i < opt.rotations; i++) {
        await loadgen.call('arm', { group });
        const triggeredAt = peer === 'sds' ? await rotateFiles(fx.certDir, pairs[++pairIndex % pairs.length]!) : await spire.rotateWorkloadSvid();
        const w = await loadgen.call<{ complete: boolean; count: number; firstAt?: number; lastAt?: number }>('wait', { group, version: '*', timeoutMs: 30_000 });
        if (!w.complete || w.firstAt === undefined || w.lastAt === undefined) {
          incomplete += 1;
          log(`  ${PEER_LABEL[peer]} N=${n}: rotation ${i}: only ${w.count} of ${n} streams received a new certificate within 30 s`);
        } else {
          spreadMs.push(w.lastAt - w.firstAt);
          triggerToLastMs.push(w.lastAt - triggeredAt);
        }
        // Let ACKs land and the sds-server's file debounce window close, so rotations never merge.
        await sleep(300);
      }
      await sleep(opt.settleSeconds * 1000);
      const ctl0 = peer === 'spire' ? procFigures(spire.process.pid) : undefined;
      const idle0 = procFigures(proc.pid);
      const idleStart = wallMs();
      await sleep(opt.idleSeconds * 1000);
      const idle1 = procFigures(proc.pid);
      const idleMs = wallMs() - idleStart;
      const ctl1 = peer === 'spire' ? procFigures(spire.process.pid) : undefined;
      await loadgen.call('close', { group });
      const r: RunResult = {
        peer,
        n,
        round,
        startupMs,
        stormMs: storm.allServedMs,
        stormRefused: storm.refused,
        stormErrors: storm.streamErrors,
        responseBytes: storm.responseBytes,
        rssIdle: before.rss,
        rssPerStream: (afterStorm.rss - before.rss) / n,
        rssPerStreamSettled: (idle1.rss - before.rss) / n,
        spreadMs,
        triggerToLastMs,
        incompleteRotations: incomplete,
        idleCpuPercent: cpuPercent(idle0, idle1, idleMs),
        idleSeconds: idleMs / 1000,
        controlPlaneIdleCpuPercent: ctl0 && ctl1 ? cpuPercent(ctl0, ctl1, idleMs) : undefined,
      };
      log(
        `  ${PEER_LABEL[peer].padEnd(18)} N=${String(n).padEnd(5)} start-up ${fmt(r.startupMs)} ms, storm ${fmt(r.stormMs, 0)} ms, RSS ${fmt(r.rssIdle / MiB)} MiB + ${fmt(r.rssPerStream / KiB)} KiB/stream` +
          ` (settled ${fmt(r.rssPerStreamSettled / KiB)}), spread median ${fmt(median(spreadMs))} ms, trigger->last ${fmt(median(triggerToLastMs))} ms, idle CPU ${fmt(r.idleCpuPercent, 3)} %`,
      );
      return r;
    } finally {
      await proc.stop();
    }
  };

  try {
    // Warm-up, not counted: the first agent attests the node with the join token (later agents
    // restart an attested node), and both binaries get into the page cache.
    for (const peer of ['spire', 'sds'] as const) {
      const w = await spawnMeasured(peer);
      log(`warm-up start of ${PEER_LABEL[peer]} (not counted${peer === 'spire' ? '; node attestation with the join token' : ''}): ${fmt(w.startupMs)} ms`);
      await w.proc.stop();
    }
    for (let round = 1; round <= opt.rounds; round++) {
      const order: Peer[] = round % 2 === 1 ? ['sds', 'spire'] : ['spire', 'sds'];
      const load = (await fs.readFile('/proc/loadavg', 'utf8')).trim();
      loads.push(`round ${round}: ${load}`);
      log(`round ${round} of ${opt.rounds} (load average ${load}), order ${order.map((p) => PEER_LABEL[p]).join(' then ')}`);
      for (const n of opt.levels) for (const peer of order) results.push(await runOne(peer, n, round));
    }
    loads.push(`after: ${(await fs.readFile('/proc/loadavg', 'utf8')).trim()}`);
  } finally {
    await loadgen.stop();
    await spire.stop();
  }

  const out = report(results, opt, loads, (wallMs() - t0) / 1000);
  process.stdout.write(`\n${out}\n\nMachine:\n${[...deps.machine(), `- SPIRE ${SPIRE_VERSION} (${bin})`].join('\n')}\n`);
  const json = path.join(spireDir, 'results.json');
  await fs.writeFile(json, JSON.stringify({ options: opt, loads, results }, null, 2));
  // Keep the results and SPIRE's logs; drop the keys, certificates, datastore and sockets.
  await fs.rm(fx.dir, { recursive: true, force: true });
  for (const entry of await fs.readdir(spireDir)) if (!entry.endsWith('.log') && entry !== 'results.json') await fs.rm(path.join(spireDir, entry), { recursive: true, force: true });
  process.stdout.write(`\nraw results and SPIRE logs: ${spireDir}\n`);
}

// ---- report ------------------------------------------------------------------------------------

const fmt = (v: number | undefined, digits = 1): string => (v === undefined || Number.isNaN(v) ? 'n/a' : v.toFixed(digits));

interface Metric {
  label: string;
  /** One figure per run; undefined when the run could not produce it. */
  value(r: RunResult): number | undefined;
  digits: number;
  /** Target on ours / SPIRE's ratio (per round), if the issue sets one. */
  target?: { text: string; max: number; only?: number };
}

const METRICS: Metric[] = [
  { label: 'start-up: spawn -> first response (ms)', value: (r) => r.startupMs, digits: 0 },
  { label: 'connect storm: all N served (ms)', value: (r) => r.stormMs, digits: 0, target: { text: '<= 1x', max: 1 } },
  { label: 'RSS with no streams (MiB)', value: (r) => r.rssIdle / MiB, digits: 1 },
  { label: 'RSS per stream, 2 s after storm (KiB)', value: (r) => r.rssPerStream / KiB, digits: 1, target: { text: '<= 0.5x', max: 0.5 } },
  { label: 'RSS per stream, after idle window (KiB)', value: (r) => r.rssPerStreamSettled / KiB, digits: 1 },
  { label: 'push spread first -> last stream, median (ms)', value: (r) => median(r.spreadMs), digits: 1 },
  { label: 'push spread, max (ms)', value: (r) => (r.spreadMs.length ? Math.max(...r.spreadMs) : undefined), digits: 1 },
  { label: 'rotation trigger -> last stream, median (ms)', value: (r) => median(r.triggerToLastMs), digits: 0 },
  { label: 'idle CPU once settled (% of one core)', value: (r) => r.idleCpuPercent, digits: 3, target: { text: '<= 1x at 1,000', max: 1, only: 1000 } },
];

/** "median (min-max)" of the runs' figures. */
function spreadText(values: number[], digits: number): string {
  if (!values.length) return 'n/a';
  const lo = Math.min(...values);
  const hi = Math.max(...values);
  return values.length === 1 ? fmt(values[0], digits) : `${fmt(median(values), digits)} (${fmt(lo, digits)}-${fmt(hi, digits)})`;
}

/** "median x (min x - max x)" of per-round ratios. */
function ratioText(ratios: number[]): string {
  if (!ratios.length) return '';
  const x = (v: number): string => `${v.toFixed(2)}x`;
  return ratios.length === 1 ? x(ratios[0]!) : `${x(median(ratios))} (${x(Math.min(...ratios))}-${x(Math.max(...ratios))})`;
}

function report(results: RunResult[], opt: Options, loads: string[], wallS: number): string {
  const head = ['metric', 'N', 'sds-server', PEER_LABEL.spire, 'ratio (per round)', 'target', 'met'];
  const rows: string[][] = [];
  for (const m of METRICS) {
    for (const n of opt.levels) {
      const ours: number[] = [];
      const theirs: number[] = [];
      const ratios: number[] = [];
      for (let round = 1; round <= opt.rounds; round++) {
        const a = results.find((r) => r.peer === 'sds' && r.n === n && r.round === round);
        const b = results.find((r) => r.peer === 'spire' && r.n === n && r.round === round);
        const va = a && m.value(a);
        const vb = b && m.value(b);
        if (va !== undefined && !Number.isNaN(va)) ours.push(va);
        if (vb !== undefined && !Number.isNaN(vb)) theirs.push(vb);
        if (va !== undefined && vb !== undefined && vb > 0 && !Number.isNaN(va) && !Number.isNaN(vb)) ratios.push(va / vb);
      }
      const applies = m.target && (m.target.only === undefined || m.target.only === n);
      const ratioMed = median(ratios);
      rows.push([
        m.label,
        n.toLocaleString('en-US'),
        spreadText(ours, m.digits),
        spreadText(theirs, m.digits),
        ratioText(ratios),
        applies ? m.target!.text : '',
        applies ? (Number.isNaN(ratioMed) ? 'n/a' : ratioMed <= m.target!.max ? 'yes' : '**NO**') : '',
      ]);
    }
  }
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (r: string[]): string => `| ${r.map((c, i) => c.padEnd(widths[i]!)).join(' | ')} |`;
  const table = [line(head), `|${widths.map((w) => '-'.repeat(w + 2)).join('|')}|`, ...rows.map(line)].join('\n');
  const notes: string[] = [
    `${opt.rounds} round(s); each figure is the median over rounds (min-max); the ratio is sds-server / SPIRE agent, per round, then median (min-max). "met" judges the median ratio.`,
    `${opt.rotations} rotations per run; idle window ${opt.idleSeconds} s after ${opt.settleSeconds} s of settling; CPU and RSS read from /proc for both processes.`,
    'SPIRE rotation: `spire-server entry update` (new DNS name) -> the agent syncs (every 5 s) and pushes a new SVID; so its trigger -> last is mostly the sync interval. sds-server rotation: temp files renamed over the served pair.',
  ];
  const bytes = (p: Peer): number | undefined => results.find((r) => r.peer === p)?.responseBytes;
  notes.push(`one DiscoveryResponse: sds-server ${bytes('sds') ?? 'n/a'} B (P-256 leaf + chain + key), SPIRE ${bytes('spire') ?? 'n/a'} B (its P-256 SVID)`);
  const ctl = results.filter((r) => r.controlPlaneIdleCpuPercent !== undefined).map((r) => r.controlPlaneIdleCpuPercent!);
  if (ctl.length) notes.push(`spire-server (not counted above; the sds-server has no separate control plane) idle CPU over the same windows: ${spreadText(ctl, 3)} % of one core`);
  const incomplete = results.filter((r) => r.incompleteRotations || r.stormErrors || r.stormMs === undefined);
  for (const r of incomplete) notes.push(`${PEER_LABEL[r.peer]} N=${r.n} round ${r.round}: ${r.incompleteRotations} incomplete rotations, ${r.stormErrors} stream errors${r.stormMs === undefined ? ', storm timed out' : ''}`);
  const refused = results.filter((r) => r.stormRefused);
  for (const r of refused) notes.push(`${PEER_LABEL[r.peer]} N=${r.n} round ${r.round}: ${r.stormRefused} connects refused (accept queue full) and retried`);
  notes.push(`load average (1/5/15 min, runnable/total, last pid): ${loads.join('; ')}`);
  notes.push(`wall time: ${fmt(wallS, 0)} s`);
  return [table, '', ...notes.map((n) => `- ${n}`)].join('\n');
}
