import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { CallerAttestation } from '../../src/attestation/caller-attestation.js';
import { UnixWorkloadAttestor } from '../../src/attestation/unix-attestor.js';
import type { Caller } from '../../src/attestation/types.js';
import { ErrorCode, SdsError } from '../../src/core/errors.js';
import { SecretStore } from '../../src/secrets/store.js';
import { SdsServer } from '../../src/server/sds-server.js';
import type { TransportLimits } from '../../src/server/connection-guard.js';
import { captureLogs, waitFor } from '../helpers/files.js';
import { SdsTestClient } from '../helpers/sds-client.js';
import { makeSharedDir, NOBODY, startPeer, type PeerProcess } from '../helpers/peer-process.js';

const asRoot = process.getuid?.() === 0;

/**
 * The spoof of the security review: a user namespace with a mount namespace of its own, where the
 * caller bind-mounts node over /usr/sbin/nologin and runs it from there (readlink /proc/<pid>/exe
 * then says /usr/sbin/nologin). Run as nobody when we are root.
 */
const asUser = asRoot ? ['runuser', '-u', 'nobody', '--'] : [];
const SPOOF_WRAP = [...asUser, 'unshare', '-Urm', 'sh', '-c', 'mount --bind "$0" /usr/sbin/nologin && exec /usr/sbin/nologin "$@"'];
const probe = [...asUser, 'unshare', '-Urm', 'true'];
const userns = spawnSync(probe[0]!, probe.slice(1), { encoding: 'utf8' });
const usernsWorks = userns.status === 0;
const runUserns = usernsWorks || process.env.CI === 'true';
if (!runUserns) console.warn(`skipping the unshare -Urm test: unprivileged user namespaces do not work here (${userns.error?.message ?? userns.stderr.trim()})`);

const PREFACE = Buffer.concat([Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1'), Buffer.from([0, 0, 0, 4, 0, 0, 0, 0, 0])]);

/** A connection that has sent the HTTP/2 preface and received the server's first bytes (its SETTINGS). */
function h2Connection(socketPath: string): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const conn = net.connect(socketPath);
    conn.once('connect', () => conn.write(PREFACE));
    conn.once('data', () => resolve(conn));
    conn.once('error', reject);
    conn.once('close', () => reject(new Error('closed before the server answered')));
  });
}

/** One SDS v3 FetchSecrets call (empty request) over raw HTTP/2 on the socket argv[2]; prints what came back. */
const GRPC_CALL_MJS = `import http2 from 'node:http2';
import net from 'node:net';
const session = http2.connect('http://localhost', { createConnection: () => net.connect(process.argv[2]) });
session.on('error', (err) => { process.stderr.write(err.message + '\\n'); process.exit(3); });
const req = session.request({ ':method': 'POST', ':path': '/envoy.service.secret.v3.SecretDiscoveryService/FetchSecrets', 'content-type': 'application/grpc', te: 'trailers' });
const result = {};
let bytes = 0;
req.on('response', (h) => { result.status = h[':status']; result.contentType = h['content-type']; if (h['grpc-status'] !== undefined) { result.grpcStatus = h['grpc-status']; result.grpcMessage = h['grpc-message']; } });
req.on('trailers', (t) => { result.grpcStatus = t['grpc-status']; result.grpcMessage = t['grpc-message']; });
req.on('data', (d) => (bytes += d.length));
req.on('end', () => { process.stdout.write(JSON.stringify({ ...result, bytes }) + '\\n'); session.close(); });
req.end(Buffer.alloc(5));
`;

describe('SdsServer with caller attestation', () => {
  let dir: string;
  let server: SdsServer | undefined;
  let peers: PeerProcess[];
  let logs: ReturnType<typeof captureLogs>;

  beforeEach(async () => {
    dir = await makeSharedDir('sds-attest-');
    peers = [];
    logs = captureLogs();
  });
  afterEach(async () => {
    for (const p of peers) await p.stop();
    await server?.stop(200);
    server = undefined;
    await fs.rm(dir, { recursive: true, force: true });
  });

  const start = async (attestation: CallerAttestation, limits?: Partial<TransportLimits>): Promise<SdsServer> => {
    server = new SdsServer({ socketPath: path.join(dir, 'sds.sock'), socketMode: 0o666, catalog: new SecretStore(), log: logs.logger, attestation, ...(limits ? { limits } : {}) });
    await server.start();
    return server;
  };

  /** The connection tag the server gave the connection of `pid`, from its "connection attested" debug line. */
  const tagOf = async (pid: number): Promise<string> => {
    let tag: string | undefined;
    await waitFor(`attestation log of pid ${pid}`, () => {
      tag = logs.records().find((r) => r.msg === 'connection attested' && r.pid === pid)?.connection as string | undefined;
      return tag !== undefined;
    });
    return tag!;
  };

  it('call.getPeer() of a real gRPC call on an injected Unix connection is its sds-conn tag, and callerOf(tag) is this process', async () => {
    const s = await start(new CallerAttestation({ attestors: [new UnixWorkloadAttestor()] }));
    const client = new SdsTestClient(s.socketPath);
    const stream = client.stream();
    stream.send({ type_url: client.typeUrl, resource_names: ['spiffe://example.org/nothing'] });
    let peer: string | undefined;
    await waitFor('stream opened', () => {
      peer = logs.records().find((r) => r.msg === 'stream opened')?.peer as string | undefined;
      return peer !== undefined;
    });
    expect(peer).toMatch(/^sds-conn:\d+$/);
    const caller = await s.callerOf(peer!);
    expect(caller).toMatchObject({ pid: process.pid, uid: process.getuid!(), gid: process.getgid!() });
    expect(caller!.selectors).toContain(`unix:uid:${process.getuid!()}`);
    expect(caller!.selectors).toContain(`unix:path:${await fs.realpath(process.execPath)}`);
    expect(await tagOf(process.pid)).toBe(peer);
    stream.cancel?.();
    client.close();
    // The entry goes with the connection.
    await waitFor('entry dropped', () => s.callerOf(peer!) === undefined);
    expect(s.attestedConnections).toBe(0);
  });

  it.skipIf(!asRoot)('real client processes under two uids (root and nobody): the server sees each one\'s pid, uid, gid and unix selectors', async () => {
    const s = await start(new CallerAttestation({ attestors: [new UnixWorkloadAttestor()] }));
    const rootPeer = await startPeer(dir, s.socketPath);
    const nobodyPeer = await startPeer(dir, s.socketPath, { uid: NOBODY, gid: NOBODY });
    peers.push(rootPeer, nobodyPeer);
    expect(nobodyPeer.info.uid).toBe(NOBODY);
    const exe = await fs.realpath(process.execPath);

    const rootCaller = (await s.callerOf(await tagOf(rootPeer.info.pid))) as Caller;
    expect(rootCaller).toMatchObject({ pid: rootPeer.info.pid, uid: 0, gid: 0 });
    expect(rootCaller.selectors).toEqual(expect.arrayContaining(['unix:uid:0', 'unix:user:root', 'unix:gid:0', 'unix:group:root', `unix:path:${exe}`]));

    const nobodyCaller = (await s.callerOf(await tagOf(nobodyPeer.info.pid))) as Caller;
    expect(nobodyCaller).toMatchObject({ pid: nobodyPeer.info.pid, uid: NOBODY, gid: NOBODY });
    expect(nobodyCaller.selectors).toEqual(expect.arrayContaining([`unix:uid:${NOBODY}`, 'unix:user:nobody', `unix:gid:${NOBODY}`, `unix:path:${exe}`]));
    expect(nobodyCaller.selectors).not.toContain('unix:uid:0');
    expect(nobodyCaller.selectors.filter((x) => x.startsWith('unix:uid:'))).toEqual([`unix:uid:${NOBODY}`]);
  });

  it.skipIf(!runUserns)('unix:path is not emitted for a real process in its own user + mount namespace (nobody, unshare -Urm, node bind-mounted over /usr/sbin/nologin); a normal process still gets it', async () => {
    const s = await start(new CallerAttestation({ attestors: [new UnixWorkloadAttestor({ log: logs.logger })] }));
    const uid = asRoot ? NOBODY : process.getuid!();
    const spoofer = await startPeer(dir, s.socketPath, undefined, SPOOF_WRAP);
    const plain = await startPeer(dir, s.socketPath, asRoot ? { uid: NOBODY, gid: NOBODY } : undefined);
    peers.push(spoofer, plain);
    // Inside its user namespace the spoofer is root; the kernel reports its real uid to the server.
    expect(spoofer.info.uid).toBe(0);
    const spoofed = (await s.callerOf(await tagOf(spoofer.info.pid))) as Caller;
    // The spoof works: the kernel resolves the link in the caller's mount namespace.
    await expect(fs.readlink(`/proc/${spoofer.info.pid}/exe`)).resolves.toBe('/usr/sbin/nologin');
    expect(spoofed).toMatchObject({ pid: spoofer.info.pid, uid });
    expect(spoofed.selectors).toContain(`unix:uid:${uid}`);
    expect(spoofed.selectors.filter((x) => x.startsWith('unix:path:'))).toEqual([]);
    expect(logs.records().find((r) => String(r.msg).startsWith('caller gets no unix:path selector') && r.pid === spoofer.info.pid)).toMatchObject({ level: 'debug', uid });

    const normal = (await s.callerOf(await tagOf(plain.info.pid))) as Caller;
    expect(normal.selectors).toContain(`unix:path:${await fs.realpath(process.execPath)}`);
  });

  it.skipIf(!asRoot)('maxConnectionsPerUid 3: a 4th connection from the same uid is closed at once and logged with uid and count; another uid (nobody) is still served', async () => {
    const s = await start(new CallerAttestation({ attestors: [new UnixWorkloadAttestor()] }), { maxConnectionsPerUid: 3 });
    const held: net.Socket[] = [];
    try {
      for (let i = 0; i < 3; i++) {
        const conn = await h2Connection(s.socketPath);
        held.push(conn);
        // The server's SETTINGS came back: the connection was admitted and handed to HTTP/2.
        expect(conn.destroyed).toBe(false);
      }
      const fourth = net.connect(s.socketPath);
      fourth.on('error', () => {});
      let gotBytes = false;
      fourth.on('data', () => (gotBytes = true));
      fourth.once('connect', () => fourth.write(PREFACE));
      await new Promise<void>((resolve) => fourth.once('close', () => resolve()));
      expect(gotBytes).toBe(false);
      expect(logs.records().find((r) => r.msg === 'refusing connection: too many open connections from one uid (limit maxConnectionsPerUid)')).toMatchObject({ level: 'warn', uid: 0, open: 3, maxConnectionsPerUid: 3 });

      // nobody, from the shared temp folder, makes a real gRPC call (raw HTTP/2, built-ins only).
      await fs.writeFile(path.join(dir, 'grpc-call.mjs'), GRPC_CALL_MJS, { mode: 0o644 });
      const answer = await new Promise<string>((resolve, reject) => {
        const child = spawn(process.execPath, [path.join(dir, 'grpc-call.mjs'), s.socketPath], { cwd: dir, uid: NOBODY, gid: NOBODY, stdio: ['ignore', 'pipe', 'inherit'] });
        let out = '';
        child.stdout.on('data', (d: Buffer) => (out += d.toString()));
        child.once('error', reject);
        child.once('exit', () => resolve(out.trim()));
      });
      // The SDS service answered it (an empty store: UNAVAILABLE, SDS_ERR_SECRET_NOT_READY).
      expect(JSON.parse(answer)).toEqual({ status: 200, contentType: 'application/grpc+proto', grpcStatus: '14', grpcMessage: 'SDS_ERR_SECRET_NOT_READY:%20no%20secret%20is%20available%20yet', bytes: 0 });

      // A freed slot is given back to the uid.
      held.pop()!.destroy();
      await waitFor('slot freed', () => s.attestedConnections === 2);
      held.push(await h2Connection(s.socketPath));
    } finally {
      for (const c of held) c.destroy();
    }
  });

  it('20 connections at once: each is logged at debug with its selectors, "caller attested" at info once, then once more accounting for the rest (1 + 1 + suppressed 18 = 20)', async () => {
    const s = await start(new CallerAttestation({ attestors: [new UnixWorkloadAttestor()] }));
    const held = await Promise.all(Array.from({ length: 20 }, () => h2Connection(s.socketPath)));
    try {
      const atLevel = (msg: string, level: string) => logs.records().filter((r) => r.msg === msg && r.level === level);
      await waitFor('20 debug lines', () => atLevel('connection attested', 'debug').length === 20);
      const detail = atLevel('connection attested', 'debug');
      expect(new Set(detail.map((r) => r.connection)).size).toBe(20);
      for (const r of detail) expect(r).toMatchObject({ pid: process.pid, uid: process.getuid!(), selectors: expect.arrayContaining([`unix:uid:${process.getuid!()}`]) });
      expect(atLevel('caller attested', 'info')).toHaveLength(1);
      // The window (10 s) ends: one more info line accounts for the rest.
      await waitFor('the suppressed count', () => atLevel('caller attested', 'info').length === 2, 15_000);
      const [first, second] = atLevel('caller attested', 'info');
      expect(first).not.toHaveProperty('suppressed');
      expect(second).toMatchObject({ pid: process.pid, suppressed: 18, suppressedWindowMs: 10_000 });
    } finally {
      for (const c of held) c.destroy();
    }
  }, 20_000);

  it('a connection whose peer credentials cannot be read is closed at once and logged (fail closed; readPeer test double)', async () => {
    const s = await start(
      new CallerAttestation({
        attestors: [],
        readPeer: () => {
          throw new SdsError(ErrorCode.PeerCredentials, 'getsockopt(SO_PEERCRED) failed on fd 99: errno 9');
        },
      }),
    );
    const conn = net.connect(s.socketPath);
    conn.on('error', () => {});
    await new Promise<void>((resolve) => conn.once('close', () => resolve()));
    const refused = logs.records().find((r) => r.msg === 'connection refused: cannot read its peer credentials');
    expect(refused).toMatchObject({ level: 'warn', code: 'SDS_ERR_PEER_CREDENTIALS' });
    expect(s.attestedConnections).toBe(0);
  });

  it('a caller that exits before its attestation finishes is refused (SDS_ERR_CALLER_GONE) and logged', async () => {
    let release: () => void = () => {};
    const paused = new Promise<void>((resolve) => (release = resolve));
    let reached: () => void = () => {};
    const atRecheck = new Promise<void>((resolve) => (reached = resolve));
    const s = await start(
      new CallerAttestation({
        attestors: [new UnixWorkloadAttestor()],
        beforeRecheck: async () => {
          reached();
          await paused;
        },
      }),
    );
    const peer = await startPeer(dir, s.socketPath);
    peers.push(peer);
    await atRecheck;
    const tag = `sds-conn:1`;
    const caller = s.callerOf(tag)!;
    expect(caller).toBeDefined();
    await peer.stop();
    release();
    await expect(caller).rejects.toMatchObject({ code: 'SDS_ERR_CALLER_GONE' });
    await waitFor('failure log', () => logs.records().some((r) => r.msg === 'caller attestation failed' && r.code === 'SDS_ERR_CALLER_GONE' && r.pid === peer.info.pid));
  });
});
