/**
 * The default socket is per user: two users of one machine each start `sds-server` with no
 * --socket and no APPMESH_SDS_SOCKET_PATH, at the same time, and both serve. (With one machine-wide
 * default, `<tmpdir>/sds-server`, the second was refused: the directory belonged to the first.)
 * Real processes: root, and nobody (uid 65534) running the server bundled into a folder it can
 * read (CI may clone into a 0700 directory). TMPDIR points both at a private sticky folder, so the
 * test never touches the machine's real default directories. Needs root (skipped otherwise).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { chmod, chown, copyFile, cp, mkdir, mkdtemp, rename, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bundleForOtherUser, type OtherUserScript } from './helpers/other-user.js';
import { SECRET_TYPE_URL, SdsTestClient, envoyNode } from './helpers/sds-client.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const asRoot = process.getuid?.() === 0;
const NOBODY = 65534;

describe.skipIf(!asRoot)('the default socket is per user: root and nobody both serve at once, no --socket given', () => {
  let dir: string;
  let bundle: OtherUserScript | undefined;
  let main: string;
  const children: ChildProcess[] = [];

  beforeAll(async () => {
    // A /tmp of our own: root-owned, sticky, open to all (what the socket checks accept above a socket).
    dir = await mkdtemp(path.join(tmpdir(), 'sds-default-socket-'));
    await chmod(dir, 0o1777);
    // The server where nobody can read it: the bundle two levels below a copy of proto/ and
    // package.json, which it finds as ../../proto and ../../package.json (as dist/cli/main.js does).
    bundle = await bundleForOtherUser(path.join(ROOT, 'src', 'cli', 'main.ts'));
    main = path.join(bundle.dir, 'dist', 'cli', 'main.mjs');
    await mkdir(path.dirname(main), { recursive: true, mode: 0o755 });
    await chmod(path.join(bundle.dir, 'dist'), 0o755);
    await rename(bundle.file, main);
    await cp(path.join(ROOT, 'proto'), path.join(bundle.dir, 'proto'), { recursive: true });
    await copyFile(path.join(ROOT, 'package.json'), path.join(bundle.dir, 'package.json'));
  }, 60_000);

  afterAll(async () => {
    await Promise.all(
      children.map(async (c) => {
        if (c.exitCode !== null || c.signalCode !== null) return;
        const gone = new Promise((resolve) => c.once('exit', resolve));
        c.kill('SIGTERM');
        await gone;
      }),
    );
    await bundle?.remove();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  /** Starts the bundled server as `uid` with the default socket; resolves with the socket it logged. */
  async function start(uid: number, main: string): Promise<string> {
    const data = path.join(dir, `data-${uid}`);
    await mkdir(data);
    await chown(data, uid, uid === 0 ? 0 : NOBODY);
    const env = { PATH: process.env.PATH ?? '/usr/bin:/bin', TMPDIR: dir, XDG_DATA_HOME: data };
    const argv = uid === 0 ? [process.execPath, main] : ['runuser', '-u', 'nobody', '--', 'env', `TMPDIR=${dir}`, `XDG_DATA_HOME=${data}`, process.execPath, main];
    const child = spawn(argv[0]!, argv.slice(1), { cwd: path.dirname(main), env, stdio: ['ignore', 'pipe', 'pipe'] });
    children.push(child);
    let out = '';
    return new Promise((resolve, reject) => {
      const onData = (d: Buffer): void => {
        out += d.toString();
        // JSON lines (pino): field order is not fixed, so parse rather than match text.
        for (const line of out.split('\n')) {
          if (!line.includes('"listening"')) continue;
          const entry = JSON.parse(line) as { msg?: string; socket?: string };
          if (entry.msg === 'listening' && entry.socket) resolve(entry.socket);
        }
      };
      child.stdout?.on('data', onData);
      child.stderr?.on('data', onData);
      child.once('exit', (code) => reject(new Error(`server as uid ${uid} exited (${code}) before listening:\n${out}`)));
    });
  }

  it('each gets <tmpdir>/sds-server-<uid>/sds.sock, owned by it, and serves its identity there', async () => {
    const [rootSocket, nobodySocket] = await Promise.all([start(0, main), start(NOBODY, main)]);
    expect(rootSocket).toBe(path.join(dir, 'sds-server-0', 'sds.sock'));
    expect(nobodySocket).toBe(path.join(dir, `sds-server-${NOBODY}`, 'sds.sock'));
    for (const [socket, uid] of [[rootSocket, 0], [nobodySocket, NOBODY]] as const) {
      const st = await stat(socket);
      expect(st.isSocket()).toBe(true);
      expect((await stat(path.dirname(socket))).uid).toBe(uid);
      // Root can connect to both: each serves its embedded CA's default identity.
      const client = new SdsTestClient(socket, 'v3');
      try {
        const res = await client.fetch({ node: envoyNode({ id: `uid-${uid}` }), resource_names: ['spiffe://example.org/sds-server'], type_url: SECRET_TYPE_URL.v3 });
        expect(res.resources).toHaveLength(1);
      } finally {
        client.close();
      }
    }
  }, 120_000);

  it("a second user given root's fixed socket path (the quickstart's, root's 0750 directory already there): SDS_ERR_SOCKET_DIR_UNSAFE naming the directory, owner and mode, exit 2", async () => {
    const shared = path.join(dir, 'sds-quickstart');
    await mkdir(shared, { mode: 0o750 });
    await chmod(shared, 0o750);
    const data = path.join(dir, 'data-denied');
    await mkdir(data);
    await chown(data, NOBODY, NOBODY);
    const child = spawn('runuser', ['-u', 'nobody', '--', 'env', `TMPDIR=${dir}`, `XDG_DATA_HOME=${data}`, process.execPath, main, '--socket', path.join(shared, 'sds.sock')], {
      cwd: path.dirname(main),
      env: { PATH: process.env.PATH ?? '/usr/bin:/bin' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    children.push(child);
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (out += d.toString()));
    const code = await new Promise<number | null>((resolve) => child.once('exit', resolve));
    expect(code, out).toBe(2);
    expect(out).toContain('SDS_ERR_SOCKET_DIR_UNSAFE');
    expect(out).not.toContain('SDS_ERR_SOCKET_SETUP');
    expect(out).toContain(`directory ${shared} (owner uid 0, group 0, mode 0750)`);
    expect(out).toContain('EACCES');
  }, 60_000);
});
