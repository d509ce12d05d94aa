/**
 * SPIRE (server + agent) as a peer for `npm run bench -- --peer spire`: builds the binaries once
 * (install-spire.sh, into the git-ignored .tools/), writes their configuration into a temp dir,
 * starts spire-server, creates a join token and the workload entry for the load generator's uid,
 * and starts spire-agent processes whose Workload API socket serves SDS v3.
 *
 * Layout in `dir`: server.conf, server-data/ (sqlite datastore), server.sock (admin API),
 * bundle.pem (the agent's bootstrap bundle), agent-<n>.conf, agent-data/ (the agent's SVID and
 * key, kept between agent processes, so only the first one attests with the join token; the later
 * ones are restarts of an attested node), agent-<n>.sock (Workload API + SDS), *.log.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream, readdirSync, readFileSync } from 'node:fs';
import fs from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { promisify } from 'node:util';
import { wallMs } from '../common.js';

const run = promisify(execFile);

export const SPIRE_VERSION = process.env.SPIRE_VERSION ?? '1.13.3';
export const SPIRE_TRUST_DOMAIN = 'example.org';
/** The agent's alias (join token -> this ID), parent of the workload entry. */
const NODE_ID = `spiffe://${SPIRE_TRUST_DOMAIN}/bench-node`;
const ENTRY_ID = 'bench-workload';

/**
 * Runs scripts/bench/spire/install-spire.sh (builds on first use, reuses afterwards; it prints
 * what it does) and returns the folder holding spire-server and spire-agent.
 * Throws with the script's message when Go is missing or the build fails.
 */
export async function installSpire(root: string): Promise<string> {
  const script = path.join(root, 'scripts/bench/spire/install-spire.sh');
  const child = spawn('bash', [script], { cwd: root, stdio: ['ignore', 'inherit', 'inherit'], env: { ...process.env, SPIRE_VERSION } });
  const code = await new Promise<number | null>((resolve) => child.on('exit', resolve));
  if (code !== 0) throw new Error(`install-spire.sh failed (exit ${code}); see its message above`);
  return path.join(root, '.tools', `spire-${SPIRE_VERSION}`, 'bin');
}

/** Process figures read from /proc, the same way for every peer (no in-process sampling). */
export interface ProcFigures {
  /** Resident set size (bytes), VmRSS. */
  rss: number;
  /** CPU time of all threads (ns), from /proc/<pid>/task/<tid>/schedstat. */
  cpuNs: number;
}

/** Reads RSS and CPU time of `pid` from /proc (Linux only). */
export function procFigures(pid: number): ProcFigures {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const rssKb = Number(/VmRSS:\s+(\d+) kB/.exec(status)?.[1] ?? NaN);
  let cpuNs = 0;
  // schedstat has ns resolution (utime/stime in /proc/<pid>/stat count 10 ms ticks); summing the
  // live threads misses threads that exited, which neither Go nor Node's thread pool does when idle.
  for (const tid of readdirSync(`/proc/${pid}/task`)) {
    try {
      cpuNs += Number(readFileSync(`/proc/${pid}/task/${tid}/schedstat`, 'utf8').split(' ')[0]);
    } catch {
      // The thread ended between readdir and read.
    }
  }
  return { rss: rssKb * 1024, cpuNs };
}

/** A spawned peer process with its log file; `stop()` sends SIGTERM, then SIGKILL after 10 s. */
export class PeerProcess {
  readonly exited: Promise<number | null>;
  private lines: string[] = [];
  private lineWaiters = new Set<() => void>();

  constructor(
    readonly label: string,
    readonly proc: ChildProcess,
    readonly logFile: string,
  ) {
    const log = createWriteStream(logFile);
    const onChunk = (chunk: Buffer): void => {
      log.write(chunk);
      for (const line of chunk.toString('utf8').split('\n')) if (line) this.lines.push(line);
      if (this.lines.length > 200) this.lines.splice(0, this.lines.length - 200);
      for (const w of this.lineWaiters) w();
    };
    proc.stdout?.on('data', onChunk);
    proc.stderr?.on('data', onChunk);
    this.exited = new Promise((resolve) =>
      proc.on('exit', (code) => {
        log.end();
        for (const w of this.lineWaiters) w();
        resolve(code);
      }),
    );
  }

  get pid(): number {
    return this.proc.pid!;
  }

  /** The last lines it printed (for error messages). */
  tail(n = 15): string {
    return this.lines.slice(-n).join('\n');
  }

  /** Resolves when a printed line contains `text`; rejects when the process exits first or after `timeoutMs`. */
  waitForLine(text: string, timeoutMs: number): Promise<void> {
    return new Promise((resolve, reject) => {
      const check = (): void => {
        if (this.lines.some((l) => l.includes(text))) done();
        else if (this.proc.exitCode !== null || this.proc.signalCode !== null) done(new Error(`${this.label} exited before printing "${text}":\n${this.tail()}`));
      };
      const timer = setTimeout(() => done(new Error(`${this.label} did not print "${text}" within ${timeoutMs} ms:\n${this.tail()}`)), timeoutMs);
      const done = (err?: Error): void => {
        clearTimeout(timer);
        this.lineWaiters.delete(check);
        if (err) reject(err);
        else resolve();
      };
      this.lineWaiters.add(check);
      check();
    });
  }

  async stop(): Promise<void> {
    if (this.proc.exitCode !== null || this.proc.signalCode !== null) return;
    this.proc.kill('SIGTERM');
    const timer = setTimeout(() => this.proc.kill('SIGKILL'), 10_000);
    await this.exited;
    clearTimeout(timer);
  }
}

/** Spawns `cmd` with stdout/stderr into `logFile`; `spawnedAt` is the wall-clock ms just before spawn(). */
export function spawnPeer(label: string, cmd: string, args: string[], logFile: string, cwd: string): { peer: PeerProcess; spawnedAt: number } {
  const spawnedAt = wallMs();
  const proc = spawn(cmd, args, { cwd, stdio: ['ignore', 'pipe', 'pipe'] });
  return { peer: new PeerProcess(label, proc, logFile), spawnedAt };
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const port = (srv.address() as net.AddressInfo).port;
      srv.close(() => resolve(port));
    });
  });
}

/** spire-server with a sqlite datastore, in-memory key manager and the join_token node attestor. */
export class SpireServer {
  private agentSerial = 0;
  private dnsSerial = 0;

  private constructor(
    readonly bin: string,
    readonly dir: string,
    readonly port: number,
    readonly socket: string,
    readonly process: PeerProcess,
    /** The SPIFFE ID the load generator's uid is registered for. */
    readonly workloadId: string,
    readonly workloadUid: number,
    private joinToken: string,
  ) {}

  /**
   * Starts spire-server in `dir` (created), waits for "Starting Server APIs" in its log, writes
   * bundle.pem, generates a join token for the agent and registers `unix:uid:<workloadUid>` as
   * `workloadId` under the agent.
   */
  static async start(bin: string, dir: string, workloadId: string, workloadUid: number): Promise<SpireServer> {
    await fs.mkdir(path.join(dir, 'server-data'), { recursive: true });
    const port = await freePort();
    const socket = path.join(dir, 'server.sock');
    const conf = path.join(dir, 'server.conf');
    await fs.writeFile(
      conf,
      `server {
  bind_address = "127.0.0.1"
  bind_port = "${port}"
  socket_path = "${socket}"
  trust_domain = "${SPIRE_TRUST_DOMAIN}"
  data_dir = "${path.join(dir, 'server-data')}"
  log_level = "INFO"
  ca_ttl = "24h"
  default_x509_svid_ttl = "1h"
}
plugins {
  DataStore "sql" {
    plugin_data {
      database_type = "sqlite3"
      connection_string = "${path.join(dir, 'server-data', 'datastore.sqlite3')}"
    }
  }
  KeyManager "memory" {
    plugin_data {}
  }
  NodeAttestor "join_token" {
    plugin_data {}
  }
}
`,
    );
    const { peer } = spawnPeer('spire-server', path.join(bin, 'spire-server'), ['run', '-config', conf], path.join(dir, 'server.log'), dir);
    try {
      await peer.waitForLine('Starting Server APIs', 60_000);
      const cli = async (...args: string[]): Promise<string> => (await run(path.join(bin, 'spire-server'), [...args, '-socketPath', socket])).stdout;
      // The API socket is bound right after that line: retry the first call until it answers.
      let bundle = '';
      for (let i = 0; ; i++) {
        try {
          bundle = await cli('bundle', 'show');
          break;
        } catch (err) {
          if (i >= 100) throw err;
          await new Promise((r) => setTimeout(r, 50));
        }
      }
      await fs.writeFile(path.join(dir, 'bundle.pem'), bundle);
      const tokenOut = await cli('token', 'generate', '-spiffeID', NODE_ID, '-ttl', '3600');
      const token = /Token:\s*(\S+)/.exec(tokenOut)?.[1];
      if (!token) throw new Error(`spire-server token generate printed no token: ${tokenOut}`);
      await cli('entry', 'create', '-entryID', ENTRY_ID, '-parentID', NODE_ID, '-spiffeID', workloadId, '-selector', `unix:uid:${workloadUid}`);
      return new SpireServer(bin, dir, port, socket, peer, workloadId, workloadUid, token);
    } catch (err) {
      await peer.stop();
      throw err;
    }
  }

  /**
   * Forces a new X.509-SVID for the workload: updates its entry with a different DNS name. The
   * agent sees the new entry revision at its next sync with the server (every 5 s by default),
   * marks the SVID stale, has it signed, and pushes it to every SDS stream asking for it.
   * Resolves when spire-server has stored the update; returns that wall-clock moment.
   */
  async rotateWorkloadSvid(): Promise<number> {
    this.dnsSerial += 1;
    await run(path.join(this.bin, 'spire-server'), [
      'entry', 'update', '-socketPath', this.socket, '-entryID', ENTRY_ID, '-parentID', NODE_ID,
      '-spiffeID', this.workloadId, '-selector', `unix:uid:${this.workloadUid}`, '-dns', `rotation-${this.dnsSerial}.bench.${SPIRE_TRUST_DOMAIN}`,
    ]);
    return wallMs();
  }

  /**
   * Writes a fresh agent config (its own Workload API socket) and spawns spire-agent. The first
   * agent attests with the join token; later ones reload the node SVID from agent-data/.
   */
  async spawnAgent(): Promise<{ agent: PeerProcess; socket: string; spawnedAt: number }> {
    this.agentSerial += 1;
    const n = this.agentSerial;
    const dataDir = path.join(this.dir, 'agent-data');
    await fs.mkdir(dataDir, { recursive: true });
    const socket = path.join(this.dir, `agent-${n}.sock`);
    const conf = path.join(this.dir, `agent-${n}.conf`);
    await fs.writeFile(
      conf,
      `agent {
  data_dir = "${dataDir}"
  log_level = "WARN"
  server_address = "127.0.0.1"
  server_port = "${this.port}"
  socket_path = "${socket}"
  trust_bundle_path = "${path.join(this.dir, 'bundle.pem')}"
  trust_domain = "${SPIRE_TRUST_DOMAIN}"
  join_token = "${this.joinToken}"
}
plugins {
  NodeAttestor "join_token" {
    plugin_data {}
  }
  KeyManager "disk" {
    plugin_data {
      directory = "${dataDir}"
    }
  }
  WorkloadAttestor "unix" {
    plugin_data {}
  }
}
`,
    );
    const { peer, spawnedAt } = spawnPeer(`spire-agent #${n}`, path.join(this.bin, 'spire-agent'), ['run', '-config', conf], path.join(this.dir, `agent-${n}.log`), this.dir);
    return { agent: peer, socket, spawnedAt };
  }

  async stop(): Promise<void> {
    await this.process.stop();
  }
}
