// An HTTP/2 gRPC client in its own process (Node built-ins only): opens one StreamSecrets stream
// on <socket>, sends the pre-encoded gRPC frame given as hex, and prints one line per event:
// "data" for each chunk received, "closed" when the connection ends. Exits when stdin closes.
//   node h2-holder.mjs <socket> <hex of the gRPC-framed DiscoveryRequest>
import http2 from 'node:http2';
import net from 'node:net';

const [socketPath, hex] = process.argv.slice(2);
const session = http2.connect('http://sds', { createConnection: () => net.connect(socketPath) });
session.on('close', () => process.stdout.write('closed\n'));
session.on('error', () => {});
const req = session.request({
  ':method': 'POST',
  ':path': '/envoy.service.secret.v3.SecretDiscoveryService/StreamSecrets',
  'content-type': 'application/grpc',
  te: 'trailers',
});
req.on('data', () => process.stdout.write('data\n'));
req.on('error', () => {});
req.write(Buffer.from(hex, 'hex'));
process.stdin.resume();
process.stdin.on('end', () => {
  session.destroy();
  process.exit(0);
});
