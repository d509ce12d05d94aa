/**
 * The start-up floor: a bare grpc-js server on a Unix socket that answers the SDS v3 StreamSecrets
 * method with one canned ~3 KB DiscoveryResponse. It imports nothing but grpc-js and Node, so its
 * start-up time is what any grpc-js server pays (Node boot + grpc-js load + bind).
 *
 * Usage (by startup.ts, transpiled to JavaScript): node startup-floor.js SOCKET
 */
import fs from 'node:fs';
import * as grpc from '@grpc/grpc-js';

const socketPath = process.argv[2]!;
// Any{type_url, value} padded to ~3 KB inside a DiscoveryResponse{version_info, resources, type_url, nonce}.
const TYPE_URL = 'type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret';
const field = (n: number, body: Buffer): Buffer => {
  const len: number[] = [];
  let l = body.length;
  while (l > 0x7f) {
    len.push((l & 0x7f) | 0x80);
    l >>>= 7;
  }
  len.push(l);
  return Buffer.concat([Buffer.from([(n << 3) | 2, ...len]), body]);
};
const CANNED = Buffer.concat([
  field(1, Buffer.from('canned-1')),
  field(2, Buffer.concat([field(1, Buffer.from(TYPE_URL)), field(2, Buffer.alloc(2900, 0x61))])),
  field(4, Buffer.from(TYPE_URL)),
  field(5, Buffer.from('n-1')),
]);

const server = new grpc.Server();
const identity = (b: Buffer): Buffer => b;
server.addService(
  {
    StreamSecrets: {
      path: '/envoy.service.secret.v3.SecretDiscoveryService/StreamSecrets',
      requestStream: true,
      responseStream: true,
      requestSerialize: identity,
      requestDeserialize: identity,
      responseSerialize: identity,
      responseDeserialize: identity,
    },
  },
  {
    StreamSecrets: (call: grpc.ServerDuplexStream<Buffer, Buffer>) => {
      let answered = false;
      call.on('data', () => {
        if (!answered) call.write(CANNED);
        answered = true;
      });
      call.on('end', () => call.end());
      call.on('error', () => undefined);
    },
  },
);
fs.rmSync(socketPath, { force: true });
server.bindAsync(`unix:${socketPath}`, grpc.ServerCredentials.createInsecure(), (err) => {
  if (err) {
    process.stderr.write(`startup-floor: ${err.message}\n`);
    process.exit(1);
  }
});
process.on('SIGTERM', () => {
  server.forceShutdown();
  process.exit(0);
});
