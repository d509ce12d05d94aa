/**
 * The floor: the least a grpc-js server can do for the same clients. It serves the same SDS
 * method path on a Unix socket, answers each stream's first request with one pre-encoded ~3 KB
 * DiscoveryResponse, ignores ACKs, and on `push` writes one new pre-encoded message (the same
 * bytes) to every open stream. No store, no state machine, no per-stream encoding.
 *
 * It uses the sds-server's grpc-js options and listener (same backlog, same connection injector),
 * so the two differ only in what happens above the transport.
 *
 * Usage (by run.ts, compiled): node --expose-gc floor-entry.js --socket S
 */
import fs from 'node:fs/promises';
import net from 'node:net';
import { parseArgs } from 'node:util';
import v8 from 'node:v8';
import * as grpc from '@grpc/grpc-js';
import { GRPC_SERVER_OPTIONS, LISTEN_BACKLOG } from '../../src/server/sds-server.js';
import { SDS_V3_STREAM_PATH, SECRET_TYPE_URL_V3, encodeDiscoveryResponse, lenField, sampleProcess, serveIpc, wallMs } from './common.js';

const { values } = parseArgs({ options: { socket: { type: 'string' }, size: { type: 'string' } } });
const socketPath = values.socket!;
const size = Number(values.size ?? 3072);

/** A DiscoveryResponse of exactly `size` bytes holding one opaque resource. */
function message(version: string): Buffer {
  const fixed = encodeDiscoveryResponse({ versionInfo: version, resources: [], typeUrl: SECRET_TYPE_URL_V3, nonce: `n-${version}` }).length;
  // Any{type_url, value}: pad the value so the whole message is `size` bytes (lengths < 16 KiB: 2-byte varints).
  const anyFixed = lenField(1, SECRET_TYPE_URL_V3).length + 3;
  const value = Buffer.alloc(size - fixed - 3 - anyFixed, 0x61);
  const resource = Buffer.concat([lenField(1, SECRET_TYPE_URL_V3), lenField(2, value)]);
  const out = encodeDiscoveryResponse({ versionInfo: version, resources: [resource], typeUrl: SECRET_TYPE_URL_V3, nonce: `n-${version}` });
  if (out.length !== size) throw new Error(`floor message is ${out.length} bytes, wanted ${size}`);
  return out;
}

let generation = 0;
let current = message(`floor-${generation}`);
const calls = new Set<grpc.ServerDuplexStream<Buffer, Buffer>>();

const server = new grpc.Server(GRPC_SERVER_OPTIONS);
const definition: grpc.ServiceDefinition = {
  StreamSecrets: {
    path: SDS_V3_STREAM_PATH,
    requestStream: true,
    responseStream: true,
    requestSerialize: (b: Buffer) => b,
    requestDeserialize: (b: Buffer) => b,
    responseSerialize: (b: Buffer) => b,
    responseDeserialize: (b: Buffer) => b,
  },
};
server.addService(definition, {
  StreamSecrets: (call: grpc.ServerDuplexStream<Buffer, Buffer>) => {
    let answered = false;
    call.on('data', () => {
      if (answered) return; // an ACK
      answered = true;
      calls.add(call);
      call.write(current);
    });
    const done = (): void => {
      calls.delete(call);
    };
    call.on('end', () => {
      done();
      call.end();
    });
    call.on('error', done);
    call.on('cancelled', done);
    call.on('close', done);
  },
});

await fs.rm(socketPath, { force: true });
const injector = server.createConnectionInjector(grpc.ServerCredentials.createInsecure());
const listener = net.createServer((socket) => injector.injectConnection(socket));
await new Promise<void>((resolve, reject) => {
  listener.once('error', reject);
  listener.listen({ path: socketPath, backlog: LISTEN_BACKLOG }, () => resolve());
});

serveIpc({
  sample: (args) => ({ ...sampleProcess(args.gc === true), warnings: 0, errors: 0, watchers: calls.size }),
  rotate: () => {
    generation += 1;
    const version = `floor-${generation}`;
    const publishedAt = wallMs();
    current = message(version);
    for (const call of calls) call.write(current);
    return { renamedAt: publishedAt, publishedAt, loopDoneAt: wallMs(), version };
  },
  heapSnapshot: (args) => v8.writeHeapSnapshot(String(args.file)),
  version: () => `floor-${generation}`,
  stop: () => {
    listener.close();
    server.forceShutdown();
    setImmediate(() => process.exit(0));
    return {};
  },
});
process.send?.({ ready: true });
