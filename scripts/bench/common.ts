import { fork, type ChildProcess } from 'node:child_process';
/**
 * Shared by the bench processes: a cross-process clock, a minimal protobuf/gRPC wire codec for
 * the few DiscoveryRequest/DiscoveryResponse fields the load generator needs, and statistics.
 */

/**
 * Wall-clock milliseconds with sub-millisecond resolution, comparable across processes on this
 * machine (process.hrtime has an arbitrary per-process origin as far as Node documents it).
 */
export function wallMs(): number {
  return performance.timeOrigin + performance.now();
}

export const SDS_V3_STREAM_PATH = '/envoy.service.secret.v3.SecretDiscoveryService/StreamSecrets';
export const SECRET_TYPE_URL_V3 = 'type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret';

// ---- protobuf writing -------------------------------------------------------------------------

function varintBytes(n: number): number[] {
  const out: number[] = [];
  while (n > 0x7f) {
    out.push((n & 0x7f) | 0x80);
    n = Math.floor(n / 128);
  }
  out.push(n);
  return out;
}

/** One length-delimited field (wire type 2). */
export function lenField(field: number, value: Buffer | string): Buffer {
  const body = typeof value === 'string' ? Buffer.from(value) : value;
  return Buffer.concat([Buffer.from([...varintBytes((field << 3) | 2), ...varintBytes(body.length)]), body]);
}

/** Prepends the 5-byte gRPC message header (uncompressed). */
export function grpcFrame(message: Buffer): Buffer {
  const header = Buffer.alloc(5);
  header.writeUInt32BE(message.length, 1);
  return Buffer.concat([header, message]);
}

/** envoy.config.core.v3.Node: id=1, cluster=2, user_agent_name=6. */
export function encodeNode(id: string, cluster: string): Buffer {
  return Buffer.concat([lenField(1, id), lenField(2, cluster), lenField(6, 'envoy')]);
}

/** DiscoveryRequest: version_info=1, node=2, resource_names=3, type_url=4, response_nonce=5. */
export function encodeDiscoveryRequest(r: { versionInfo?: string; node?: Buffer; names: string[]; typeUrl: string; nonce?: string }): Buffer {
  const parts: Buffer[] = [];
  if (r.versionInfo) parts.push(lenField(1, r.versionInfo));
  if (r.node) parts.push(lenField(2, r.node));
  for (const name of r.names) parts.push(lenField(3, name));
  parts.push(lenField(4, r.typeUrl));
  if (r.nonce) parts.push(lenField(5, r.nonce));
  return Buffer.concat(parts);
}

/** DiscoveryResponse: version_info=1, resources=2 (Any), type_url=4, nonce=5. */
export function encodeDiscoveryResponse(r: { versionInfo: string; resources: Buffer[]; typeUrl: string; nonce: string }): Buffer {
  return Buffer.concat([lenField(1, r.versionInfo), ...r.resources.map((res) => lenField(2, res)), lenField(4, r.typeUrl), lenField(5, r.nonce)]);
}

// ---- protobuf reading -------------------------------------------------------------------------

/** Reads only version_info (1) and nonce (5) of a DiscoveryResponse; skips everything else. */
export function decodeVersionAndNonce(buf: Buffer, start: number, end: number): { versionInfo: string; nonce: string } {
  let pos = start;
  let versionInfo = '';
  let nonce = '';
  const varint = (): number => {
    let result = 0;
    let mul = 1;
    for (;;) {
      if (pos >= end) throw new Error('truncated varint');
      const b = buf[pos++]!;
      result += (b & 0x7f) * mul;
      if (b < 0x80) return result;
      mul *= 128;
    }
  };
  while (pos < end) {
    const key = varint();
    const field = Math.floor(key / 8);
    const wire = key & 7;
    if (wire === 2) {
      const len = varint();
      if (field === 1) versionInfo = buf.toString('latin1', pos, pos + len);
      else if (field === 5) nonce = buf.toString('latin1', pos, pos + len);
      pos += len;
    } else if (wire === 0) varint();
    else if (wire === 1) pos += 8;
    else if (wire === 5) pos += 4;
    else throw new Error(`unexpected wire type ${wire}`);
  }
  if (pos !== end) throw new Error('truncated message');
  return { versionInfo, nonce };
}

/** Splits a byte stream into gRPC messages; `onMessage` gets (buffer, start, end) views. */
export class GrpcMessageReader {
  private pending: Buffer | undefined;

  constructor(private readonly onMessage: (buf: Buffer, start: number, end: number) => void) {}

  push(chunk: Buffer): void {
    const buf = this.pending ? Buffer.concat([this.pending, chunk]) : chunk;
    this.pending = undefined;
    let pos = 0;
    while (buf.length - pos >= 5) {
      const len = buf.readUInt32BE(pos + 1);
      if (buf.length - pos - 5 < len) break;
      this.onMessage(buf, pos + 5, pos + 5 + len);
      pos += 5 + len;
    }
    if (pos < buf.length) this.pending = buf.subarray(pos);
  }
}

// ---- statistics -------------------------------------------------------------------------------

export function percentile(values: number[], p: number): number {
  if (values.length === 0) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  // Nearest rank: p99 of fewer than 100 samples is the maximum.
  const rank = Math.min(sorted.length, Math.max(1, Math.ceil((p / 100) * sorted.length)));
  return sorted[rank - 1]!;
}

export function median(values: number[]): number {
  if (values.length === 0) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

// ---- load generator replies --------------------------------------------------------------------

/** The load generator's reply to `open` (a connect storm; scripts/bench/loadgen.ts). Times in ms. */
export interface StormReply {
  startedAt: number;
  /** Until every stream had its first response; undefined when the storm timed out. */
  allServedMs?: number;
  served: number;
  expected: number;
  /** Connects refused before the connection existed (then retried), by error code. */
  refused: number;
  refusedCodes: Record<string, number>;
  streamErrors: number;
  errorSamples: string[];
  firstResponseP50Ms: number;
  firstResponseP99Ms: number;
  /** Size of one DiscoveryResponse as received (bytes). */
  responseBytes: number;
  timedOut: boolean;
}

// ---- process measurements (used by both server entries) ----------------------------------------

export interface ProcessSample {
  rss: number;
  heapUsed: number;
  heapTotal: number;
  external: number;
  arrayBuffers: number;
  handles: number;
  resources: number;
  resourcesByType: Record<string, number>;
  cpuUserUs: number;
  cpuSystemUs: number;
  at: number;
}

/** Memory (after a full GC when --expose-gc is on), handles and CPU of this process. */
export function sampleProcess(collect: boolean): ProcessSample {
  const g = (globalThis as { gc?: () => void }).gc;
  if (collect && g) {
    g();
    g();
  }
  const mem = process.memoryUsage();
  const cpu = process.cpuUsage();
  const resources = process.getActiveResourcesInfo();
  const resourcesByType: Record<string, number> = {};
  for (const r of resources) resourcesByType[r] = (resourcesByType[r] ?? 0) + 1;
  const handles = (process as unknown as { _getActiveHandles(): unknown[] })._getActiveHandles().length;
  return {
    rss: mem.rss,
    heapUsed: mem.heapUsed,
    heapTotal: mem.heapTotal,
    external: mem.external,
    arrayBuffers: mem.arrayBuffers,
    handles,
    resources: resources.length,
    resourcesByType,
    cpuUserUs: cpu.user,
    cpuSystemUs: cpu.system,
    at: wallMs(),
  };
}

// ---- IPC between the orchestrator and its children ---------------------------------------------

export interface IpcRequest {
  id: number;
  cmd: string;
  args?: Record<string, unknown>;
}

export interface IpcReply {
  id: number;
  ok: boolean;
  result?: unknown;
  error?: string;
}

/** Serves orchestrator commands over the fork() IPC channel. */
export function serveIpc(handlers: Record<string, (args: Record<string, unknown>) => unknown>): void {
  process.on('message', (raw: unknown) => {
    const req = raw as IpcRequest;
    const handler = handlers[req.cmd];
    const reply = (r: Omit<IpcReply, 'id'>): void => {
      process.send?.({ id: req.id, ...r });
    };
    if (!handler) {
      reply({ ok: false, error: `unknown command ${req.cmd}` });
      return;
    }
    Promise.resolve()
      .then(() => handler(req.args ?? {}))
      .then(
        (result) => reply({ ok: true, result }),
        (err: unknown) => reply({ ok: false, error: err instanceof Error ? `${err.message}\n${err.stack}` : String(err) }),
      );
  });
  // The orchestrator went away: do not linger.
  process.on('disconnect', () => process.exit(0));
}

/**
 * A benchmark process driven over IPC (`serveIpc` on its side): `call(cmd, args)` resolves with its
 * reply, every pending call rejects when it exits, `stop()` asks it to stop and kills it after 10 s.
 */
export class BenchChild<S = unknown> {
  private nextId = 0;
  private pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  readonly exited: Promise<number | null>;

  private constructor(
    readonly label: string,
    private readonly proc: ChildProcess,
  ) {
    proc.on('message', (raw) => {
      const m = raw as IpcReply;
      const p = this.pending.get(m.id);
      if (!p) return;
      this.pending.delete(m.id);
      if (m.ok) p.resolve(m.result);
      else p.reject(new Error(`${label}: ${m.error}`));
    });
    this.exited = new Promise((resolve) =>
      proc.on('exit', (code) => {
        for (const p of this.pending.values()) p.reject(new Error(`${label} exited (${code})`));
        this.pending.clear();
        resolve(code);
      }),
    );
  }

  /** Forks `script` (an absolute path to compiled JavaScript) and waits for its `{ ready: true }` message. */
  static async start<S = unknown>(label: string, script: string, args: string[], opts: { cwd: string; execArgv?: string[] }): Promise<BenchChild<S>> {
    const execArgv = opts.execArgv ?? [];
    const proc = fork(script, args, {
      cwd: opts.cwd,
      execArgv: ['--expose-gc', ...execArgv],
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    });
    const child = new BenchChild<S>(label, proc);
    await new Promise<void>((resolve, reject) => {
      const onMessage = (m: unknown): void => {
        if ((m as { ready?: boolean }).ready) {
          proc.off('message', onMessage);
          resolve();
        }
      };
      proc.on('message', onMessage);
      proc.once('exit', (code) => reject(new Error(`${label} exited during start (${code})`)));
    });
    return child;
  }

  call<T>(cmd: string, args: Record<string, unknown> = {}): Promise<T> {
    const id = ++this.nextId;
    return new Promise<T>((resolve, reject) => {
      this.pending.set(id, { resolve: resolve as (v: unknown) => void, reject });
      this.proc.send({ id, cmd, args });
    });
  }

  /** The child's `sample` command (process figures; `gc` first when asked). */
  sample(gc = true): Promise<S> {
    return this.call<S>('sample', { gc });
  }

  async stop(): Promise<void> {
    await this.call('stop').catch(() => undefined);
    const timer = setTimeout(() => this.proc.kill('SIGKILL'), 10_000);
    await this.exited;
    clearTimeout(timer);
  }
}
