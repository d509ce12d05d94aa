/**
 * A minimal HTTP/2 client for gRPC streams over one socket, for the load generator's held
 * streams (connect storms and fan-out). node:http2 costs ~40 us of client CPU per received
 * message (nghttp2 + stream objects + Readable machinery); on a 2-core machine shared with the
 * server that client time sits on the measured path, where Envoy (C++) would spend a few us. This
 * client parses frames itself and writes ACKs as single DATA frames.
 *
 * Scope (what SDS streams need, no more): client preface and SETTINGS (push off, maximum window),
 * HEADERS with literal (unindexed, non-Huffman) HPACK fields, DATA in both directions, SETTINGS and
 * PING acknowledgements, receive-window top-ups, RST_STREAM and GOAWAY. Response headers are not
 * decoded (no HPACK decoder): a stream that the server ends (trailers with END_STREAM, RST_STREAM,
 * GOAWAY) is reported as ended, which the fan-out and storm scenarios count as an error. The churn
 * scenario, which must read grpc-status, uses node:http2.
 */
import net from 'node:net';
import { GrpcMessageReader } from './common.js';

const PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1');
const T_DATA = 0;
const T_HEADERS = 1;
const T_RST_STREAM = 3;
const T_SETTINGS = 4;
const T_PING = 6;
const T_GOAWAY = 7;
const F_END_STREAM = 0x1;
const F_ACK = 0x1;
const F_END_HEADERS = 0x4;
const F_PADDED = 0x8;
const MAX_WINDOW = 0x7fffffff;
const DEFAULT_WINDOW = 65535;

function frame(type: number, flags: number, streamId: number, payload: Buffer): Buffer {
  const out = Buffer.allocUnsafe(9 + payload.length);
  out.writeUIntBE(payload.length, 0, 3);
  out[3] = type;
  out[4] = flags;
  out.writeUInt32BE(streamId, 5);
  payload.copy(out, 9);
  return out;
}

/** HPACK "literal header field without indexing, new name", no Huffman (RFC 7541 6.2.2). */
function hpackLiteral(name: string, value: string): Buffer {
  const n = Buffer.from(name, 'latin1');
  const v = Buffer.from(value, 'latin1');
  if (n.length > 126 || v.length > 126) throw new Error('header too long for this encoder');
  return Buffer.concat([Buffer.from([0x00, n.length]), n, Buffer.from([v.length]), v]);
}

export function requestHeaderBlock(path: string, authority = 'sds'): Buffer {
  return Buffer.concat([
    hpackLiteral(':method', 'POST'),
    hpackLiteral(':scheme', 'http'),
    hpackLiteral(':path', path),
    hpackLiteral(':authority', authority),
    hpackLiteral('content-type', 'application/grpc'),
    hpackLiteral('te', 'trailers'),
  ]);
}

export interface RawStreamHandler {
  /** One complete gRPC message (buf[start, end)). */
  onMessage(stream: RawStream, buf: Buffer, start: number, end: number): void;
  /** The server ended the stream, or the connection went away. */
  onEnd(stream: RawStream, reason: string): void;
}

export class RawStream {
  ended = false;
  readonly reader: GrpcMessageReader;
  /** Bytes received since the last WINDOW_UPDATE for this stream. */
  unacked = 0;
  /** The version_info this stream received last (the load generator's bookkeeping). */
  seen: string | undefined;

  constructor(
    readonly conn: RawH2Connection,
    readonly id: number,
    readonly handler: RawStreamHandler,
  ) {
    this.reader = new GrpcMessageReader((buf, start, end) => handler.onMessage(this, buf, start, end));
  }

  /** Sends one gRPC message (already framed with its 5-byte prefix) as a DATA frame. */
  send(grpcMessage: Buffer): void {
    this.conn.write(frame(T_DATA, 0, this.id, grpcMessage));
  }
}

export class RawH2Connection {
  readonly socket: net.Socket;
  connected = false;
  closed = false;
  readonly streams = new Map<number, RawStream>();
  private nextStreamId = 1;
  private pending: Buffer | undefined;
  private connUnacked = 0;

  /** `onClose(error)`: error is set when the connection failed or broke (not when we closed it). */
  constructor(
    socketPath: string,
    private readonly onClose: (conn: RawH2Connection, error: NodeJS.ErrnoException | undefined) => void,
  ) {
    this.socket = net.connect(socketPath);
    this.socket.once('connect', () => {
      this.connected = true;
    });
    let failure: NodeJS.ErrnoException | undefined;
    this.socket.on('error', (err: NodeJS.ErrnoException) => {
      failure = err;
    });
    this.socket.on('close', () => {
      const wasClosed = this.closed;
      this.closed = true;
      this.endAll('connection closed');
      this.onClose(this, wasClosed ? undefined : (failure ?? Object.assign(new Error('connection closed by the server'), { code: 'ECLOSED' })));
    });
    this.socket.on('data', (chunk: Buffer) => this.onData(chunk));
    // Preface, our SETTINGS (no push, maximum stream window), and a maximum connection window.
    const settings = Buffer.alloc(12);
    settings.writeUInt16BE(0x2, 0); // ENABLE_PUSH
    settings.writeUInt32BE(0, 2);
    settings.writeUInt16BE(0x4, 6); // INITIAL_WINDOW_SIZE
    settings.writeUInt32BE(MAX_WINDOW, 8);
    const increment = Buffer.alloc(4);
    increment.writeUInt32BE(MAX_WINDOW - DEFAULT_WINDOW, 0);
    this.socket.write(Buffer.concat([PREFACE, frame(T_SETTINGS, 0, 0, settings), frame(8, 0, 0, increment)]));
  }

  /** Opens a stream (HEADERS) and sends its first message. */
  open(headerBlock: Buffer, firstMessage: Buffer, handler: RawStreamHandler): RawStream {
    const id = this.nextStreamId;
    this.nextStreamId += 2;
    const stream = new RawStream(this, id, handler);
    this.streams.set(id, stream);
    this.write(Buffer.concat([frame(T_HEADERS, F_END_HEADERS, id, headerBlock), frame(T_DATA, 0, id, firstMessage)]));
    return stream;
  }

  write(bytes: Buffer): void {
    if (!this.closed) this.socket.write(bytes);
  }

  /** Closes the connection (no GOAWAY: like a process that goes away). */
  destroy(): void {
    this.closed = true;
    this.socket.destroy();
  }

  private endAll(reason: string): void {
    for (const stream of this.streams.values()) {
      if (stream.ended) continue;
      stream.ended = true;
      stream.handler.onEnd(stream, reason);
    }
    this.streams.clear();
  }

  private onData(chunk: Buffer): void {
    const buf = this.pending ? Buffer.concat([this.pending, chunk]) : chunk;
    this.pending = undefined;
    let pos = 0;
    // Batch the ACKs and control frames this read produces into one write.
    this.socket.cork();
    try {
      while (buf.length - pos >= 9) {
        const length = buf.readUIntBE(pos, 3);
        if (buf.length - pos - 9 < length) break;
        const type = buf[pos + 3]!;
        const flags = buf[pos + 4]!;
        const streamId = buf.readUInt32BE(pos + 5) & 0x7fffffff;
        const start = pos + 9;
        const end = start + length;
        pos = end;
        this.onFrame(type, flags, streamId, buf, start, end);
        if (this.closed) return;
      }
      if (pos < buf.length) this.pending = Buffer.from(buf.subarray(pos));
    } finally {
      this.socket.uncork();
    }
  }

  private onFrame(type: number, flags: number, streamId: number, buf: Buffer, start: number, end: number): void {
    switch (type) {
      case T_DATA: {
        const stream = this.streams.get(streamId);
        let s = start;
        let e = end;
        if (flags & F_PADDED) {
          const pad = buf[s]!;
          s += 1;
          e -= pad;
        }
        this.refillWindows(stream, end - start);
        if (!stream) return;
        if (e > s) stream.reader.push(buf.subarray(s, e));
        if (flags & F_END_STREAM) this.finish(stream, 'server ended the stream (END_STREAM on DATA)');
        return;
      }
      case T_HEADERS: {
        // Response headers are ignored; trailers (END_STREAM) end the stream.
        const stream = this.streams.get(streamId);
        if (stream && flags & F_END_STREAM) this.finish(stream, 'server ended the stream (trailers)');
        return;
      }
      case T_RST_STREAM: {
        const stream = this.streams.get(streamId);
        if (stream) this.finish(stream, `RST_STREAM code ${buf.readUInt32BE(start)}`);
        return;
      }
      case T_SETTINGS:
        if (!(flags & F_ACK)) this.write(frame(T_SETTINGS, F_ACK, 0, Buffer.alloc(0)));
        return;
      case T_PING:
        if (!(flags & F_ACK)) this.write(frame(T_PING, F_ACK, 0, Buffer.from(buf.subarray(start, end))));
        return;
      case T_GOAWAY: {
        const lastStreamId = buf.readUInt32BE(start) & 0x7fffffff;
        for (const stream of [...this.streams.values()]) if (stream.id > lastStreamId) this.finish(stream, 'refused by GOAWAY');
        return;
      }
      default:
        // WINDOW_UPDATE: our ACKs are tiny (well inside the server's initial windows). PRIORITY, CONTINUATION: ignored.
        return;
    }
  }

  private finish(stream: RawStream, reason: string): void {
    if (stream.ended) return;
    stream.ended = true;
    this.streams.delete(stream.id);
    stream.handler.onEnd(stream, reason);
  }

  /** Keeps both receive windows far from exhaustion (they start at 2^31 - 1). */
  private refillWindows(stream: RawStream | undefined, bytes: number): void {
    this.connUnacked += bytes;
    if (this.connUnacked > 1 << 30) {
      const inc = Buffer.alloc(4);
      inc.writeUInt32BE(this.connUnacked, 0);
      this.write(frame(8, 0, 0, inc));
      this.connUnacked = 0;
    }
    if (!stream) return;
    stream.unacked += bytes;
    if (stream.unacked > 1 << 30) {
      const inc = Buffer.alloc(4);
      inc.writeUInt32BE(stream.unacked, 0);
      this.write(frame(8, 0, stream.id, inc));
      stream.unacked = 0;
    }
  }
}
