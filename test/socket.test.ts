import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { spawn } from 'node:child_process';
import fs from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { SecretStore } from '../src/secrets/store.js';
import { SdsServer } from '../src/server/sds-server.js';
import { silentLogger } from '../src/core/logger.js';
import { defaultSocketPath, resolveSocketPath } from '../src/server/unix-socket.js';
import { SdsTestClient, envoyNode } from './helpers/sds-client.js';
import { rootCa, tlsValue } from './helpers/identities.js';

const FRONT = 'spiffe://example.org/front';

describe('the Unix socket', () => {
  let dir: string;
  let servers: SdsServer[];

  beforeEach(async () => {
    dir = await fs.mkdtemp(path.join(os.tmpdir(), 'sds-socket-'));
    servers = [];
  });
  afterEach(async () => {
    for (const s of servers) await s.stop(200);
    await fs.rm(dir, { recursive: true, force: true });
  });

  const server = (socketPath: string, extra: { socketMode?: number } = {}): SdsServer => {
    const s = new SdsServer({ socketPath, catalog: new SecretStore(), log: silentLogger, ...extra });
    servers.push(s);
    return s;
  };

  it('creates the parent directory and sets mode 0660 by default, or the configured mode', async () => {
    const p1 = path.join(dir, 'deep', 'er', 'sds.sock');
    await server(p1).start();
    expect((await fs.lstat(p1)).isSocket()).toBe(true);
    expect((await fs.stat(p1)).mode & 0o777).toBe(0o660);
    const p2 = path.join(dir, 'other.sock');
    await server(p2, { socketMode: 0o600 }).start();
    expect((await fs.stat(p2)).mode & 0o777).toBe(0o600);
  });

  it('removes a stale socket left by a killed process', async () => {
    const socketPath = path.join(dir, 'sds.sock');
    // A process that listens and is then killed with SIGKILL leaves its socket file behind.
    const child = spawn(process.execPath, ['-e', `require('net').createServer().listen(${JSON.stringify(socketPath)}, () => console.log('up'))`]);
    await new Promise<void>((resolve) => child.stdout.once('data', () => resolve()));
    child.kill('SIGKILL');
    await new Promise((resolve) => child.once('exit', resolve));
    expect((await fs.lstat(socketPath)).isSocket()).toBe(true);
    await server(socketPath).start();
    const conn = net.connect(socketPath);
    await new Promise<void>((resolve, reject) => conn.once('connect', resolve).once('error', reject));
    conn.destroy();
  });

  it('refuses to delete a file that is not a socket', async () => {
    const socketPath = path.join(dir, 'sds.sock');
    await fs.writeFile(socketPath, 'precious');
    await expect(server(socketPath).start()).rejects.toMatchObject({ code: 'SDS_ERR_SOCKET_PATH_NOT_SOCKET', message: expect.stringContaining(socketPath) });
    expect(await fs.readFile(socketPath, 'utf8')).toBe('precious');
    servers.pop();
  });

  it('refuses to take over a socket something still listens on', async () => {
    const socketPath = path.join(dir, 'sds.sock');
    const other = net.createServer();
    await new Promise<void>((resolve) => other.listen(socketPath, resolve));
    try {
      await expect(server(socketPath).start()).rejects.toMatchObject({ code: 'SDS_ERR_SOCKET_IN_USE' });
      servers.pop();
      // The other listener is untouched.
      const conn = net.connect(socketPath);
      await new Promise<void>((resolve, reject) => conn.once('connect', resolve).once('error', reject));
      conn.destroy();
    } finally {
      other.close();
    }
  });

  it('takes the path from --socket, else APPMESH_SDS_SOCKET_PATH, else a per-user default', () => {
    expect(resolveSocketPath('/a.sock', { APPMESH_SDS_SOCKET_PATH: '/b.sock' })).toBe('/a.sock');
    expect(resolveSocketPath(undefined, { APPMESH_SDS_SOCKET_PATH: '/b.sock' })).toBe('/b.sock');
    expect(resolveSocketPath(undefined, {})).toBe(defaultSocketPath({}));
    expect(resolveSocketPath(undefined, { XDG_RUNTIME_DIR: '/run/user/1000' })).toBe('/run/user/1000/sds-server/sds.sock');
  });

  it.each([
    { env: { XDG_RUNTIME_DIR: '/run/user/1000' }, uid: 1000, path: '/run/user/1000/sds-server/sds.sock' },
    { env: {}, uid: 1000, path: path.join(os.tmpdir(), 'sds-server-1000', 'sds.sock') },
    { env: {}, uid: 0, path: path.join(os.tmpdir(), 'sds-server-0', 'sds.sock') },
    { env: { XDG_RUNTIME_DIR: '' }, uid: 65534, path: path.join(os.tmpdir(), 'sds-server-65534', 'sds.sock') },
    // The spec requires an absolute path; a relative one would depend on the working directory.
    { env: { XDG_RUNTIME_DIR: 'run/user/1000' }, uid: 1000, path: path.join(os.tmpdir(), 'sds-server-1000', 'sds.sock') },
  ])('default socket of uid $uid with $env: $path (two users never share one)', ({ env, uid, path: expected }) => {
    expect(defaultSocketPath(env, uid)).toBe(expected);
  });

  it('the default of this process is its own: XDG_RUNTIME_DIR, else the temp dir with its uid', () => {
    const uid = process.getuid?.();
    expect(defaultSocketPath({})).toBe(path.join(os.tmpdir(), uid === undefined ? 'sds-server' : `sds-server-${uid}`, 'sds.sock'));
  });

  it('shuts down gracefully: open streams end with OK and the socket file is removed', async () => {
    const socketPath = path.join(dir, 'sds.sock');
    const store = new SecretStore();
    store.declare(FRONT, 'tls-certificate');
    store.publish(FRONT, (await tlsValue(await rootCa('example.org'), FRONT)).value);
    store.markSettled();
    const s = new SdsServer({ socketPath, catalog: store, log: silentLogger });
    await s.start();
    const client = new SdsTestClient(socketPath);
    const stream = client.stream();
    stream.send({ node: envoyNode(), resource_names: [FRONT], type_url: client.typeUrl });
    await stream.next();
    await s.stop(2000);
    expect((await stream.ended).code).toBe(grpc.status.OK);
    await expect(fs.lstat(socketPath)).rejects.toMatchObject({ code: 'ENOENT' });
    client.close();
  });
});
