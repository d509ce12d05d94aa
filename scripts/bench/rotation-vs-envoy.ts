/**
 * `npm run bench:rotation`: file rotation until real Envoy serves the new certificate, side by side
 * in one invocation for
 *   (a) sds-server: the real program (its own process) watching the files, Envoy fed over SDS;
 *   (b) Envoy's own file-based SDS: `sds_config.path_config_source` + `watched_directory`, no server.
 * each with two rotation styles:
 *   - temp + rename: write `.tls.key.tmp` and `.tls.crt.tmp`, rename the key, then the certificate;
 *   - Kubernetes `..data` swap: new timestamped directory, `..data_tmp` symlink renamed over `..data`.
 * The clock starts when the last rename returns and stops when Envoy's admin `/certs` lists the new
 * serial (polled back to back over one keep-alive connection; the same poll for both paths). The
 * four (path, style) pairs take turns within every rotation, so both paths see the same machine.
 * Every round starts a fresh server and fresh Envoys.
 *
 * It also measures what the periodic re-read (the safety net behind the file watcher) costs an
 * idle server: CPU over a window with the re-read every 100 ms against the re-read off.
 *
 * Options: --rounds N (default 3), --rotations N per (path, style) per round (default 50),
 * --idle-seconds N (default 10; 0 skips the idle measurement).
 * Needs Envoy: ENVOY_BIN, `envoy` on PATH, or `bash scripts/envoy/install-envoy.sh`.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs/promises';
import { mkdirSync, readFileSync, renameSync, symlinkSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { stringify as toYaml } from 'yaml';
import { createRootCa, issueLeaf, type CertificateAuthority, type IssuedLeaf } from '../../src/x509/issue.js';
import { findEnvoy, envoyVersion, INSTALL_HINT } from '../../test/envoy/find-envoy.js';
import { EnvoyProcess, TYPE, freePorts, normalizeSerial, sdsListenersBootstrap, sdsTlsListener, writeBootstrap, directResponseFilter, type Config } from '../../test/envoy/harness.js';
import { median, percentile } from './common.js';
import { SdsTestClient, decodeSecret, envoyNode } from '../../test/helpers/sds-client.js';
import { X509Certificate } from 'node:crypto';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const SECRET_TYPE_URL = 'type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret';
const TARGET_RATIO = 2;
const TARGET_P99_MS = 20;

type PathKind = 'sds-server' | 'envoy-files';
type Style = 'rename' | 'k8s';
const STYLES: Style[] = ['rename', 'k8s'];
const STYLE_LABEL: Record<Style, string> = { rename: 'temp + rename', k8s: 'k8s ..data swap' };

export interface RotationBenchOptions {
  rounds: number;
  rotations: number;
  idleSeconds: number;
  log: (line: string) => void;
}

interface RoundResult {
  /**
   * `${path}/${style}` -> milliseconds per rotation; `sds-client/${style}`: until the push reached
   * a plain SDS client subscribed next to Envoy (the server's share of the sds-server figure).
   */
  ms: Map<string, number[]>;
  loadavg: string;
}

export interface RotationBenchResult {
  envoy: string;
  rounds: RoundResult[];
  idle?: { pollMs: number; cpuPercent: number }[];
  /** Markdown table and notes. */
  report: string;
  /** Every target met in every round. */
  met: boolean;
}

// ---- rotation styles ---------------------------------------------------------------------------

/** A directory whose `tls.crt`/`tls.key` are replaced as one tool or another does it. */
class CertDir {
  private generation = 0;
  private current: string | undefined;
  /** Old timestamped directory, removed after the measurement (the kubelet removes it after the swap). */
  private stale: string | undefined;
  constructor(readonly dir: string, readonly style: Style) {}

  path(base: string): string {
    return path.join(this.dir, base);
  }

  async init(leaf: IssuedLeaf, extra: Record<string, string> = {}): Promise<void> {
    await fs.mkdir(this.dir, { recursive: true });
    const files = { 'tls.key': leaf.keyPem, 'tls.crt': leaf.chainPem, ...extra };
    if (this.style === 'rename') {
      for (const [base, text] of Object.entries(files)) await fs.writeFile(this.path(base), text);
      return;
    }
    this.current = this.writeTimestamped(files);
    await fs.symlink(this.current, this.path('..data'));
    for (const base of Object.keys(files)) await fs.symlink(path.join('..data', base), this.path(base));
  }

  /**
   * Replaces the pair; returns performance.now() right after the last rename. Synchronous calls:
   * the clock starts when the rename system call returns, not when a busy event loop gets round
   * to the callback (on a loaded machine that came after the server had already pushed).
   */
  rotate(leaf: IssuedLeaf, extra: Record<string, string> = {}): number {
    if (this.style === 'rename') {
      // Key first, then certificate: in between, the files on disk are a mismatched pair.
      writeFileSync(this.path('.tls.key.tmp'), leaf.keyPem);
      writeFileSync(this.path('.tls.crt.tmp'), leaf.chainPem);
      renameSync(this.path('.tls.key.tmp'), this.path('tls.key'));
      renameSync(this.path('.tls.crt.tmp'), this.path('tls.crt'));
      return performance.now();
    }
    const next = this.writeTimestamped({ 'tls.key': leaf.keyPem, 'tls.crt': leaf.chainPem, ...extra });
    symlinkSync(next, this.path('..data_tmp'));
    renameSync(this.path('..data_tmp'), this.path('..data'));
    const at = performance.now();
    this.stale = this.current;
    this.current = next;
    return at;
  }

  async cleanUp(): Promise<void> {
    if (this.stale) await fs.rm(this.path(this.stale), { recursive: true, force: true });
    this.stale = undefined;
  }

  private writeTimestamped(files: Record<string, string>): string {
    const name = `..2026_01_01_00_00_00.${String(this.generation++).padStart(9, '0')}`;
    mkdirSync(this.path(name));
    for (const [base, text] of Object.entries(files)) writeFileSync(path.join(this.dir, name, base), text);
    return name;
  }
}

/** Envoy's file-based SDS resource file: the Secret names the certificate and key files. */
function sdsFile(name: string, dir: string): string {
  const secret = {
    '@type': SECRET_TYPE_URL,
    name,
    tls_certificate: { certificate_chain: { filename: path.join(dir, 'tls.crt') }, private_key: { filename: path.join(dir, 'tls.key') } },
  };
  return toYaml({ resources: [secret] }, { version: '1.1' });
}

/** A TLS listener whose certificate comes from Envoy's file-based SDS in `dir`. */
function fileSdsListener(name: string, port: number, dir: string): Config {
  return {
    name,
    address: { socket_address: { address: '127.0.0.1', port_value: port } },
    filter_chains: [
      {
        filters: [directResponseFilter(name)],
        transport_socket: {
          name: 'envoy.transport_sockets.tls',
          typed_config: {
            '@type': TYPE.downstreamTls,
            common_tls_context: {
              tls_certificate_sds_secret_configs: [
                {
                  name,
                  sds_config: {
                    resource_api_version: 'V3',
                    path_config_source: { path: path.join(dir, 'sds.yaml'), watched_directory: { path: dir } },
                  },
                },
              ],
            },
          },
        },
      },
    ],
  };
}

// ---- Envoy admin /certs, polled over one keep-alive connection ----------------------------------

class CertsPoller {
  private readonly agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  constructor(private readonly port: number) {}

  private serials(): Promise<string[]> {
    return new Promise((resolve, reject) => {
      const req = http.get({ host: '127.0.0.1', port: this.port, path: '/certs', agent: this.agent }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          try {
            const body = JSON.parse(Buffer.concat(chunks).toString('utf8')) as { certificates: Array<{ cert_chain?: Array<{ serial_number?: string }> }> };
            resolve(body.certificates.flatMap((c) => c.cert_chain?.map((x) => normalizeSerial(x.serial_number ?? '')) ?? []));
          } catch (err) {
            reject(err instanceof Error ? err : new Error(String(err)));
          }
        });
        res.on('error', reject);
      });
      req.on('error', reject);
    });
  }

  /** Resolves performance.now() of the first answer listing `serial`. */
  async waitFor(serial: string, timeoutMs = 10_000): Promise<number> {
    const want = normalizeSerial(serial);
    const deadline = performance.now() + timeoutMs;
    for (;;) {
      const serials = await this.serials();
      const at = performance.now();
      if (serials.includes(want)) return at;
      if (at > deadline) throw new Error(`Envoy (admin port ${this.port}) did not show serial ${serial} within ${timeoutMs} ms`);
    }
  }

  close(): void {
    this.agent.destroy();
  }
}

// ---- the server under test ----------------------------------------------------------------------

async function startServer(dir: string, certs: Array<{ name: string; cert: string; key: string }>, pollIntervalMs?: number): Promise<{ child: ChildProcess; socket: string; stop: () => Promise<void> }> {
  const config = path.join(dir, `sds-${Math.random().toString(36).slice(2)}.yaml`);
  const socket = path.join(dir, `sds-${Math.random().toString(36).slice(2)}.sock`);
  await fs.writeFile(
    config,
    [
      'certificates:',
      ...certs.map((c) => `  - { name: "${c.name}", cert: "${c.cert}", key: "${c.key}" }`),
      ...(pollIntervalMs !== undefined ? [`watch: { pollIntervalMs: ${pollIntervalMs} }`] : []),
      'log: { level: warn }',
      '',
    ].join('\n'),
  );
  const child = spawn(process.execPath, ['--import', 'tsx', path.join(ROOT, 'src/cli/main.ts'), '--config', config, '--socket', socket], {
    cwd: ROOT,
    stdio: ['ignore', 'inherit', 'inherit'],
  });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const deadline = Date.now() + 20_000;
  for (;;) {
    try {
      if ((await fs.lstat(socket)).isSocket()) break;
    } catch {
      // not yet
    }
    if (child.exitCode !== null || Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error('sds-server did not create its socket');
    }
    await new Promise((r) => setTimeout(r, 20));
  }
  return {
    child,
    socket,
    stop: async () => {
      if (child.exitCode === null) child.kill('SIGTERM');
      await exited;
    },
  };
}

/** User + system CPU of a process so far (ms), from /proc/<pid>/stat. */
function cpuMs(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
  // utime and stime are fields 14 and 15 of the whole line: 12 and 13 after "pid (comm) ".
  const ticks = Number(fields[11]) + Number(fields[12]);
  return (ticks * 1000) / 100; // USER_HZ is 100 on Linux
}

// ---- one round ----------------------------------------------------------------------------------

async function runRound(bin: string, ca: CertificateAuthority, opts: RotationBenchOptions): Promise<RoundResult> {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'sds-bench-rotation-'));
  const stops: Array<() => Promise<void>> = [];
  const pollers: CertsPoller[] = [];
  try {
    const name = (p: PathKind, s: Style): string => `spiffe://example.org/${p}-${s}`;
    const dirs = new Map<string, CertDir>();
    for (const p of ['sds-server', 'envoy-files'] as const) {
      for (const s of STYLES) {
        const d = new CertDir(path.join(dir, `${p}-${s}`), s);
        const extra: Record<string, string> = p === 'envoy-files' ? { 'sds.yaml': sdsFile(name(p, s), d.dir) } : {};
        await d.init(await issueLeaf(ca, { spiffeId: name(p, s) }), extra);
        dirs.set(`${p}/${s}`, d);
      }
    }
    const server = await startServer(
      dir,
      STYLES.map((s) => ({ name: name('sds-server', s), cert: dirs.get(`sds-server/${s}`)!.path('tls.crt'), key: dirs.get(`sds-server/${s}`)!.path('tls.key') })),
    );
    stops.push(server.stop);
    const [adminA, adminB, ...ports] = await freePorts(6);
    const envoys = new Map<PathKind, CertsPoller>();
    const a = await EnvoyProcess.start({
      bin,
      name: 'envoy-via-sds-server',
      adminPort: adminA!,
      logLevel: 'warn',
      bootstrapFile: await writeBootstrap(dir, 'envoy-a', sdsListenersBootstrap({
        nodeId: 'bench-a',
        adminPort: adminA!,
        socketPath: server.socket,
        listeners: STYLES.map((s, i) => sdsTlsListener({ name: name('sds-server', s), port: ports[i]!, certificate: name('sds-server', s) })),
      })),
    });
    stops.push(() => a.stop());
    const b = await EnvoyProcess.start({
      bin,
      name: 'envoy-file-sds',
      adminPort: adminB!,
      logLevel: 'warn',
      bootstrapFile: await writeBootstrap(dir, 'envoy-b', {
        node: { id: 'bench-b', cluster: 'bench' },
        admin: { address: { socket_address: { address: '127.0.0.1', port_value: adminB } } },
        static_resources: { listeners: STYLES.map((s, i) => fileSdsListener(name('envoy-files', s), ports[2 + i]!, dirs.get(`envoy-files/${s}`)!.dir)) },
      }),
    });
    stops.push(() => b.stop());
    // A plain SDS client beside Envoy: when the push left the server, apart from Envoy's share.
    const pushes = new Map<string, number>();
    const client = new SdsTestClient(server.socket);
    stops.push(async () => client.close());
    for (const s of STYLES) {
      const stream = client.stream();
      stops.push(async () => stream.end());
      stream.send({ node: envoyNode(), resource_names: [name('sds-server', s)], type_url: client.typeUrl });
      // Short waits, re-armed until the round stops: one long pending timer kept the process alive
      // after the report was printed.
      let stopped = false;
      stops.push(async () => {
        stopped = true;
      });
      void (async () => {
        for (;;) {
          const res = await stream.next(1_000).catch(() => undefined);
          if (stopped) return;
          if (!res) continue;
          const at = performance.now();
          const chain = decodeSecret(res.resources[0]!).tls_certificate?.certificate_chain?.inline_bytes;
          if (chain) pushes.set(normalizeSerial(new X509Certificate(chain).serialNumber), at);
          stream.send({ version_info: res.version_info, resource_names: [name('sds-server', s)], type_url: client.typeUrl, response_nonce: res.nonce });
        }
      })();
    }
    envoys.set('sds-server', new CertsPoller(adminA!));
    envoys.set('envoy-files', new CertsPoller(adminB!));
    pollers.push(...envoys.values());

    const ms = new Map<string, number[]>();
    // One unmeasured warm-up rotation per pair (first-use costs in both processes).
    for (let i = -1; i < opts.rotations; i++) {
      for (const s of STYLES) {
        // Alternate which path goes first, so neither always follows the other's work.
        const order: PathKind[] = i % 2 === 0 ? ['sds-server', 'envoy-files'] : ['envoy-files', 'sds-server'];
        for (const p of order) {
          const d = dirs.get(`${p}/${s}`)!;
          const leaf = await issueLeaf(ca, { spiffeId: name(p, s) });
          const extra: Record<string, string> = p === 'envoy-files' ? { 'sds.yaml': sdsFile(name(p, s), d.dir) } : {};
          const t0 = d.rotate(leaf, extra);
          const t1 = await envoys.get(p)!.waitFor(leaf.serialNumber);
          await d.cleanUp();
          if (i < 0) continue;
          ms.set(`${p}/${s}`, [...(ms.get(`${p}/${s}`) ?? []), t1 - t0]);
          const pushedAt = pushes.get(normalizeSerial(leaf.serialNumber));
          if (p === 'sds-server' && pushedAt !== undefined) ms.set(`sds-client/${s}`, [...(ms.get(`sds-client/${s}`) ?? []), pushedAt - t0]);
        }
      }
    }
    if (process.env.BENCH_DEBUG) for (const [k, v] of ms) opts.log(`${k}: ${[...v].sort((x, y) => x - y).map((x) => x.toFixed(1)).join(' ')}`);
    return { ms, loadavg: readFileSync('/proc/loadavg', 'utf8').trim().split(' ').slice(0, 3).join(' ') };
  } finally {
    for (const p of pollers) p.close();
    for (const stop of stops.reverse()) await stop().catch(() => undefined);
    await fs.rm(dir, { recursive: true, force: true });
  }
}

/** Server CPU over `seconds` idle (one secret, no client) with the periodic re-read every `pollMs` (0 = off). */
async function idleCpu(ca: CertificateAuthority, pollMs: number, seconds: number): Promise<number> {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'sds-bench-idle-'));
  try {
    const d = new CertDir(path.join(dir, 'certs'), 'rename');
    await d.init(await issueLeaf(ca, { spiffeId: 'spiffe://example.org/idle' }));
    const server = await startServer(dir, [{ name: 'spiffe://example.org/idle', cert: d.path('tls.crt'), key: d.path('tls.key') }], pollMs);
    try {
      // Let start-up work (module loading, JIT, GC) finish before the window.
      await new Promise((r) => setTimeout(r, 3_000));
      const pid = server.child.pid!;
      const c0 = cpuMs(pid);
      const t0 = performance.now();
      await new Promise((r) => setTimeout(r, seconds * 1000));
      return ((cpuMs(pid) - c0) / (performance.now() - t0)) * 100;
    } finally {
      await server.stop();
    }
  } finally {
    await fs.rm(dir, { recursive: true, force: true });
  }
}

// ---- report -------------------------------------------------------------------------------------

const f1 = (n: number): string => (Number.isFinite(n) ? n.toFixed(2) : '-');

function report(envoy: string, rounds: RoundResult[], idle: RotationBenchResult['idle']): { text: string; met: boolean } {
  const lines: string[] = [];
  let met = true;
  lines.push(`File rotation until Envoy ${envoy} /certs shows the new serial (ms), ${rounds.length} round(s), ${rounds[0]?.ms.get('sds-server/rename')?.length ?? 0} rotations per row per round:`);
  lines.push('');
  lines.push('| round | style | sds-server median | p99 | Envoy file SDS median | p99 | median ratio | targets (<= 2x, p99 < 20 ms) | push at an SDS client: median / p99 | load avg |');
  lines.push('|---|---|---|---|---|---|---|---|---|---|');
  rounds.forEach((r, i) => {
    for (const s of STYLES) {
      const ours = r.ms.get(`sds-server/${s}`) ?? [];
      const theirs = r.ms.get(`envoy-files/${s}`) ?? [];
      const ratio = median(ours) / median(theirs);
      const ok = ratio <= TARGET_RATIO && percentile(ours, 99) < TARGET_P99_MS;
      met &&= ok;
      const push = r.ms.get(`sds-client/${s}`) ?? [];
      lines.push(`| ${i + 1} | ${STYLE_LABEL[s]} | ${f1(median(ours))} | ${f1(percentile(ours, 99))} | ${f1(median(theirs))} | ${f1(percentile(theirs, 99))} | ${f1(ratio)}x | ${ok ? 'met' : 'missed'} | ${f1(median(push))} / ${f1(percentile(push, 99))} | ${r.loadavg} |`);
    }
  });
  lines.push('');
  for (const s of STYLES) {
    const ratios = rounds.map((r) => median(r.ms.get(`sds-server/${s}`) ?? []) / median(r.ms.get(`envoy-files/${s}`) ?? []));
    const ours = rounds.map((r) => median(r.ms.get(`sds-server/${s}`) ?? []));
    lines.push(`- ${STYLE_LABEL[s]}: sds-server median ${f1(Math.min(...ours))}-${f1(Math.max(...ours))} ms across rounds; ratio to Envoy's own file SDS ${f1(Math.min(...ratios))}-${f1(Math.max(...ratios))}x`);
  }
  if (idle) {
    lines.push(`- idle server CPU (one secret, no client): ${idle.map((x) => `${x.pollMs === 0 ? 're-read off' : `re-read every ${x.pollMs} ms`} ${x.cpuPercent.toFixed(3)} %`).join(', ')} of one core`);
  }
  lines.push(`- every target met in every round: ${met ? 'yes' : 'no'}`);
  return { text: lines.join('\n'), met };
}

/** Runs the comparison; resolves undefined (after logging why) when no Envoy is available. */
export async function runRotationVsEnvoy(opts: RotationBenchOptions): Promise<RotationBenchResult | undefined> {
  const found = findEnvoy();
  if (!found.found) {
    opts.log(`rotation vs Envoy file SDS: skipped, ${found.problem}; ${INSTALL_HINT}`);
    return undefined;
  }
  const envoy = envoyVersion(found.bin) ?? '?';
  const ca = await createRootCa({ trustDomain: 'example.org' });
  const rounds: RoundResult[] = [];
  for (let r = 1; r <= opts.rounds; r++) {
    opts.log(`rotation vs Envoy file SDS: round ${r}/${opts.rounds} (${opts.rotations} rotations per path and style), load ${readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ')}`);
    rounds.push(await runRound(found.bin, ca, opts));
  }
  let idle: RotationBenchResult['idle'];
  if (opts.idleSeconds > 0) {
    idle = [];
    for (const pollMs of [0, 100]) {
      opts.log(`idle CPU, periodic re-read ${pollMs === 0 ? 'off' : `every ${pollMs} ms`}: ${opts.idleSeconds} s`);
      idle.push({ pollMs, cpuPercent: await idleCpu(ca, pollMs, opts.idleSeconds) });
    }
  }
  const { text, met } = report(envoy, rounds, idle);
  return { envoy, rounds, ...(idle ? { idle } : {}), report: text, met };
}

function intArg(argv: string[], flag: string, fallback: number): number {
  const i = argv.indexOf(flag);
  if (i < 0) return fallback;
  const value = Number(argv[i + 1]);
  if (!Number.isInteger(value) || value < 0) throw new Error(`${flag} expects a non-negative integer, got ${argv[i + 1]}`);
  return value;
}

async function main(): Promise<void> {
  const argv = process.argv.slice(2);
  const result = await runRotationVsEnvoy({
    rounds: Math.max(1, intArg(argv, '--rounds', 3)),
    rotations: Math.max(1, intArg(argv, '--rotations', 50)),
    idleSeconds: intArg(argv, '--idle-seconds', 10),
    log: (line) => void process.stderr.write(`${line}\n`),
  });
  if (!result) {
    process.exitCode = 1;
    return;
  }
  process.stdout.write(`\n${result.report}\n\nMachine: ${os.cpus().length} x ${os.cpus()[0]?.model ?? '?'}, ${Math.round(os.totalmem() / 2 ** 30)} GiB, ${os.type()} ${os.release()}, Node ${process.version}\n`);
}

if (process.argv[1] && import.meta.url === pathToFileURL(path.resolve(process.argv[1])).href) {
  main().catch((err: Error) => {
    process.stderr.write(`bench:rotation failed: ${err.stack ?? err.message}\n`);
    process.exit(1);
  });
}
