import { afterEach, describe, expect, it } from 'vitest';
import fs from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { readPeerCredentials } from '../../src/attestation/peer-credentials.js';

/** Accepts one connection on `listen` and hands the server side of it to `onSocket`. */
async function acceptOne<T>(listen: (server: net.Server) => void, connect: (server: net.Server) => net.Socket, onSocket: (socket: net.Socket) => T): Promise<T> {
  const server = net.createServer();
  try {
    await new Promise<void>((resolve) => {
      server.once('listening', resolve);
      listen(server);
    });
    const result = new Promise<T>((resolve, reject) =>
      server.once('connection', (socket) => {
        try {
          resolve(onSocket(socket));
        } catch (err) {
          reject(err as Error);
        } finally {
          socket.destroy();
        }
      }),
    );
    const client = connect(server);
    client.on('error', () => {});
    try {
      return await result;
    } finally {
      client.destroy();
    }
  } finally {
    server.close();
  }
}

describe('readPeerCredentials (SO_PEERCRED through koffi)', () => {
  let dir: string | undefined;
  afterEach(async () => {
    if (dir) await fs.rm(dir, { recursive: true, force: true });
  });

  it('reads pid, uid and gid of the process at the other end of a Unix socket', async () => {
    dir = await fs.mkdtemp(path.join(os.tmpdir(), 'sds-peercred-'));
    const socketPath = path.join(dir, 's.sock');
    const creds = await acceptOne(
      (s) => s.listen(socketPath),
      () => net.connect(socketPath),
      (socket) => readPeerCredentials(socket),
    );
    expect(creds).toEqual({ pid: process.pid, uid: process.getuid!(), gid: process.getgid!() });
  });

  it('refuses a TCP connection, which has no peer credentials (SDS_ERR_PEER_CREDENTIALS)', async () => {
    const outcome = await acceptOne(
      (s) => s.listen(0, '127.0.0.1'),
      (s) => net.connect((s.address() as net.AddressInfo).port, '127.0.0.1'),
      (socket) => {
        try {
          return readPeerCredentials(socket);
        } catch (err) {
          return err as Error & { code: string };
        }
      },
    );
    // The kernel answers SO_PEERCRED on TCP with pid 0: no process to attest.
    expect(outcome).toMatchObject({ code: 'SDS_ERR_PEER_CREDENTIALS', message: expect.stringContaining('pid 0') });
  });

  it('refuses a socket that is already closed (no file descriptor)', async () => {
    dir = await fs.mkdtemp(path.join(os.tmpdir(), 'sds-peercred-'));
    const socketPath = path.join(dir, 's.sock');
    const outcome = await acceptOne(
      (s) => s.listen(socketPath),
      () => net.connect(socketPath),
      (socket) => {
        socket.destroy();
        try {
          return readPeerCredentials(socket);
        } catch (err) {
          return err as Error & { code: string };
        }
      },
    );
    expect(outcome).toMatchObject({ code: 'SDS_ERR_PEER_CREDENTIALS', message: expect.stringContaining('no file descriptor') });
  });
});
