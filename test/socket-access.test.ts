import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { SecretStore } from '../src/secrets/store.js';
import { SdsServer, type SdsServerOptions } from '../src/server/sds-server.js';
import { createLogger, silentLogger } from '../src/core/logger.js';
import { ErrorCode } from '../src/core/errors.js';
import { MAX_SOCKET_PATH_BYTES } from '../src/server/unix-socket.js';

const NOBODY = 65534;
const NOGROUP = 65534;
const PROBE_SOURCE = fileURLToPath(new URL('./helpers/connect-probe.mjs', import.meta.url));
const repoRoot = fileURLToPath(new URL('..', import.meta.url));
const asRoot = process.getuid?.() === 0;

interface ProbeResult {
  connected: boolean;
  responded: boolean;
  code?: string;
}

/**
 * The second local user: `nobody` runs test/helpers/connect-probe.mjs from a copy in a 0755 temp
 * folder (it may not be able to read the checkout).
 */
class OtherUser {
  private constructor(readonly dir: string) {}

  static async create(): Promise<OtherUser> {
    const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'sds-probe-'));
    await fs.chmod(dir, 0o755);
    await fs.copyFile(PROBE_SOURCE, path.join(dir, 'connect-probe.mjs'));
    await fs.chmod(path.join(dir, 'connect-probe.mjs'), 0o644);
    return new OtherUser(dir);
  }

  private spawn(mode: 'once' | 'loop', socketPath: string, gid = NOGROUP): ChildProcessWithoutNullStreams {
    return spawn(process.execPath, [path.join(this.dir, 'connect-probe.mjs'), mode, socketPath], { cwd: this.dir, uid: NOBODY, gid, stdio: 'pipe' });
  }

  async once(socketPath: string, gid = NOGROUP): Promise<ProbeResult> {
    const child = this.spawn('once', socketPath, gid);
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    const code = await new Promise<number | null>((resolve) => child.once('exit', resolve));
    if (code !== 0) throw new Error(`probe exited with ${code}: ${err}`);
    return JSON.parse(out) as ProbeResult;
  }

  /** Connects back to back until `stop()`; `connects` holds the time of every successful connect. */
  loop(socketPath: string): { connects: number[]; attempts(): number; firstConnect: Promise<void>; stop(): Promise<{ attempts: number; connected: number; errors: Record<string, number> }> } {
    const child = this.spawn('loop', socketPath);
    const connects: number[] = [];
    let attempts = 0;
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    let summary: { attempts: number; connected: number; errors: Record<string, number> } | undefined;
    let onFirst: () => void = () => {};
    const firstConnect = new Promise<void>((resolve) => (onFirst = resolve));
    createInterface({ input: child.stdout }).on('line', (line) => {
      const msg = JSON.parse(line) as { event: string; at?: number; attempts: number; connected: number; errors: Record<string, number> };
      if (msg.event === 'tick') attempts = msg.attempts;
      else if (msg.event === 'connected') {
        connects.push(msg.at ?? 0);
        onFirst();
      } else summary = msg;
    });
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    return {
      connects,
      attempts: () => attempts,
      firstConnect,
      stop: async () => {
        child.stdin.end();
        await exited;
        if (!summary) throw new Error(`probe gave no summary: ${stderr}`);
        return summary;
      },
    };
  }

  async remove(): Promise<void> {
    await fs.rm(this.dir, { recursive: true, force: true });
  }
}

async function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([p, new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`${what}: no answer within ${ms} ms`)), ms)))]);
  } finally {
    clearTimeout(timer);
  }
}

describe.skipIf(!asRoot)('who can reach the socket (real uids: root serves, nobody probes)', () => {
  let dir: string;
  let other: OtherUser;
  const servers: SdsServer[] = [];

  beforeEach(async () => {
    dir = await fs.mkdtemp(path.join(os.tmpdir(), 'sds-access-'));
    // A directory other users may traverse, as /run or /var/run are.
    await fs.chmod(dir, 0o755);
    other = await OtherUser.create();
  });
  afterEach(async () => {
    for (const s of servers.splice(0)) await s.stop(200);
    await fs.rm(dir, { recursive: true, force: true });
    await other.remove();
  });

  const server = (socketPath: string, extra: Partial<SdsServerOptions> = {}): SdsServer => {
    const s = new SdsServer({ socketPath, catalog: new SecretStore(), log: silentLogger, ...extra });
    servers.push(s);
    return s;
  };

  it('with umask 000, another user never connects while the server starts, and does once the mode lets it', async () => {
    const socketPath = path.join(dir, 'sds.sock');
    const probe = other.loop(socketPath);
    const previous = process.umask(0o000);
    let starts = 0;
    try {
      // Start and stop until the probe, connecting back to back, has made 1,000 attempts
      // (it starts up in parallel; its first attempts land before the first bind).
      while (probe.attempts() < 1000 && starts < 500) {
        const s = server(socketPath);
        await s.start();
        starts++;
        await s.stop(200);
        servers.pop();
      }
      expect(probe.connects).toEqual([]);
      expect(probe.attempts()).toBeGreaterThanOrEqual(1000);
      // Control: the probe does connect when the mode lets every user in (so it was really trying).
      await server(socketPath, { socketMode: 0o666 }).start();
      await within(probe.firstConnect, 10_000, 'the probe connecting to a 0666 socket');
    } finally {
      process.umask(previous);
      const summary = await probe.stop();
      // Refused while starting: no socket yet (ENOENT), a stale/closed one (ECONNREFUSED), or the
      // final mode (EACCES); never a connect.
      expect(Object.keys(summary.errors).every((code) => ['ENOENT', 'ECONNREFUSED', 'EACCES'].includes(code))).toBe(true);
      console.log(`umask 000 race: ${starts} starts, ${summary.attempts} attempts by nobody, refusals ${JSON.stringify(summary.errors)}, connects before the control: 0`);
    }
  }, 60_000);

  it('--socket-group: the socket directory we create belongs to that group and lets it through; others stay out', async () => {
    const withGroup = path.join(dir, 'grouped', 'sds.sock');
    await server(withGroup, { socketGroup: NOGROUP }).start();
    const st = await fs.stat(path.dirname(withGroup));
    expect({ mode: st.mode & 0o7777, gid: st.gid }).toEqual({ mode: 0o750, gid: NOGROUP });
    expect((await fs.stat(withGroup)).gid).toBe(NOGROUP);
    expect(await other.once(withGroup)).toMatchObject({ connected: true, responded: true });

    const noGroup = path.join(dir, 'private', 'sds.sock');
    await server(noGroup).start();
    expect(await other.once(noGroup)).toMatchObject({ connected: false, code: 'EACCES' });

    // An existing directory is left alone; when it keeps the group out, the start says so.
    const lines: Array<Record<string, unknown>> = [];
    const log = createLogger({ write: (l) => lines.push(JSON.parse(l) as Record<string, unknown>) });
    const existing = path.join(dir, 'private', 'again.sock');
    await server(existing, { socketGroup: NOGROUP, log }).start();
    expect(lines.find((l) => l.level === 'warn')).toMatchObject({ msg: 'the socket group cannot reach the socket', problem: expect.stringContaining(`group ${NOGROUP}`) });
    expect(await other.once(existing)).toMatchObject({ connected: false, code: 'EACCES' });
  });

  it('refuses a socket directory pre-created by another user, naming owner and mode', async () => {
    const theirs = path.join(dir, 'sds-server');
    await fs.mkdir(theirs, { mode: 0o755 });
    await fs.chown(theirs, NOBODY, NOGROUP);
    const s = server(path.join(theirs, 'sds.sock'));
    const err = await within(s.start().then(() => undefined, (e: unknown) => e), 5000, 'start');
    servers.pop();
    expect(err).toMatchObject({ code: ErrorCode.SocketDirUnsafe });
    expect((err as Error).message).toContain(theirs);
    expect((err as Error).message).toContain(`owned by uid ${NOBODY}`);
    expect((err as Error).message).toContain('mode 0755');
    await expect(fs.readdir(theirs)).resolves.toEqual([]);

    // A symlink another user owns, even to a directory of ours: its owner could re-point it later.
    const ours = path.join(dir, 'ours');
    await fs.mkdir(ours, { mode: 0o755 });
    const link = path.join(dir, 'link');
    await fs.symlink(ours, link);
    await fs.lchown(link, NOBODY, NOGROUP);
    const viaLink = await server(path.join(link, 'sds.sock')).start().then(() => undefined, (e: unknown) => e);
    servers.pop();
    expect(viaLink).toMatchObject({ code: ErrorCode.SocketDirUnsafe, message: expect.stringContaining(`${link} is a symbolic link owned by uid ${NOBODY}`) });
    await expect(fs.readdir(ours)).resolves.toEqual([]);
  });

  it('refuses a socket directory every user can write, unless it is root-owned and sticky like /tmp', async () => {
    const open = path.join(dir, 'open');
    await fs.mkdir(open);
    await fs.chmod(open, 0o777);
    const err = await server(path.join(open, 'sds.sock')).start().then(() => undefined, (e: unknown) => e);
    servers.pop();
    expect(err).toMatchObject({ code: ErrorCode.SocketDirUnsafe, message: expect.stringContaining('writable by every user') });
    expect((err as Error).message).toContain('mode 0777');

    // Shared on purpose (a Kubernetes emptyDir): accepted with a warning when allowed.
    const lines: Array<Record<string, unknown>> = [];
    const log = createLogger({ write: (l) => lines.push(JSON.parse(l) as Record<string, unknown>) });
    await server(path.join(open, 'sds.sock'), { allowSharedSocketDirectory: true, log }).start();
    expect(lines.find((l) => l.level === 'warn')).toMatchObject({ problem: expect.stringContaining('writable by every user') });

    const sticky = path.join(dir, 'sticky');
    await fs.mkdir(sticky);
    await fs.chmod(sticky, 0o1777);
    const p = path.join(sticky, 'sds.sock');
    await server(p).start();
    expect((await fs.lstat(p)).isSocket()).toBe(true);
  });
});

describe('socket set-up', () => {
  let dir: string;
  const servers: SdsServer[] = [];

  beforeEach(async () => {
    dir = await fs.mkdtemp(path.join(os.tmpdir(), 'sds-setup-'));
  });
  afterEach(async () => {
    for (const s of servers.splice(0)) await s.stop(200);
    await fs.rm(dir, { recursive: true, force: true });
  });

  it('sets mode and group before the socket is at its path: a symlink put there after bind is replaced, its target untouched', async () => {
    const socketPath = path.join(dir, 'sds.sock');
    const secret = path.join(dir, 'root-only');
    await fs.writeFile(secret, 'not for the socket group');
    await fs.chmod(secret, 0o600);
    const s = new SdsServer({
      socketPath,
      catalog: new SecretStore(),
      log: silentLogger,
      socketMode: 0o666,
      // Test double for an attacker racing the start-up: swaps a symlink in right after bind.
      afterBind: async () => {
        await fs.symlink(secret, socketPath);
      },
    });
    servers.push(s);
    await s.start();
    expect((await fs.lstat(socketPath)).isSocket()).toBe(true);
    expect((await fs.stat(socketPath)).mode & 0o777).toBe(0o666);
    expect((await fs.stat(secret)).mode & 0o777).toBe(0o600);
    // Nothing of the private bind directory is left behind.
    expect((await fs.readdir(dir)).sort()).toEqual(['root-only', 'sds.sock']);
  });

  it('warns at start when the socket mode lets every local user connect', async () => {
    const lines: Array<Record<string, unknown>> = [];
    const log = createLogger({ write: (l) => lines.push(JSON.parse(l) as Record<string, unknown>) });
    for (const mode of [0o666, 0o777, 0o660]) {
      const s = new SdsServer({ socketPath: path.join(dir, `m${mode.toString(8)}.sock`), catalog: new SecretStore(), log, socketMode: mode });
      servers.push(s);
      await s.start();
    }
    const warnings = lines.filter((l) => l.level === 'warn');
    expect(warnings.map((w) => w.mode)).toEqual(['666', '777']);
    expect(String(warnings[0]?.msg)).toContain('every local user');
  });

  it('a path over the platform limit fails at start with a clear error, without touching the filesystem', async () => {
    const long = path.join(dir, 'd'.repeat(60), 'e'.repeat(60), 'sds.sock');
    expect(Buffer.byteLength(long)).toBeGreaterThan(MAX_SOCKET_PATH_BYTES);
    const s = new SdsServer({ socketPath: long, catalog: new SecretStore(), log: silentLogger });
    const err = await within(s.start().then(() => undefined, (e: unknown) => e), 5000, 'start with a long path');
    expect(err).toMatchObject({ code: ErrorCode.SocketPathTooLong, message: expect.stringContaining(`${Buffer.byteLength(long)} bytes`) });
    await expect(fs.readdir(dir)).resolves.toEqual([]);
  });

  it('a path on /proc or /sys fails at start with a clear error and never hangs', async () => {
    for (const p of ['/proc/sds/sds.sock', '/proc/self/sds.sock', '/sys/sds-server/sds.sock']) {
      const s = new SdsServer({ socketPath: p, catalog: new SecretStore(), log: silentLogger });
      const err = await within(s.start().then(() => undefined, (e: unknown) => e), 5000, `start on ${p}`);
      expect(err).toMatchObject({ code: ErrorCode.SocketPathUnsupported, message: expect.stringContaining(p) });
    }
  });

  it('the program exits with code 2 and names the problem for a /proc socket path', async () => {
    const child = spawn(process.execPath, ['--import', 'tsx', 'src/cli/main.ts', '--socket', '/proc/sds/sds.sock', '--data-dir', path.join(dir, 'data')], { cwd: repoRoot, stdio: 'pipe' });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (out += d.toString()));
    const code = await within(new Promise<number | null>((resolve) => child.once('exit', resolve)), 20_000, 'sds-server exit');
    expect(code).toBe(2);
    expect(out).toContain(ErrorCode.SocketPathUnsupported);
    expect(out).toContain('proc');
  }, 30_000);

  it.each(['/proc/foo', '/sys/sds-server/ca'])('the program exits with code 2 and SDS_ERR_CA_DATA_DIR for an embedded CA --data-dir on a pseudo filesystem (%s), never hangs', async (dataDir) => {
    const child = spawn(process.execPath, ['--import', 'tsx', 'src/cli/main.ts', '--socket', path.join(dir, 'sds.sock'), '--data-dir', dataDir], { cwd: repoRoot, stdio: 'pipe' });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (out += d.toString()));
    try {
      const code = await within(new Promise<number | null>((resolve) => child.once('exit', resolve)), 20_000, 'sds-server exit');
      expect(code, out).toBe(2);
      expect(out).toContain(ErrorCode.CaDataDir);
      expect(out).toContain(`${dataDir}: it is on the ${dataDir.startsWith('/proc') ? 'proc' : 'sysfs'} pseudo filesystem`);
    } finally {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    }
  }, 30_000);
});
