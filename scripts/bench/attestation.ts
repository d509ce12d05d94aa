/**
 * `npm run bench:attestation`: what caller attestation (issue 11) costs.
 *
 * - First response: one connection with one stream at a time (connect -> first DiscoveryResponse,
 *   measured by the load generator), alternating between a server with attestation off and one with
 *   it on; plus the server's own accept -> caller-attested time per connection.
 * - Connect storm: 2,000 connections x 1 stream opened at once (the load generator of `npm run
 *   bench`), time until every stream has its first response, attestation off vs on, fresh servers,
 *   alternated over several rounds.
 *
 * Processes: this orchestrator, scripts/bench/attest-entry.ts (the real SdsServer, attestation
 * on/off) and scripts/bench/loadgen.ts, compiled to JavaScript like `npm run bench`.
 * Options: --quick (fewer samples), --rounds=N (storm rounds, default 3), --samples=N (first-response
 * samples per mode, default 200).
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { createRootCa, issueLeaf } from '../../src/x509/issue.js';
import { BenchChild, median, percentile, type StormReply } from './common.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const OUT = path.join(ROOT, '.tmp/bench/out');
const HERE = path.join(OUT, 'scripts/bench');
const argv = process.argv.slice(2);
const QUICK = argv.includes('--quick');
const arg = (name: string, dflt: number): number => Number(argv.find((a) => a.startsWith(`--${name}=`))?.split('=')[1] ?? dflt);
const ROUNDS = arg('rounds', QUICK ? 1 : 3);
const SAMPLES = arg('samples', QUICK ? 50 : 200);
const STORM = 2000;
const NAME = 'spiffe://example.org/bench';
const log = (line: string): void => void process.stdout.write(`${line}\n`);


interface Attestations {
  durations: number[];
  failures: number;
}
type Mode = 'off' | 'on';

async function main(): Promise<void> {
  log('building (tsc -> .tmp/bench/out) ...');
  try {
    execFileSync(process.execPath, [path.join(ROOT, 'node_modules/typescript/bin/tsc'), '-p', path.join(ROOT, 'scripts/bench/tsconfig.json')], { stdio: 'inherit' });
  } catch {
    process.stderr.write('tsc reported errors (above); benchmarking the emitted JavaScript anyway\n');
  }
  await fs.rm(path.join(OUT, 'proto'), { force: true });
  await fs.symlink(path.join(ROOT, 'proto'), path.join(OUT, 'proto'));

  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'sds-bench-attest-'));
  const ca = await createRootCa({ trustDomain: 'example.org' });
  const leaf = await issueLeaf(ca, { spiffeId: NAME, keyType: 'rsa-2048' });
  await fs.writeFile(path.join(dir, 'tls.crt'), leaf.chainPem);
  await fs.writeFile(path.join(dir, 'tls.key'), leaf.keyPem);
  let serial = 0;
  const startServer = async (mode: Mode): Promise<{ child: BenchChild; socket: string }> => {
    const socket = path.join(dir, `attest-${mode}-${++serial}.sock`);
    const child = await BenchChild.start(`server(${mode})`, path.join(HERE, 'attest-entry.js'), ['--socket', socket, '--attest', mode, '--cert', path.join(dir, 'tls.crt'), '--key', path.join(dir, 'tls.key'), '--name', NAME], { cwd: ROOT });
    return { child, socket };
  };
  const loadgen = await BenchChild.start('loadgen', path.join(HERE, 'loadgen.js'), [], { cwd: ROOT });
  let group = 0;
  const open = async (socket: string, conns: number): Promise<StormReply> => {
    const id = `g${++group}`;
    const r = await loadgen.call<StormReply>('open', { group: id, socket, conns, perConn: 1, name: NAME, timeoutMs: 120_000 });
    await loadgen.call('close', { group: id });
    return r;
  };

  try {
    // ---- first response, one connection at a time -------------------------------------------
    log(`first response: ${SAMPLES} single connections per mode, alternating`);
    const servers = { off: await startServer('off'), on: await startServer('on') };
    const first: Record<Mode, number[]> = { off: [], on: [] };
    for (let i = 0; i < 20; i++) for (const mode of ['off', 'on'] as const) await open(servers[mode].socket, 1); // warm-up
    await servers.on.child.call<Attestations>('attestations');
    for (let i = 0; i < SAMPLES; i++) {
      for (const mode of (i % 2 ? ['on', 'off'] : ['off', 'on']) as Mode[]) {
        const r = await open(servers[mode].socket, 1);
        if (r.served !== 1) throw new Error(`${mode}: no first response (${r.errorSamples.join('; ')})`);
        first[mode].push(r.firstResponseP50Ms);
      }
    }
    const single = await servers.on.child.call<Attestations>('attestations');
    for (const s of Object.values(servers)) await s.child.stop();

    // ---- connect storm -----------------------------------------------------------------------
    const storms: Record<Mode, { result: StormReply; attest: Attestations }[]> = { off: [], on: [] };
    for (let round = 0; round < ROUNDS; round++) {
      for (const mode of (round % 2 ? ['on', 'off'] : ['off', 'on']) as Mode[]) {
        const s = await startServer(mode);
        await new Promise((r) => setTimeout(r, 300));
        const result = await open(s.socket, STORM);
        const attest = await s.child.call<Attestations>('attestations');
        await s.child.stop();
        log(`  storm round ${round + 1} attestation ${mode}: all served ${result.allServedMs?.toFixed(0) ?? 'TIMED OUT'} ms, first response p50 ${result.firstResponseP50Ms.toFixed(0)} / p99 ${result.firstResponseP99Ms.toFixed(0)} ms, refused connects ${result.refused}, stream errors ${result.streamErrors}${mode === 'on' ? `, attested ${attest.durations.length} (failures ${attest.failures}), attestation p50 ${percentile(attest.durations, 50).toFixed(2)} / p99 ${percentile(attest.durations, 99).toFixed(2)} / max ${Math.max(...attest.durations).toFixed(1)} ms` : ''}`);
        if (result.served !== STORM) throw new Error(`${mode}: ${result.served}/${STORM} served (${result.errorSamples.join('; ')})`);
        storms[mode].push({ result, attest });
      }
    }

    // ---- report ------------------------------------------------------------------------------
    const f = (n: number, d = 2): string => n.toFixed(d);
    const rows: string[][] = [
      ['metric', 'attestation off', 'attestation on', 'added'],
      ['first response, single connection, p50 (ms)', f(percentile(first.off, 50)), f(percentile(first.on, 50)), f(percentile(first.on, 50) - percentile(first.off, 50))],
      ['first response, single connection, p99 (ms)', f(percentile(first.off, 99)), f(percentile(first.on, 99)), f(percentile(first.on, 99) - percentile(first.off, 99))],
      ['accept -> caller attested, single connection, p50 / p99 (ms)', '-', `${f(percentile(single.durations, 50))} / ${f(percentile(single.durations, 99))}`, ''],
      [
        `connect storm ${STORM.toLocaleString('en-US')} x 1: all served, median of ${ROUNDS} (ms)`,
        f(median(storms.off.map((s) => s.result.allServedMs ?? NaN)), 0),
        f(median(storms.on.map((s) => s.result.allServedMs ?? NaN)), 0),
        f(median(storms.on.map((s) => s.result.allServedMs ?? NaN)) - median(storms.off.map((s) => s.result.allServedMs ?? NaN)), 0),
      ],
      [
        'connect storm: first response p99, median of rounds (ms)',
        f(median(storms.off.map((s) => s.result.firstResponseP99Ms)), 0),
        f(median(storms.on.map((s) => s.result.firstResponseP99Ms)), 0),
        '',
      ],
      [
        'connect storm: accept -> caller attested p50 / p99 (ms)',
        '-',
        `${f(median(storms.on.map((s) => percentile(s.attest.durations, 50))))} / ${f(median(storms.on.map((s) => percentile(s.attest.durations, 99))))}`,
        '',
      ],
    ];
    const widths = rows[0]!.map((_, c) => Math.max(...rows.map((r) => r[c]!.length)));
    log('');
    for (const [i, r] of rows.entries()) {
      log(`| ${r.map((cell, c) => cell.padEnd(widths[c]!)).join(' | ')} |`);
      if (i === 0) log(`|${widths.map((w) => '-'.repeat(w + 2)).join('|')}|`);
    }
    log('');
    log(`${os.cpus().length} CPUs (${os.cpus()[0]?.model ?? '?'}), Node ${process.version}; attestors: unix; storms: ${storms.on.map((s) => s.result.allServedMs?.toFixed(0)).join(', ')} ms on, ${storms.off.map((s) => s.result.allServedMs?.toFixed(0)).join(', ')} ms off`);
    await fs.writeFile(path.join(OUT, 'attestation-results.json'), JSON.stringify({ first, single, storms }, null, 2));
  } finally {
    await loadgen.stop();
    await fs.rm(dir, { recursive: true, force: true });
  }
}

main().then(
  () => process.exit(0),
  (err: Error) => {
    process.stderr.write(`bench failed: ${err.stack ?? err.message}\n`);
    process.exit(1);
  },
);
