/**
 * `npm run bench:issuance`: how fast the embedded CA issues identities, and a CA root rollover
 * that re-issues 1,000 of them while Envoy-like streams stay connected.
 *
 * 1. Per identity (in this process, sequential, P-256): the embedded CA through CaSource -- key
 *    generation, signing, validation of what came back (key match, chain, SANs, dates), publish --
 *    against the same steps written straight on @peculiar/x509 + WebCrypto (key, CSR, sign,
 *    verify), measured alternately in the same run. Also 1,000 identities issued at once (CaSource
 *    start): identities per second.
 * 2. Rollover (built dist/, what `bin` runs): `node dist/cli/main.js --config` with 1,000
 *    configured identities; 1,000 SotW streams (10 HTTP/2 connections x 100, one identity each,
 *    every response ACKed); then SIGUSR2 (new root, both roots served, every leaf re-issued, old
 *    root dropped). Measured: signal -> every stream has received its new leaf; streams closed or
 *    errored meanwhile (must be 0); and a prober that opens a fresh stream every 10 ms on its own
 *    connection throughout: its slowest first response is the longest a new Envoy waited (the gap
 *    in service). The default 2 s bundle propagation wait (new root out before leaves that need
 *    it) is part of the rollover, as an operator runs it.
 *
 * Options: --rounds=N (default 3), --per-identity=N (identities per round, default 200),
 * --identities=N (rollover size, default 1000), --no-build.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs/promises';
import { readFileSync } from 'node:fs';
import http2 from 'node:http2';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { webcrypto } from 'node:crypto';
import * as x509 from '@peculiar/x509';
import { EmbeddedCa } from '../../src/ca/embedded/embedded-ca.js';
import { CaSource } from '../../src/sources/ca-source.js';
import { SecretStore } from '../../src/secrets/store.js';
import { createLogger } from '../../src/core/logger.js';
import '../../src/x509/issue.js'; // sets @peculiar/x509's crypto provider
import { GrpcMessageReader, SDS_V3_STREAM_PATH, SECRET_TYPE_URL_V3, decodeVersionAndNonce, encodeDiscoveryRequest, encodeNode, grpcFrame, median, percentile, wallMs } from './common.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const argv = process.argv.slice(2);
const num = (name: string, dflt: number): number => Number(argv.find((a) => a.startsWith(`--${name}=`))?.split('=')[1] ?? dflt);
const ROUNDS = num('rounds', 3);
const PER_IDENTITY = num('per-identity', 200);
const IDENTITIES = num('identities', 1000);
const TD = 'example.org';
const log = (s: string): void => void process.stderr.write(`${s}\n`);
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const loadavg = (): string => readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ');
const silent = createLogger({ level: 'error' });

// ---- 1. per identity ---------------------------------------------------------------------------

/** The issue's reference: key, CSR, sign, verify, straight on @peculiar/x509 + WebCrypto. */
async function directPeculiar(ca: { cert: x509.X509Certificate; keys: webcrypto.CryptoKeyPair }, i: number): Promise<void> {
  const alg = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' };
  const keys = await webcrypto.subtle.generateKey(alg, true, ['sign', 'verify']);
  const spiffeId = `spiffe://${TD}/direct/${i}`;
  const csr = await x509.Pkcs10CertificateRequestGenerator.create({ name: [{ CN: ['w'] }], keys: keys as never, signingAlgorithm: alg, extensions: [new x509.SubjectAlternativeNameExtension([{ type: 'url', value: spiffeId }])] });
  if (!(await csr.verify())) throw new Error('CSR does not verify');
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: (i + 1).toString(16).padStart(2, '0'),
    subject: 'CN=w',
    issuer: ca.cert.subject,
    publicKey: csr.publicKey,
    signingKey: ca.keys.privateKey,
    signingAlgorithm: alg,
    notBefore: new Date(Date.now() - 60_000),
    notAfter: new Date(Date.now() + 3_600_000),
    extensions: [new x509.BasicConstraintsExtension(false, undefined, true), new x509.SubjectAlternativeNameExtension([{ type: 'url', value: spiffeId }])],
  });
  if (!(await cert.verify({ publicKey: ca.cert.publicKey }))) throw new Error('certificate does not verify');
}

interface PerIdentity {
  embeddedMs: number[];
  directMs: number[];
  /** CPU time per identity (ms, all threads of this process): what a busy machine does not distort. */
  embeddedCpuMs: number;
  directCpuMs: number;
  /** 1,000 identities issued at once by CaSource.start(), identities per second, and CPU ms per identity. */
  bulkPerSecond: number;
  bulkCpuMsPerIdentity: number;
}

async function perIdentity(): Promise<PerIdentity> {
  const backend = await EmbeddedCa.open({ trustDomain: TD, log: silent });
  const { createRootCa } = await import('../../src/x509/issue.js');
  const directCa = await createRootCa({ trustDomain: TD });
  const store = new SecretStore({ log: silent });
  const spec = (i: number) => ({ spiffeId: `spiffe://${TD}/w/${i}`, dnsNames: [], keyType: 'ec-p256' as const, lifetimeSeconds: 3600, names: [] });
  const one = new CaSource({ backend, trustDomain: TD, identities: [spec(0)], publisher: store, log: silent, bundleRefreshMs: 0 });
  await one.start();
  const embeddedMs: number[] = [];
  const directMs: number[] = [];
  for (let i = 0; i < 20; i++) {
    await one.renewAll();
    await directPeculiar(directCa, i);
  }
  // Alternating, so both see the same machine.
  let embeddedCpu = 0;
  let directCpu = 0;
  const cpu = (since: NodeJS.CpuUsage): number => {
    const d = process.cpuUsage(since);
    return (d.user + d.system) / 1000;
  };
  for (let i = 0; i < PER_IDENTITY; i++) {
    let t = performance.now();
    let c = process.cpuUsage();
    await one.renewAll();
    embeddedMs.push(performance.now() - t);
    embeddedCpu += cpu(c);
    t = performance.now();
    c = process.cpuUsage();
    await directPeculiar(directCa, i);
    directMs.push(performance.now() - t);
    directCpu += cpu(c);
  }
  await one.close();
  const bulkStore = new SecretStore({ log: silent });
  const bulk = new CaSource({ backend, trustDomain: TD, identities: Array.from({ length: IDENTITIES }, (_, i) => spec(i)), publisher: bulkStore, log: silent, bundleRefreshMs: 0 });
  const t0 = performance.now();
  const c0 = process.cpuUsage();
  await bulk.start();
  const bulkPerSecond = IDENTITIES / ((performance.now() - t0) / 1000);
  const bulkCpuMsPerIdentity = cpu(c0) / IDENTITIES;
  await bulk.close();
  return { embeddedMs, directMs, embeddedCpuMs: embeddedCpu / PER_IDENTITY, directCpuMs: directCpu / PER_IDENTITY, bulkPerSecond, bulkCpuMsPerIdentity };
}

// ---- 2. rollover with streams ------------------------------------------------------------------

interface HeldStream {
  name: string;
  versions: string[];
  lastAt: number;
  closed: boolean;
}

/** `perConn` SotW streams on one connection, one identity each, every response ACKed. */
function openStreams(socket: string, names: string[], held: HeldStream[], onClose: (s: HeldStream, why: string) => void): http2.ClientHttp2Session {
  const session = http2.connect('http://localhost', { createConnection: () => net.connect(socket) });
  session.on('error', () => undefined);
  const node = encodeNode('issuance-bench', 'bench');
  for (const name of names) {
    const s: HeldStream = { name, versions: [], lastAt: 0, closed: false };
    held.push(s);
    const req = session.request({ ':method': 'POST', ':path': SDS_V3_STREAM_PATH, 'content-type': 'application/grpc', te: 'trailers' });
    const reader = new GrpcMessageReader((buf, start, end) => {
      const { versionInfo, nonce } = decodeVersionAndNonce(buf, start, end);
      s.versions.push(versionInfo);
      s.lastAt = wallMs();
      req.write(grpcFrame(encodeDiscoveryRequest({ versionInfo, names: [name], typeUrl: SECRET_TYPE_URL_V3, nonce })));
    });
    req.on('data', (c: Buffer) => reader.push(c));
    req.on('error', (err) => !s.closed && onClose(s, err.message));
    req.on('close', () => {
      if (!s.closed) onClose(s, `closed (rst ${req.rstCode})`);
      s.closed = true;
    });
    req.write(grpcFrame(encodeDiscoveryRequest({ node, names: [name], typeUrl: SECRET_TYPE_URL_V3 })));
  }
  return session;
}

/** One fresh stream on a fresh connection: ms to its first response. */
function probeOnce(socket: string, name: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const t0 = wallMs();
    const session = http2.connect('http://localhost', { createConnection: () => net.connect(socket) });
    let done = false;
    const finish = (err?: Error): void => {
      if (done) return;
      done = true;
      session.destroy();
      if (err) reject(err);
      else resolve(wallMs() - t0);
    };
    session.on('error', (e) => finish(e));
    const req = session.request({ ':method': 'POST', ':path': SDS_V3_STREAM_PATH, 'content-type': 'application/grpc', te: 'trailers' });
    const reader = new GrpcMessageReader(() => finish());
    req.on('data', (c: Buffer) => reader.push(c));
    req.on('error', (e) => finish(e));
    req.on('close', () => finish(new Error('probe stream closed without a response')));
    req.write(grpcFrame(encodeDiscoveryRequest({ node: encodeNode('probe', 'bench'), names: [name], typeUrl: SECRET_TYPE_URL_V3 })));
  });
}

/** CPU time (ms) a process has used, from /proc (clock ticks of 10 ms). */
function cpuMsOf(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
  return (Number(fields[11]) + Number(fields[12])) * 10;
}

interface Rollover {
  startAllServedMs: number;
  rolloverMs: number;
  /** Server CPU time from the signal to the last stream renewed (ms): the rollover's cost without the machine's other load. */
  rolloverCpuMs: number;
  probeMaxMs: number;
  /** The same prober's slowest in the 3 s before the signal (the machine's own noise). */
  baselineMaxMs: number;
  probeP50Ms: number;
  probes: number;
  probeFailures: number;
  streamsLost: number;
  notRenewed: number;
}

async function rollover(dir: string, round: number): Promise<Rollover> {
  const socket = path.join(dir, `r${round}.sock`);
  const names = Array.from({ length: IDENTITIES }, (_, i) => `spiffe://${TD}/w/${i}`);
  const config = path.join(dir, `r${round}.yaml`);
  await fs.writeFile(config, [`ca: { trustDomain: ${TD}, embedded: { dataDir: ${path.join(dir, `ca-${round}`)} } }`, 'log: { level: warn }', 'identities:', ...names.map((n) => `  - { spiffeId: "${n}" }`), ''].join('\n'));
  const t0 = wallMs();
  const child: ChildProcess = spawn(process.execPath, [path.join(ROOT, 'dist/cli/main.js'), '--config', config, '--socket', socket], { cwd: ROOT, stdio: ['ignore', 'ignore', 'inherit'] });
  const sessions: http2.ClientHttp2Session[] = [];
  try {
    while (!(await fs.stat(socket).then(() => true, () => false))) await sleep(5);
    const held: HeldStream[] = [];
    const lost: string[] = [];
    for (let c = 0; c < 10; c++) sessions.push(openStreams(socket, names.slice(c * (IDENTITIES / 10), (c + 1) * (IDENTITIES / 10)), held, (s, why) => lost.push(`${s.name}: ${why}`)));
    while (held.some((s) => s.versions.length === 0)) {
      if (child.exitCode !== null) throw new Error(`server exited (${child.exitCode})`);
      await sleep(5);
    }
    const startAllServedMs = Math.max(...held.map((s) => s.lastAt)) - t0;
    await sleep(500);
    const initial = new Map(held.map((s) => [s, s.versions.at(-1)!]));
    // The prober runs from before the signal until after the last stream has its new leaf.
    const baselineMs: number[] = [];
    const probeMs: number[] = [];
    let probeFailures = 0;
    let probing = true;
    let into = baselineMs;
    const prober = (async () => {
      for (let k = 0; probing; k++) {
        const started = wallMs();
        const target = into;
        await probeOnce(socket, names[k % names.length]!).then((ms) => target.push(ms), () => (probeFailures += 1));
        await sleep(Math.max(0, 10 - (wallMs() - started)));
      }
    })();
    // A baseline on the same machine load: the same prober for 3 s before the signal.
    await sleep(3000);
    into = probeMs;
    const signalAt = wallMs();
    const cpuBefore = cpuMsOf(child.pid!);
    child.kill('SIGUSR2');
    const deadline = signalAt + 60_000;
    const renewed = (s: HeldStream): boolean => s.versions.at(-1) !== initial.get(s);
    while (!held.every(renewed) && wallMs() < deadline) await sleep(10);
    const rolloverMs = Math.max(...held.filter(renewed).map((s) => s.lastAt)) - signalAt;
    const rolloverCpuMs = cpuMsOf(child.pid!) - cpuBefore;
    await sleep(200);
    probing = false;
    await prober;
    if (lost.length) log(`  lost streams: ${lost.slice(0, 3).join(' | ')}`);
    return {
      startAllServedMs,
      rolloverMs,
      rolloverCpuMs,
      probeMaxMs: Math.max(...probeMs),
      baselineMaxMs: Math.max(...baselineMs),
      probeP50Ms: median(probeMs),
      probes: probeMs.length,
      probeFailures,
      streamsLost: lost.length,
      notRenewed: held.filter((s) => !renewed(s)).length,
    };
  } finally {
    for (const s of sessions) s.destroy();
    child.kill('SIGTERM');
    await new Promise((r) => (child.exitCode !== null ? r(undefined) : child.once('exit', r)));
  }
}

// ---- main --------------------------------------------------------------------------------------

const fmt = (v: number, d = 1): string => (Number.isFinite(v) ? v.toFixed(d) : 'n/a');
const spread = (xs: number[], d = 1): string => `${fmt(Math.min(...xs), d)}-${fmt(Math.max(...xs), d)}`;

async function main(): Promise<void> {
  if (!argv.includes('--no-build')) {
    log('building dist/ (npm run build)');
    execFileSync('npm', ['run', '--silent', 'build'], { cwd: ROOT, stdio: 'inherit' });
  }
  const load = [loadavg()];
  const per: PerIdentity[] = [];
  const roll: Rollover[] = [];
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'sds-issuance-'));
  try {
    for (let r = 0; r < ROUNDS; r++) {
      log(`round ${r + 1}/${ROUNDS}: per identity (${PER_IDENTITY} each, alternating)`);
      per.push(await perIdentity());
      const p = per.at(-1)!;
      log(`  embedded CA median ${fmt(median(p.embeddedMs), 2)} ms (CPU ${fmt(p.embeddedCpuMs, 2)}), @peculiar/x509 direct ${fmt(median(p.directMs), 2)} ms (CPU ${fmt(p.directCpuMs, 2)}), ${fmt(p.bulkPerSecond, 0)} identities/s at once`);
      log(`round ${r + 1}/${ROUNDS}: rollover of ${IDENTITIES} identities with ${IDENTITIES} streams`);
      roll.push(await rollover(dir, r));
      const x = roll.at(-1)!;
      log(`  rollover ${fmt(x.rolloverMs, 0)} ms (server CPU ${fmt(x.rolloverCpuMs, 0)} ms), slowest probe ${fmt(x.probeMaxMs, 0)} ms, streams lost ${x.streamsLost}`);
    }
  } finally {
    await fs.rm(dir, { recursive: true, force: true });
  }
  load.push(loadavg());
  const emb = per.map((p) => median(p.embeddedMs));
  const dir2 = per.map((p) => median(p.directMs));
  const rows = [
    ['metric', 'median of rounds', 'spread over rounds', 'target', 'met'],
    ['embedded CA, P-256 issue + validate + publish, median (ms)', fmt(median(emb), 2), spread(emb, 2), '<= 5 ms', median(emb) <= 5 ? 'yes' : '**NO**'],
    ['  same, p99 (ms)', fmt(median(per.map((p) => percentile(p.embeddedMs, 99))), 2), spread(per.map((p) => percentile(p.embeddedMs, 99)), 2), '', ''],
    ['@peculiar/x509 + WebCrypto direct: key, CSR, sign, verify (ms)', fmt(median(dir2), 2), spread(dir2, 2), '', ''],
    ['  ratio embedded / direct', `${fmt(median(emb) / median(dir2), 2)}x`, '', '', ''],
    ['embedded CA, CPU time per identity (ms)', fmt(median(per.map((p) => p.embeddedCpuMs)), 2), spread(per.map((p) => p.embeddedCpuMs), 2), '<= 5 ms', median(per.map((p) => p.embeddedCpuMs)) <= 5 ? 'yes' : '**NO**'],
    ['@peculiar/x509 direct, CPU time per identity (ms)', fmt(median(per.map((p) => p.directCpuMs)), 2), spread(per.map((p) => p.directCpuMs), 2), '', ''],
    [`${IDENTITIES} identities at once, CPU time per identity (ms)`, fmt(median(per.map((p) => p.bulkCpuMsPerIdentity)), 2), spread(per.map((p) => p.bulkCpuMsPerIdentity), 2), '', ''],
    [`${IDENTITIES} identities at once (CaSource start), identities/s`, fmt(median(per.map((p) => p.bulkPerSecond)), 0), spread(per.map((p) => p.bulkPerSecond), 0), '', ''],
    [`server start -> all ${IDENTITIES} streams served (ms)`, fmt(median(roll.map((x) => x.startAllServedMs)), 0), spread(roll.map((x) => x.startAllServedMs), 0), '', ''],
    [`root rollover: SIGUSR2 -> all ${IDENTITIES} streams have the new leaf (ms)`, fmt(median(roll.map((x) => x.rolloverMs)), 0), spread(roll.map((x) => x.rolloverMs), 0), '< 10000 ms', roll.every((x) => x.rolloverMs < 10_000 && x.notRenewed === 0) ? 'yes' : '**NO**'],
    ['  server CPU time during the rollover (ms)', fmt(median(roll.map((x) => x.rolloverCpuMs)), 0), spread(roll.map((x) => x.rolloverCpuMs), 0), '', ''],
    ['  streams closed or errored during rollover', String(Math.max(...roll.map((x) => x.streamsLost))), '', '0', roll.every((x) => x.streamsLost === 0) ? 'yes' : '**NO**'],
    ['  new stream every 10 ms: slowest first response (ms)', fmt(median(roll.map((x) => x.probeMaxMs)), 0), spread(roll.map((x) => x.probeMaxMs), 0), '', ''],
    ['  same, in the 3 s before the rollover (ms)', fmt(median(roll.map((x) => x.baselineMaxMs)), 0), spread(roll.map((x) => x.baselineMaxMs), 0), '', ''],
    ['  new stream every 10 ms: median first response (ms)', fmt(median(roll.map((x) => x.probeP50Ms)), 1), spread(roll.map((x) => x.probeP50Ms), 1), '', ''],
    ['  probes failed / made', `${roll.reduce((a, x) => a + x.probeFailures, 0)} / ${roll.reduce((a, x) => a + x.probes, 0)}`, '', '0 failed', roll.every((x) => x.probeFailures === 0) ? 'yes' : '**NO**'],
  ];
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  const line = (r: string[]): string => `| ${r.map((c, i) => c.padEnd(widths[i]!)).join(' | ')} |`;
  process.stdout.write(`\n${[line(rows[0]!), `|${widths.map((w) => '-'.repeat(w + 2)).join('|')}|`, ...rows.slice(1).map(line)].join('\n')}\n\n`);
  process.stdout.write(`- ${ROUNDS} rounds; ${PER_IDENTITY} identities per round for the per-identity rows; load average before/after: ${load.join(' / ')}\n`);
  process.stdout.write(`- node ${process.version}, ${os.availableParallelism()} CPUs, ${readFileSync('/proc/cpuinfo', 'utf8').match(/model name\s*:\s*(.*)/)?.[1] ?? ''}\n`);
}

main().then(
  () => process.exit(0),
  (err: Error) => {
    process.stderr.write(`bench:issuance failed: ${err.stack ?? err.message}\n`);
    process.exit(1);
  },
);
