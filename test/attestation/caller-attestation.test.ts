import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs/promises';
import { writeFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { CallerAttestation } from '../../src/attestation/caller-attestation.js';
import { createCallerAttestation } from '../../src/attestation/create.js';
import { UnixWorkloadAttestor } from '../../src/attestation/unix-attestor.js';
import type { PeerCredentials, WorkloadAttestor } from '../../src/attestation/types.js';
import { readStartTimeSync } from '../../src/attestation/proc.js';
import { ErrorCode, SdsError } from '../../src/core/errors.js';
import { SecretStore } from '../../src/secrets/store.js';
import { SdsServer } from '../../src/server/sds-server.js';
import { silentLogger } from '../../src/core/logger.js';
import { makeSharedDir, startPeer, type PeerProcess } from '../helpers/peer-process.js';

const NS_LAST_PID = '/proc/sys/kernel/ns_last_pid';
const asRoot = process.getuid?.() === 0;

/** An attestor test double that answers what it is told. */
const fixedAttestor = (name: string, answer: string[] | Error): WorkloadAttestor => ({
  name,
  attest: async () => {
    if (answer instanceof Error) throw answer;
    return answer;
  },
});

describe('CallerAttestation (this test process as the caller)', () => {
  const me: PeerCredentials = { pid: process.pid, uid: process.getuid!(), gid: process.getgid!() };

  it('concatenates the attestors\' selectors in order, without duplicates', async () => {
    const a = new CallerAttestation({ attestors: [fixedAttestor('one', ['x:a:1', 'x:b:2']), fixedAttestor('two', ['x:b:2', 'y:c:3'])] });
    expect(await a.attest(me, a.startTimeOf(me.pid))).toEqual({ ...me, selectors: ['x:a:1', 'x:b:2', 'y:c:3'] });
  });

  it('fails closed when an attestor fails: its SdsError as is, anything else as SDS_ERR_ATTESTATION_FAILED naming the attestor', async () => {
    const a = new CallerAttestation({ attestors: [fixedAttestor('ok', ['x:a:1']), fixedAttestor('k8s', new SdsError(ErrorCode.KubeletUnavailable, 'kubelet down'))] });
    await expect(a.attest(me, a.startTimeOf(me.pid))).rejects.toMatchObject({ code: 'SDS_ERR_KUBELET_UNAVAILABLE' });
    const b = new CallerAttestation({ attestors: [fixedAttestor('odd', new Error('boom'))] });
    await expect(b.attest(me, b.startTimeOf(me.pid))).rejects.toMatchObject({ code: 'SDS_ERR_ATTESTATION_FAILED', message: expect.stringMatching(/odd attestor failed for pid \d+: boom/) });
  });

  it('refuses a caller whose process was already gone at accept (no start time)', async () => {
    const a = new CallerAttestation({ attestors: [] });
    await expect(a.attest(me, undefined)).rejects.toMatchObject({ code: 'SDS_ERR_CALLER_GONE' });
  });

  it('refuses when the start time read at accept differs from the one after attestation', async () => {
    const a = new CallerAttestation({ attestors: [] });
    await expect(a.attest(me, a.startTimeOf(me.pid)! - 1)).rejects.toMatchObject({ code: 'SDS_ERR_PID_REUSED' });
  });
});

describe('createCallerAttestation (settings -> attestors)', () => {
  it.each([
    { settings: {}, names: ['unix'] },
    { settings: { k8s: {} }, names: ['unix', 'k8s'] },
    { settings: { unix: false as const, k8s: { url: 'http://127.0.0.1:10255' } }, names: ['k8s'] },
    { settings: { k8s: false as const }, names: ['unix'] },
  ])('$settings -> $names', ({ settings, names }) => {
    expect(createCallerAttestation(settings).attestorNames).toEqual(names);
  });
});

describe('UnixWorkloadAttestor on an injected /proc root', () => {
  let root: string;
  beforeEach(async () => {
    root = await fs.mkdtemp(path.join(os.tmpdir(), 'sds-unix-attestor-'));
    await fs.mkdir(path.join(root, 'proc', '4242', 'ns'), { recursive: true });
    await fs.mkdir(path.join(root, 'proc', 'self', 'ns'), { recursive: true });
    await fs.symlink('mnt:[4026531832]', path.join(root, 'proc', 'self', 'ns', 'mnt'));
    await fs.symlink('user:[4026531837]', path.join(root, 'proc', 'self', 'ns', 'user'));
    await fs.writeFile(path.join(root, 'passwd'), 'root:x:0:0:root:/root:/bin/bash\nfront:x:1001:1001::/home/front:/bin/sh\n');
    await fs.writeFile(path.join(root, 'group'), 'root:x:0:\nfront:x:1001:\nenvoy:x:2000:front\nshared:x:3000:front\n');
  });
  afterEach(async () => fs.rm(root, { recursive: true, force: true }));

  const attestor = () => new UnixWorkloadAttestor({ procRoot: path.join(root, 'proc'), passwdFile: path.join(root, 'passwd'), groupFile: path.join(root, 'group') });
  const status = (groups: string) => `Name:\tenvoy\nUid:\t1001\t1001\t1001\t1001\nGid:\t1001\t1001\t1001\t1001\nGroups:\t${groups}\n`;

  const serverNs = { mnt: 'mnt:[4026531832]', user: 'user:[4026531837]' };
  const rows: { name: string; peer: PeerCredentials; groups: string; exe?: string; ns?: { mnt?: string; user?: string }; want: string[] }[] = [
    {
      name: 'named user and group, supplementary groups named and numbered, path',
      peer: { pid: 4242, uid: 1001, gid: 1001 },
      groups: '1001 2000 3000 4000',
      exe: '/usr/local/bin/envoy',
      ns: serverNs,
      want: [
        'unix:uid:1001', 'unix:user:front', 'unix:gid:1001', 'unix:group:front',
        'unix:supplementary_gid:1001', 'unix:supplementary_group:front',
        'unix:supplementary_gid:2000', 'unix:group:envoy', 'unix:supplementary_group:envoy',
        'unix:supplementary_gid:3000', 'unix:group:shared', 'unix:supplementary_group:shared',
        'unix:supplementary_gid:4000',
        'unix:path:/usr/local/bin/envoy',
      ],
    },
    {
      name: 'ids without names, no supplementary groups, unreadable exe: numbers only, no path',
      peer: { pid: 4242, uid: 5555, gid: 6666 },
      groups: '',
      ns: serverNs,
      want: ['unix:uid:5555', 'unix:gid:6666'],
    },
    {
      name: 'another mount namespace (same user namespace): no path',
      peer: { pid: 4242, uid: 1001, gid: 1001 },
      groups: '',
      exe: '/usr/local/bin/envoy',
      ns: { mnt: 'mnt:[4026532178]', user: serverNs.user },
      want: ['unix:uid:1001', 'unix:user:front', 'unix:gid:1001', 'unix:group:front'],
    },
    {
      name: 'another user namespace (same mount namespace): no path',
      peer: { pid: 4242, uid: 1001, gid: 1001 },
      groups: '',
      exe: '/usr/local/bin/envoy',
      ns: { mnt: serverNs.mnt, user: 'user:[4026532177]' },
      want: ['unix:uid:1001', 'unix:user:front', 'unix:gid:1001', 'unix:group:front'],
    },
    {
      name: 'namespace links unreadable: no path (fail closed)',
      peer: { pid: 4242, uid: 1001, gid: 1001 },
      groups: '',
      exe: '/usr/local/bin/envoy',
      want: ['unix:uid:1001', 'unix:user:front', 'unix:gid:1001', 'unix:group:front'],
    },
  ];

  it.each(rows)('$name', async ({ peer, groups, exe, ns, want }) => {
    await fs.writeFile(path.join(root, 'proc', '4242', 'status'), status(groups));
    if (exe) await fs.symlink(exe, path.join(root, 'proc', '4242', 'exe'));
    if (ns?.mnt) await fs.symlink(ns.mnt, path.join(root, 'proc', '4242', 'ns', 'mnt'));
    if (ns?.user) await fs.symlink(ns.user, path.join(root, 'proc', '4242', 'ns', 'user'));
    expect(await attestor().attest(peer)).toEqual(want);
  });

  it('fails with SDS_ERR_ATTESTATION_FAILED naming the file when the status cannot be read', async () => {
    await expect(attestor().attest({ pid: 777, uid: 0, gid: 0 })).rejects.toMatchObject({
      code: 'SDS_ERR_ATTESTATION_FAILED',
      message: expect.stringContaining(path.join(root, 'proc', '777', 'status')),
    });
  });
});

describe('pid-reuse guard with real processes', () => {
  let dir: string;
  let server: SdsServer | undefined;
  let peers: PeerProcess[];
  let others: ChildProcess[];
  beforeEach(async () => {
    dir = await makeSharedDir('sds-pid-reuse-');
    peers = [];
    others = [];
  });
  afterEach(async () => {
    for (const p of peers) await p.stop();
    for (const c of others) c.kill('SIGKILL');
    await server?.stop(200);
    server = undefined;
    await fs.rm(dir, { recursive: true, force: true });
  });

  /** Attestation pauses before its re-check until the test releases that pid. */
  const pausingServer = async () => {
    const reached = new Map<number, () => void>();
    const atRecheck = new Map<number, Promise<void>>();
    const releases = new Map<number, () => void>();
    const paused = new Map<number, Promise<void>>();
    const slot = (m: Map<number, () => void>, p: Map<number, Promise<void>>, pid: number) => {
      if (!p.has(pid)) p.set(pid, new Promise<void>((resolve) => m.set(pid, resolve)));
      return p.get(pid)!;
    };
    const attestation = new CallerAttestation({
      attestors: [new UnixWorkloadAttestor()],
      beforeRecheck: async (peer) => {
        slot(reached, atRecheck, peer.pid);
        reached.get(peer.pid)!();
        await slot(releases, paused, peer.pid);
      },
    });
    server = new SdsServer({ socketPath: path.join(dir, 'sds.sock'), catalog: new SecretStore(), log: silentLogger, attestation });
    await server.start();
    return {
      server,
      reachedRecheck: (pid: number) => slot(reached, atRecheck, pid),
      release: (pid: number) => {
        slot(releases, paused, pid);
        releases.get(pid)!();
      },
    };
  };

  /** Spawns a long-lived process, asking the kernel for pid `pid` through ns_last_pid; undefined if another process took it first. */
  const spawnWithPid = async (pid: number): Promise<ChildProcess | undefined> => {
    writeFileSync(NS_LAST_PID, String(pid - 1));
    const child = spawn('/bin/sleep', ['60'], { stdio: 'ignore' });
    others.push(child);
    await new Promise<void>((resolve, reject) => child.once('spawn', resolve).once('error', reject));
    if (child.pid === pid) return child;
    child.kill('SIGKILL');
    return undefined;
  };

  it.skipIf(!asRoot)('a caller whose pid is reused by another process before attestation finishes is refused with SDS_ERR_PID_REUSED (real reuse via ns_last_pid)', async () => {
    const { server, reachedRecheck, release } = await pausingServer();
    // Other processes on the machine may take the freed pid first; try a few connections.
    for (let attempt = 1; attempt <= 10; attempt++) {
      const peer = await startPeer(dir, server.socketPath);
      peers.push(peer);
      const pid = peer.info.pid;
      await reachedRecheck(pid);
      const caller = server.callerOf(`sds-conn:${attempt}`)!;
      const startedAtAccept = readStartTimeSync(pid);
      await peer.stop();
      const impostor = await spawnWithPid(pid);
      release(pid);
      if (!impostor) {
        await expect(caller).rejects.toMatchObject({ code: 'SDS_ERR_CALLER_GONE' });
        continue;
      }
      // The pid is alive again, as another process.
      expect(impostor.pid).toBe(pid);
      expect(readStartTimeSync(pid)).not.toBe(startedAtAccept);
      await expect(caller).rejects.toMatchObject({ code: 'SDS_ERR_PID_REUSED', message: expect.stringContaining(`caller pid ${pid}`) });
      return;
    }
    throw new Error('could not get a freed pid back in 10 attempts');
  });

  it.skipIf(!asRoot)('a pid reused even before the connection is accepted is caught by the pidfd (SO_PEERPIDFD), which the start time alone cannot see', async () => {
    // Accept connections but attest them only when the test says so.
    const accepted: net.Socket[] = [];
    let onAccept: () => void = () => {};
    const listener = net.createServer({ pauseOnConnect: true }, (socket) => {
      accepted.push(socket);
      onAccept();
    });
    const socketPath = path.join(dir, 'raw.sock');
    await new Promise<void>((resolve) => listener.listen(socketPath, resolve));
    await fs.chmod(socketPath, 0o666);
    try {
      for (let attempt = 1; attempt <= 10; attempt++) {
        const acceptedNow = new Promise<void>((resolve) => (onAccept = resolve));
        const peer = await startPeer(dir, socketPath);
        peers.push(peer);
        await acceptedNow;
        const socket = accepted.at(-1)!;
        const pid = peer.info.pid;
        await peer.stop();
        const impostor = await spawnWithPid(pid);
        if (!impostor) continue;
        // Attestation starts only now: the pid already names the impostor.
        const withPidfd = new CallerAttestation({ attestors: [new UnixWorkloadAttestor()] }).begin(socket);
        const startTimeOnly = new CallerAttestation({ attestors: [new UnixWorkloadAttestor()], pidfd: false }).begin(socket);
        if (!withPidfd.pidfd) {
          // A kernel without SO_PEERPIDFD: nothing more than the start time to go on.
          await expect(startTimeOnly.caller).resolves.toMatchObject({ pid });
          return;
        }
        expect(withPidfd.peer.pid).toBe(pid);
        await expect(withPidfd.caller).rejects.toMatchObject({ code: 'SDS_ERR_PID_REUSED', message: expect.stringContaining('pidfd') });
        // The limit the pidfd removes: by start time alone the impostor passes as the caller.
        await expect(startTimeOnly.caller).resolves.toMatchObject({ pid });
        return;
      }
      throw new Error('could not get a freed pid back in 10 attempts');
    } finally {
      for (const s of accepted) s.destroy();
      listener.close();
    }
  });
});
