/**
 * `npm run demo`, as a function: the docker-compose.yml mesh as local processes with real Envoy.
 *
 *   sds-server (the real program, a child process) on a socket in a temp dir, embedded CA issuing
 *   spiffe://example.org/front and /back with a short lifetime;
 *   back app + back Envoy, front app + front Envoy (bootstraps rendered by mesh-config.ts, the same
 *   source as examples/demo/*-envoy.yaml); the front app calls back through its Envoy, N times a second.
 *
 * Once a second it prints what an operator would check by hand, and a line whenever a rotation
 * lands in an Envoy; it returns a summary when stopped (duration over, or the abort signal).
 * Nothing here imports vitest: the CLI (run-demo.ts) and test/demo.test.ts both use it.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { parseDurationSeconds } from '../../src/cli/config.js';
import { EnvoyProcess, freePorts, httpRequest, normalizeSerial, sleep, writeBootstrap } from '../../test/envoy/harness.js';
import {
  PEER,
  REPO_ROOT,
  SERVICES,
  STATS,
  localSidecar,
  renderYaml,
  serverConfig,
  sidecarBootstrap,
  spiffeId,
  type LocalPorts,
  type Service,
} from './mesh-config.js';

export interface DemoOptions {
  envoyBin: string;
  /** Certificate lifetime, e.g. `30s` (renewed at half). */
  lifetime: string;
  /** Stop by itself after this many seconds of traffic; without it, run until `signal` aborts. */
  durationSeconds?: number;
  /** Requests per second from front to back (default 10). */
  rate?: number;
  /** Stops the demo (Ctrl-C in the CLI). */
  signal?: AbortSignal;
  /** Where the operator view goes (default console.log). */
  print?: (line: string) => void;
}

export interface DemoSummary {
  /** Seconds of traffic. */
  seconds: number;
  requests: { ok: number; failed: number; errors: Record<string, number> };
  /** Serial changes each Envoy's admin /certs showed after its first certificate. */
  rotations: Record<Service, number>;
  /** Successful requests counted after the first rotation landed (traffic went on across it). */
  okAfterFirstRotation: number;
  /** TLS handshakes of back's inbound listener (the server side of the traffic). */
  handshakes: number;
  /** Failed TLS handshakes: back's inbound listener plus front's outbound cluster. */
  connectionErrors: number;
  socketPath: string;
  /** Whether the temp dir (socket, CA, configs) was gone after the stop. */
  cleanedUp: boolean;
  stoppedBy: 'duration' | 'signal';
}

/** Minimum lifetime: renewal at half must leave Envoy time to get the new certificate. */
export const MIN_LIFETIME_SECONDS = 4;

interface Traffic {
  started: boolean;
  ok: number;
  failed: number;
  errors: Record<string, number>;
  lastError: string;
  lastCaller: string;
}

/** A child process whose output is kept (last lines) for a failure report. */
class Child {
  readonly lines: string[] = [];
  exitInfo: { code: number | null; signal: NodeJS.Signals | null } | undefined;
  readonly exited: Promise<void>;

  constructor(
    readonly name: string,
    readonly proc: ChildProcess,
    onLine?: (line: string) => void,
  ) {
    let partial = '';
    const collect = (data: Buffer): void => {
      const text = partial + data.toString('utf8');
      const parts = text.split('\n');
      partial = parts.pop() ?? '';
      for (const line of parts) {
        this.lines.push(line);
        if (this.lines.length > 300) this.lines.shift();
        onLine?.(line);
      }
    };
    proc.stdout?.on('data', collect);
    proc.stderr?.on('data', collect);
    this.exited = new Promise((resolve) => {
      proc.once('exit', (code, signal) => {
        this.exitInfo = { code, signal };
        resolve();
      });
    });
  }

  get running(): boolean {
    return this.exitInfo === undefined;
  }

  async stop(graceMs = 5000): Promise<void> {
    if (!this.running) return;
    this.proc.kill('SIGTERM');
    const timer = setTimeout(() => this.proc.kill('SIGKILL'), graceMs);
    await this.exited;
    clearTimeout(timer);
  }

  report(): string {
    return `----- ${this.name} (${this.running ? `pid ${this.proc.pid}` : `exited ${JSON.stringify(this.exitInfo)}`}) -----\n${this.lines.slice(-40).join('\n')}`;
  }
}

const running = new Set<Child>();
process.once('exit', () => {
  for (const child of running) child.proc.kill('SIGKILL');
});

function start(name: string, args: string[], env: NodeJS.ProcessEnv, onLine?: (line: string) => void): Child {
  const proc = spawn(process.execPath, args, { cwd: REPO_ROOT, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  const child = new Child(name, proc, onLine);
  running.add(child);
  void child.exited.then(() => running.delete(child));
  return child;
}

async function getJson<T>(port: number, pathname: string): Promise<T> {
  const res = await httpRequest({ port, path: pathname, timeoutMs: 2000 });
  if (res.status !== 200) throw new Error(`GET 127.0.0.1:${port}${pathname} answered ${res.status}`);
  return JSON.parse(res.body) as T;
}

async function waitFor(what: string, check: () => Promise<boolean>, children: Child[], timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      if (await check()) return;
    } catch {
      // not yet
    }
    const dead = children.find((c) => !c.running);
    if (dead) throw new Error(`${dead.name} exited while waiting for ${what}\n${dead.report()}`);
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(100);
  }
}

const shortSerial = (serial: string): string => (serial.length > 12 ? `${serial.slice(0, 6)}…${serial.slice(-4)}` : serial);
const clock = (d: Date): string => `${d.toISOString().slice(11, 19)}Z`;

/** What one Envoy's /certs shows: the leaf serial (and expiry) of each TLS context. */
interface Held {
  serial: string | undefined;
  expires: Date | undefined;
  /** More than one leaf across its TLS contexts: a rotation half-way through. */
  mixed: boolean;
}

async function heldCertificate(envoy: EnvoyProcess): Promise<Held> {
  const certs = await envoy.certs();
  const leaves = certs.certificates.map((c) => c.cert_chain?.[0]).filter((c) => c !== undefined);
  const serials = [...new Set(leaves.map((c) => normalizeSerial(c.serial_number)))];
  const first = leaves[0];
  return {
    serial: first ? normalizeSerial(first.serial_number) : undefined,
    expires: first?.expiration_time ? new Date(first.expiration_time) : undefined,
    mixed: serials.length > 1,
  };
}

/**
 * Runs the mesh until the duration is over or `signal` aborts, printing the operator view, and
 * stops everything (socket and temp dir removed) before it returns or throws.
 */
export async function runDemo(o: DemoOptions): Promise<DemoSummary> {
  const print = o.print ?? ((line: string) => console.log(line));
  const rate = o.rate ?? 10;
  const lifetimeSeconds = parseDurationSeconds(o.lifetime);
  if (lifetimeSeconds === undefined || lifetimeSeconds < MIN_LIFETIME_SECONDS) {
    throw new Error(`lifetime must be a duration of at least ${MIN_LIFETIME_SECONDS}s (like 30s or 2m), got ${JSON.stringify(o.lifetime)}`);
  }
  const dir = await mkdtemp(path.join(tmpdir(), 'sds-demo-'));
  const socketPath = path.join(dir, 'sds.sock');
  const children: Child[] = [];
  const envoys: Partial<Record<Service, EnvoyProcess>> = {};
  let stopping = false;
  const aborted = (): boolean => o.signal?.aborted === true;

  const stopAll = async (): Promise<boolean> => {
    stopping = true;
    // Traffic first, then the Envoys, then the server (it removes its socket on SIGTERM).
    const [front, back, server] = [children.find((c) => c.name === 'front app'), children.find((c) => c.name === 'back app'), children.find((c) => c.name === 'sds-server')];
    await front?.stop();
    await Promise.all(SERVICES.map((s) => envoys[s]?.stop()));
    await server?.stop();
    await back?.stop();
    await Promise.all(children.map((c) => c.stop()));
    await rm(dir, { recursive: true, force: true });
    return !existsSync(socketPath) && !existsSync(dir);
  };

  try {
    const [serverAdmin = 0, ...rest] = await freePorts(1 + 4 * SERVICES.length);
    const ports = {} as Record<Service, LocalPorts>;
    SERVICES.forEach((s, i) => {
      const [admin, inbound, egress, app] = rest.slice(i * 4, i * 4 + 4) as [number, number, number, number];
      ports[s] = { admin, inbound, egress, app };
    });

    // sds-server: the real program, same identities and lifetimes as docker-compose.yml.
    const configFile = path.join(dir, 'sds-server.yaml');
    await writeFile(
      configFile,
      renderYaml(serverConfig({ lifetime: o.lifetime, dataDir: path.join(dir, 'ca'), adminAddress: `127.0.0.1:${serverAdmin}`, logFormat: 'json' })),
    );
    const t0 = Date.now();
    const stamp = (): string => `[${String(Math.floor((Date.now() - t0) / 1000)).padStart(4)}s]`;
    const server = start(
      'sds-server',
      ['--import', 'tsx', path.join(REPO_ROOT, 'src', 'cli', 'main.ts'), '--config', configFile],
      { APPMESH_SDS_SOCKET_PATH: socketPath },
      (line) => {
        let record: Record<string, unknown>;
        try {
          record = JSON.parse(line) as Record<string, unknown>;
        } catch {
          return;
        }
        if (record.msg === 'identity issued' && typeof record.serial === 'string') {
          const expires = typeof record.notAfter === 'string' ? new Date(record.notAfter) : undefined;
          print(`${stamp()}  sds-server issued ${String(record.secret)} serial ${shortSerial(normalizeSerial(record.serial))}${expires ? `, expires ${clock(expires)}` : ''}`);
        } else if (record.level === 'warn' || record.level === 'error') {
          print(`${stamp()}  sds-server ${String(record.level)}: ${String(record.msg)}${record.error ? ` (${String(record.error)})` : ''}`);
        }
      },
    );
    children.push(server);

    print(`sds-server demo: front -> back over mTLS, identities from the embedded CA (lifetime ${o.lifetime}, renewed at half)`);
    print(`  socket       ${socketPath}`);
    print(`  sds-server   http://127.0.0.1:${serverAdmin}/status`);
    for (const s of SERVICES) print(`  ${s.padEnd(5)} Envoy  http://127.0.0.1:${ports[s].admin}/certs  (${spiffeId(s)}, accepts ${spiffeId(PEER[s])})`);

    await waitFor('sds-server /ready', async () => (await httpRequest({ port: serverAdmin, path: '/ready', timeoutMs: 1000 })).status === 200, [server], 30_000);

    // Both sidecars, from the same generator as examples/demo/*-envoy.yaml.
    const started = await Promise.allSettled(
      SERVICES.map(async (s) => {
        const file = await writeBootstrap(dir, `${s}-envoy`, sidecarBootstrap(localSidecar(s, socketPath, ports)));
        envoys[s] = await EnvoyProcess.start({ bin: o.envoyBin, name: `${s} Envoy`, bootstrapFile: file, adminPort: ports[s].admin, readyTimeoutMs: 20_000, logLevel: 'warn' });
      }),
    );
    const failed = started.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failed) throw failed.reason;

    const appScript = path.join(REPO_ROOT, 'scripts', 'demo', 'app.mjs');
    const back = start('back app', [appScript], { APP_NAME: 'back', PORT: String(ports.back.app), CALL_URL: '', REPORT: '0' });
    children.push(back);
    await waitFor('the back app', async () => (await httpRequest({ port: ports.back.app, path: '/', timeoutMs: 1000 })).status === 200, [back], 10_000);
    const front = start('front app', [appScript], {
      APP_NAME: 'front',
      PORT: String(ports.front.app),
      CALL_URL: `http://127.0.0.1:${ports.front.egress}/`,
      CALL_RATE: String(rate),
      WAIT_FOR: SERVICES.map((s) => `http://127.0.0.1:${ports[s].admin}/ready`).join(','),
      REPORT: '0',
    });
    children.push(front);
    await waitFor('the front app to start calling', async () => (await getJson<Traffic>(ports.front.app, '/traffic')).started, [front], 10_000);

    const trafficStart = Date.now();
    print(`${stamp()}  traffic: front app -> front Envoy -> mTLS -> back Envoy -> back app, ${rate} requests/s (Ctrl-C stops)`);

    const summary: DemoSummary = {
      seconds: 0,
      requests: { ok: 0, failed: 0, errors: {} },
      rotations: { front: 0, back: 0 },
      okAfterFirstRotation: 0,
      handshakes: 0,
      connectionErrors: 0,
      socketPath,
      cleanedUp: false,
      stoppedBy: 'duration',
    };
    const held: Partial<Record<Service, string>> = {};
    let okAtFirstRotation: number | undefined;
    let lastOk = 0;
    let lastHandshakes = 0;
    const deadline = o.durationSeconds !== undefined ? trafficStart + o.durationSeconds * 1000 : Infinity;

    for (;;) {
      // Ticks on whole seconds of the demo clock, so the stamps count up one by one.
      const next = t0 + (Math.floor((Date.now() - t0) / 1000) + 1) * 1000;
      while (Date.now() < Math.min(next, deadline) && !aborted()) await sleep(Math.min(50, Math.max(1, Math.min(next, deadline) - Date.now())));
      if (aborted()) {
        summary.stoppedBy = 'signal';
        break;
      }
      const dead = children.find((c) => !c.running) ?? SERVICES.map((s) => envoys[s]).find((e) => e && !e.isRunning);
      if (dead) {
        await sleep(300); // a Ctrl-C reaches the children too; let our own signal handler run first
        if (aborted()) {
          summary.stoppedBy = 'signal';
          break;
        }
        const report = dead instanceof Child ? dead.report() : dead.output().slice(-4000);
        throw new Error(`${dead.name} exited unexpectedly\n${report}`);
      }
      try {
        const traffic = await getJson<Traffic>(ports.front.app, '/traffic');
        const [backStats, frontStats] = await Promise.all([envoys.back!.stats('ssl\\.'), envoys.front!.stats('ssl\\.')]);
        const certs = await Promise.all(SERVICES.map(async (s) => [s, await heldCertificate(envoys[s]!)] as const));
        if (aborted()) continue;
        const handshakes = backStats.get(STATS.inboundHandshake) ?? 0;
        const connectionErrors = (backStats.get(STATS.inboundConnectionError) ?? 0) + (frontStats.get(STATS.egressConnectionError('front')) ?? 0);
        summary.requests = { ok: traffic.ok, failed: traffic.failed, errors: traffic.errors };
        summary.handshakes = handshakes;
        summary.connectionErrors = connectionErrors;
        summary.seconds = Math.round((Date.now() - trafficStart) / 1000);

        for (const [s, h] of certs) {
          if (!h.serial || h.mixed) continue;
          const before = held[s];
          held[s] = h.serial;
          if (before !== undefined && before !== h.serial) {
            summary.rotations[s]++;
            okAtFirstRotation ??= traffic.ok;
            print(
              `${stamp()}  ROTATION ${s} Envoy now holds serial ${shortSerial(h.serial)} (was ${shortSerial(before)})` +
                `${h.expires ? `, expires ${clock(h.expires)}` : ''}; requests ok ${traffic.ok}, failed ${traffic.failed}`,
            );
          }
        }
        const certText = certs
          .map(([s, h]) => {
            if (!h.serial) return `${s} (no certificate yet)`;
            const left = h.expires ? Math.round((h.expires.getTime() - Date.now()) / 1000) : undefined;
            return `${s} ${shortSerial(h.serial)}${h.mixed ? '+' : ''} exp ${h.expires ? `${clock(h.expires)} (${left! <= 0 ? 'EXPIRED' : `${left}s`})` : '?'}`;
          })
          .join(', ');
        print(
          `${stamp()}  requests ok ${traffic.ok} (+${traffic.ok - lastOk}) failed ${traffic.failed}` +
            ` | back Envoy ssl.handshake ${handshakes} (+${handshakes - lastHandshakes}) ssl.connection_error ${connectionErrors}` +
            ` | certs ${certText}` +
            (traffic.failed > 0 && traffic.lastError ? ` | last error: ${traffic.lastError}` : ''),
        );
        lastOk = traffic.ok;
        lastHandshakes = handshakes;
      } catch (err) {
        if (aborted()) continue;
        print(`${stamp()}  (could not read the mesh state: ${(err as Error).message})`);
      }
      if (Date.now() >= deadline) break;
    }

    // Final counts, unless a Ctrl-C already took the front app down (then the last tick's stand).
    try {
      const traffic = await getJson<Traffic>(ports.front.app, '/traffic');
      summary.requests = { ok: traffic.ok, failed: traffic.failed, errors: traffic.errors };
    } catch {
      // keep the last tick's numbers
    }
    summary.okAfterFirstRotation = okAtFirstRotation === undefined ? 0 : summary.requests.ok - okAtFirstRotation;
    summary.seconds = Math.round((Date.now() - trafficStart) / 1000);
    summary.cleanedUp = await stopAll();
    print(
      `stopped (${summary.stoppedBy}) after ${summary.seconds}s of traffic: requests ok ${summary.requests.ok}, failed ${summary.requests.failed}; ` +
        `rotations front ${summary.rotations.front}, back ${summary.rotations.back}; back Envoy ssl.handshake ${summary.handshakes}, ` +
        `ssl.connection_error ${summary.connectionErrors}; ${summary.cleanedUp ? `removed ${dir}` : `could not remove ${dir}`}`,
    );
    return summary;
  } catch (err) {
    const reports = children.map((c) => c.report()).join('\n');
    if (!stopping) await stopAll().catch(() => false);
    if (aborted()) throw err;
    throw new Error(`${(err as Error).message}\n${reports}`);
  }
}
