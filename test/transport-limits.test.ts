import { afterEach, describe, expect, it } from 'vitest';
import { spawn } from 'node:child_process';
import net from 'node:net';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import { startServer, type RunningServer } from './helpers/server.js';
import { SdsTestClient, envoyNode } from './helpers/sds-client.js';
import { rootCa, tlsValue } from './helpers/identities.js';
import type { TransportLimits } from '../src/server/connection-guard.js';
import { EventEmitter } from 'node:events';
import { createLogger } from '../src/core/logger.js';
import { ConnectionGuard, checkPreface, effectiveLimits, openFileSoftLimit, DEFAULT_TRANSPORT_LIMITS, FD_RESERVE } from '../src/server/connection-guard.js';
import { SECRET_TYPE_URL_V3, encodeDiscoveryRequest, encodeNode, grpcFrame } from '../scripts/bench/common.js';

const FRONT = 'spiffe://example.org/front';
const MAGIC = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1');
const EMPTY_SETTINGS = Buffer.from([0, 0, 0, 0x4, 0, 0, 0, 0, 0]);

function frame(type: number, flags: number, streamId: number, payload: Buffer): Buffer {
  const header = Buffer.alloc(9);
  header.writeUIntBE(payload.length, 0, 3);
  header[3] = type;
  header[4] = flags;
  header.writeUInt32BE(streamId, 5);
  return Buffer.concat([header, payload]);
}

/** A raw client socket that records when the server closed it (half-open: it never ends first). */
interface RawConn {
  socket: net.Socket;
  connected: Promise<void>;
  /** Resolves with the time (performance.now) the server's FIN or reset arrived. */
  closedByServer: Promise<number>;
  received: () => number;
}

function rawConnect(socketPath: string, send?: Buffer): RawConn {
  const socket = net.connect({ path: socketPath, allowHalfOpen: true });
  let bytes = 0;
  socket.on('data', (d: Buffer) => (bytes += d.length));
  const connected = new Promise<void>((resolve, reject) => {
    socket.once('connect', () => {
      if (send) socket.write(send);
      resolve();
    });
    socket.once('error', reject);
  });
  const closedByServer = new Promise<number>((resolve) => {
    socket.once('end', () => resolve(performance.now()));
    socket.once('close', () => resolve(performance.now()));
    socket.on('error', () => resolve(performance.now()));
  });
  return { socket, connected, closedByServer, received: () => bytes };
}

/** Resolves true if `p` settles within `ms`. */
async function settlesWithin(p: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const r = await Promise.race([p.then(() => true), new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(false), ms)))]);
  clearTimeout(timer);
  return r;
}

async function waitFor(cond: () => boolean, timeoutMs: number): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  while (!cond()) {
    if (performance.now() > deadline) throw new Error('condition not met in time');
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

/** An HTTP/2 session test double: records PING callbacks, so a test answers them or not. */
class FakeSession extends EventEmitter {
  destroyed = false;
  pings: Array<(err: Error | null) => void> = [];
  /** performance.now() of each PING. */
  pingedAt: number[] = [];
  ping(cb: (err: Error | null) => void): boolean {
    this.pings.push(cb);
    this.pingedAt.push(performance.now());
    return true;
  }
  destroy(): void {
    this.destroyed = true;
  }
}

describe('transport limits (real sockets)', () => {
  let running: RunningServer | undefined;
  const raws: net.Socket[] = [];
  const clients: SdsTestClient[] = [];

  afterEach(async () => {
    for (const s of raws.splice(0)) s.destroy();
    for (const c of clients.splice(0)) c.close();
    await running?.stop();
    running = undefined;
  });

  const serve = async (limits: Partial<TransportLimits>): Promise<RunningServer> => {
    running = await startServer({ server: { limits } });
    running.store.declare(FRONT, 'tls-certificate');
    running.store.publish(FRONT, (await tlsValue(await rootCa('example.org'), FRONT)).value);
    running.store.markSettled();
    return running;
  };
  const warnings = (r: RunningServer, prefix: string): Array<Record<string, unknown>> =>
    r.logs.filter((l) => l.level === 'warn' && String(l.msg).startsWith(prefix));

  const served = async (socketPath: string): Promise<void> => {
    const client = new SdsTestClient(socketPath);
    clients.push(client);
    const stream = client.stream();
    stream.send({ node: envoyNode(), resource_names: [FRONT], type_url: client.typeUrl });
    const res = await stream.next(5000);
    expect(res.resources).toHaveLength(1);
    stream.cancel();
    client.close();
  };

  it('closes 2,000 connections that never send a preface within the timeout, and serves a client meanwhile', async () => {
    const timeoutMs = 3000;
    const slackMs = 3000; // timers lag on a loaded 2-core machine; scripts/bench/preface-flood.ts has the real figures
    const r = await serve({ prefaceTimeoutMs: timeoutMs });
    const conns: RawConn[] = [];
    for (let i = 0; i < 2000; i++) {
      const c = rawConnect(r.socketPath);
      raws.push(c.socket);
      conns.push(c);
    }
    const connectedAt = await Promise.all(conns.map((c) => c.connected.then(() => performance.now())));
    // A real gRPC client connects while they are held open, and is served.
    await waitFor(() => r.server.connectionStats()?.accepted === 2000, 10_000);
    expect(r.server.connectionStats()?.prefaceTimeouts).toBe(0);
    await served(r.socketPath);
    expect(r.server.connectionStats()?.peakOpen).toBe(2001);

    const closedAt = await Promise.all(conns.map((c) => c.closedByServer));
    // Held from accept to close, as the server measures it (a client's connect completes in the
    // accept queue, before the server's accept, so the client-side figure includes accept lag).
    const stats = r.server.connectionStats();
    expect(stats?.longestPrefaceWaitMs).toBeGreaterThanOrEqual(timeoutMs - 1);
    expect(stats?.longestPrefaceWaitMs).toBeLessThan(timeoutMs + slackMs);
    expect(Math.max(...closedAt.map((t, i) => t - connectedAt[i]!))).toBeGreaterThanOrEqual(timeoutMs - 1);
    expect(conns.every((c) => c.received() === 0)).toBe(true);
    expect(r.server.connectionStats()?.prefaceTimeouts).toBe(2000);
    await waitFor(() => r.server.connectionStats()?.open === 0, 2000);
    // One line for the burst, not 2,000; the rest are counted on the line written when the window ends.
    const lines = warnings(r, 'closing connection: no HTTP/2 preface');
    expect(lines.length).toBeLessThanOrEqual(2);
    expect(lines[0]).toMatchObject({ prefaceTimeoutMs: timeoutMs, bytesReceived: 0 });
  }, 30_000);

  it('closes at once a connection whose first bytes are not the HTTP/2 preface', async () => {
    const r = await serve({ prefaceTimeoutMs: 60_000 });
    const http1 = rawConnect(r.socketPath, Buffer.from('GET / HTTP/1.1\r\nHost: x\r\n\r\n'));
    const noSettings = rawConnect(r.socketPath, Buffer.concat([MAGIC, frame(0x6, 0, 0, Buffer.alloc(8))]));
    raws.push(http1.socket, noSettings.socket);
    expect(await settlesWithin(http1.closedByServer, 3000)).toBe(true);
    expect(await settlesWithin(noSettings.closedByServer, 3000)).toBe(true);
    expect(r.server.connectionStats()?.badPrefaces).toBe(2);
    expect(warnings(r, 'closing connection: not an HTTP/2 client preface')[0]).toMatchObject({ reason: expect.stringContaining('not') });
    await served(r.socketPath);
  });

  it('closes a connection whose HTTP/2 session failed with a protocol error (GOAWAY sent) once it stops answering PINGs', async () => {
    const r = await serve({ pingIntervalMs: 200, pingTimeoutMs: 200 });
    // A DATA frame on stream 0 is a connection error: the server answers GOAWAY and stops reading.
    const bad = rawConnect(r.socketPath, Buffer.concat([MAGIC, EMPTY_SETTINGS, frame(0x0, 0, 0, Buffer.from('xx'))]));
    raws.push(bad.socket);
    await bad.connected;
    const t0 = performance.now();
    expect(await settlesWithin(bad.closedByServer, 3000)).toBe(true);
    expect((await bad.closedByServer) - t0).toBeLessThan(1500);
    expect(r.server.connectionStats()?.pingTimeouts).toBe(1);
    expect(warnings(r, 'closing connection: no answer to an HTTP/2 PING')).toHaveLength(1);
  });

  it('keeps a healthy idle connection open across many PINGs (the client answers them)', async () => {
    const r = await serve({ pingIntervalMs: 50, pingTimeoutMs: 200 });
    const client = new SdsTestClient(r.socketPath);
    clients.push(client);
    const stream = client.stream();
    stream.send({ node: envoyNode(), resource_names: [FRONT], type_url: client.typeUrl });
    const first = await stream.next();
    // Ten PING rounds, then the stream still gets a push.
    await new Promise((resolve) => setTimeout(resolve, 600));
    r.store.publish(FRONT, (await tlsValue(await rootCa('example.org'), FRONT)).value);
    const push = await stream.next();
    expect(push.version_info).not.toBe(first.version_info);
    expect(r.server.connectionStats()?.pingTimeouts).toBe(0);
  });

  it('a stall of the server\'s own event loop longer than the PING timeout does not close a healthy client (in another process)', async () => {
    const r = await serve({ pingIntervalMs: 100, pingTimeoutMs: 200 });
    const request = grpcFrame(encodeDiscoveryRequest({ node: encodeNode('holder', 'holder'), names: [FRONT], typeUrl: SECRET_TYPE_URL_V3 }));
    const child = spawn(process.execPath, [fileURLToPath(new URL('./helpers/h2-holder.mjs', import.meta.url)), r.socketPath, request.toString('hex')], { stdio: 'pipe' });
    const events: string[] = [];
    createInterface({ input: child.stdout }).on('line', (l) => events.push(l));
    try {
      await waitFor(() => events.includes('data'), 10_000);
      // A PING round or two go by, then the loop is blocked for 1.5 s (7x the PING timeout).
      await waitFor(() => (r.server.connectionStats()?.accepted ?? 0) >= 1, 1000);
      await new Promise((resolve) => setTimeout(resolve, 250));
      const until = Date.now() + 1500;
      while (Date.now() < until) {
        // busy: a synchronous task in the server process
      }
      // Ten more PING rounds after the stall, then a push still reaches the client.
      await new Promise((resolve) => setTimeout(resolve, 1000));
      const before = events.filter((e) => e === 'data').length;
      r.store.publish(FRONT, (await tlsValue(await rootCa('example.org'), FRONT)).value);
      await waitFor(() => events.filter((e) => e === 'data').length > before, 5000);
      expect(events).not.toContain('closed');
      expect(r.server.connectionStats()?.pingTimeouts).toBe(0);
    } finally {
      child.stdin.end();
      await new Promise((resolve) => child.once('exit', resolve));
    }
  });

  it('refuses connections over maxConnections with a log line, and accepts again once one closes', async () => {
    const r = await serve({ maxConnections: 3, prefaceTimeoutMs: 60_000 });
    const held = [0, 1, 2].map(() => rawConnect(r.socketPath));
    raws.push(...held.map((c) => c.socket));
    await Promise.all(held.map((c) => c.connected));
    await waitFor(() => r.server.connectionStats()?.open === 3, 2000);
    const extra = [0, 1, 2, 3, 4].map(() => rawConnect(r.socketPath));
    raws.push(...extra.map((c) => c.socket));
    for (const c of extra) expect(await settlesWithin(c.closedByServer, 3000)).toBe(true);
    expect(r.server.connectionStats()?.refusedOverLimit).toBe(5);
    const lines = warnings(r, 'refusing connection: too many open connections');
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatchObject({ open: 3, maxConnections: 3 });
    held[0]!.socket.destroy();
    await waitFor(() => r.server.connectionStats()?.open === 2, 2000);
    await served(r.socketPath);
  });

  it('caps concurrent streams per connection (SETTINGS_MAX_CONCURRENT_STREAMS) and logs when a connection reaches it', async () => {
    const r = await serve({ maxStreamsPerConnection: 2 });
    const client = new SdsTestClient(r.socketPath);
    clients.push(client);
    const streams = [0, 1, 2].map(() => client.stream());
    for (const s of streams) s.send({ node: envoyNode(), resource_names: [FRONT], type_url: client.typeUrl });
    await streams[0]!.next();
    await streams[1]!.next();
    // The third waits for a free slot on this connection (the client queues it).
    expect(await streams[2]!.nothingWithin(300)).toBe(true);
    expect(r.server.streams.open.size).toBe(2);
    expect(warnings(r, 'connection reached its concurrent stream limit')).toHaveLength(1);
    streams[0]!.cancel();
    expect((await streams[2]!.next()).resources).toHaveLength(1);
    expect((await streams[0]!.ended).code).toBe(grpc.status.CANCELLED);
  });

  it('recognises the client preface: magic then a SETTINGS frame header', () => {
    expect(checkPreface(Buffer.concat([MAGIC, EMPTY_SETTINGS]))).toBe('ok');
    expect(checkPreface(MAGIC.subarray(0, 10))).toBe('incomplete');
    expect(checkPreface(MAGIC)).toBe('incomplete');
    expect(checkPreface(Buffer.from('GET / HTTP/1.1\r\n'))).toMatch(/magic/);
    expect(checkPreface(Buffer.concat([MAGIC, Buffer.from([0, 0, 0, 0x4, 0x1, 0, 0, 0, 0])]))).toMatch(/SETTINGS/); // ACK flag
    expect(checkPreface(Buffer.concat([MAGIC, Buffer.from([0, 0, 5, 0x4, 0, 0, 0, 0, 0])]))).toMatch(/SETTINGS/); // length not 6n
    expect(checkPreface(Buffer.concat([MAGIC, Buffer.from([0, 0, 0, 0x4, 0, 0, 0, 0, 1])]))).toMatch(/SETTINGS/); // stream 1
  });

  it('fits the default connection cap to the open-file limit, and warns when a configured cap cannot fit', () => {
    const limits = (soft: string): string => `Limit Soft Limit Hard Limit Units\nMax open files            ${soft}                 1048576              files\n`;
    expect(openFileSoftLimit(() => limits('1024'))).toBe(1024);
    expect(openFileSoftLimit(() => limits('unlimited'))).toBeUndefined();
    expect(openFileSoftLimit(() => { throw new Error('ENOENT'); })).toBeUndefined();
    expect(openFileSoftLimit()).toBeGreaterThan(0); // this process, from the real /proc/self/limits

    const rows: Array<[Partial<TransportLimits> | undefined, number | undefined, number, string | undefined]> = [
      [undefined, undefined, DEFAULT_TRANSPORT_LIMITS.maxConnections, undefined],
      [undefined, 1_048_576, DEFAULT_TRANSPORT_LIMITS.maxConnections, undefined],
      [undefined, 1024, 1024 - FD_RESERVE, 'info'],
      [{ maxConnections: 5000 }, 1024, 5000, 'warn'],
      [{ maxConnections: 500 }, 1024, 500, undefined],
    ];
    for (const [configured, fd, max, level] of rows) {
      const { limits, note } = effectiveLimits(configured, fd);
      expect({ max: limits.maxConnections, level: note?.level }).toEqual({ max, level });
    }
  });

  it('PING deadline after a stall of our own loop (session test double): the peer gets a fresh timeout, a silent one is still closed', async () => {
    const logs: string[] = [];
    const guard = new ConnectionGuard({ ...DEFAULT_TRANSPORT_LIMITS, pingIntervalMs: 30, pingTimeoutMs: 500 }, createLogger({ write: (l) => logs.push(l) }), () => {});
    const http2Server = new EventEmitter();
    guard.watch(http2Server);
    const answering = new FakeSession();
    const silent = new FakeSession();
    http2Server.emit('session', answering);
    http2Server.emit('session', silent);
    await waitFor(() => answering.pings.length === 1, 2000);
    // The loop stalls right after the PING went out, for 4x the timeout; the ACK is read just after
    // (the timeout leaves room for timer lag on a loaded machine).
    const until = performance.now() + 2000;
    while (performance.now() < until) {
      // busy
    }
    setTimeout(() => answering.pings[0]!(null), 20);
    await waitFor(() => silent.destroyed, 2000);
    expect(answering.destroyed).toBe(false);
    expect(guard.stats().pingTimeouts).toBe(1);
    answering.emit('close');
    silent.emit('close');
  });

  it('PINGs every session in one sweep (session test doubles): one wake-up per interval, not one per connection', async () => {
    const guard = new ConnectionGuard({ ...DEFAULT_TRANSPORT_LIMITS, pingIntervalMs: 200, pingTimeoutMs: 5000 }, createLogger({ write: () => {} }), () => {});
    const http2Server = new EventEmitter();
    guard.watch(http2Server);
    const sessions: FakeSession[] = [];
    for (let i = 0; i < 200; i++) {
      sessions.push(new FakeSession());
      http2Server.emit('session', sessions[i]);
      // Sessions join over time (4 groups, 10 ms apart), as connections do.
      if (i % 50 === 49) await new Promise((resolve) => setTimeout(resolve, 10));
    }
    await waitFor(() => sessions.every((s) => s.pings.length >= 1), 2000);
    // Same sweep: the first PINGs of sessions that joined 30 ms apart went out together.
    const first = sessions.map((s) => s.pingedAt[0]!);
    expect(Math.max(...first) - Math.min(...first)).toBeLessThan(5);
    // Answered ones are PINGed again on the next sweep; a PING in flight is not repeated.
    for (const s of sessions.slice(1)) s.pings[0]!(null);
    await waitFor(() => sessions[1]!.pings.length >= 2, 2000);
    expect(sessions[0]!.pings).toHaveLength(1);
    for (const s of sessions) s.emit('close');
    expect(guard.stats().pingTimeouts).toBe(0);
  });
});
