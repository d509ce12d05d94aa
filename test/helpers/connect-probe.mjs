// A second local user's view of the socket, run as `nobody` from a copy in a temp folder: plain
// Node built-ins only, so it needs nothing from the checkout (which that user may not read).
//
//   node connect-probe.mjs once <socket>   one attempt; prints {"connected":bool,"responded":bool,"code":...}
//   node connect-probe.mjs loop <socket>   attempts back to back until stdin closes; prints one line
//                                          {"event":"connected","at":<epoch ms>} per success (the
//                                          socket is then closed), {"event":"tick","attempts":n}
//                                          after the first attempt and every 50th, and at the end
//                                          {"event":"summary","attempts":n,"connected":n,"errors":{code:n}}
import net from 'node:net';

const [mode, socketPath] = process.argv.slice(2);
const PREFACE = Buffer.concat([Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1'), Buffer.from([0, 0, 0, 4, 0, 0, 0, 0, 0])]);

function attempt() {
  return new Promise((resolve) => {
    const socket = net.connect(socketPath);
    let connected = false;
    const finish = (result) => {
      socket.destroy();
      resolve(result);
    };
    socket.once('connect', () => {
      connected = true;
      socket.write(PREFACE);
      if (mode === 'loop') finish({ connected: true, responded: false });
    });
    socket.once('data', () => finish({ connected, responded: true }));
    socket.once('error', (err) => finish({ connected, responded: false, code: err.code }));
    socket.setTimeout(3000, () => finish({ connected, responded: false, code: 'TIMEOUT' }));
  });
}

if (mode === 'once') {
  process.stdout.write(JSON.stringify(await attempt()) + '\n');
} else {
  let running = true;
  process.stdin.on('end', () => (running = false));
  process.stdin.on('close', () => (running = false));
  process.stdin.resume();
  let attempts = 0;
  let connected = 0;
  const errors = {};
  while (running) {
    attempts++;
    const r = await attempt();
    if (attempts === 1 || attempts % 50 === 0) process.stdout.write(JSON.stringify({ event: 'tick', attempts }) + '\n');
    if (r.connected) {
      connected++;
      process.stdout.write(JSON.stringify({ event: 'connected', at: Date.now() }) + '\n');
    } else {
      errors[r.code] = (errors[r.code] ?? 0) + 1;
      // Yield to the event loop now and then so stdin's end is seen.
      if (attempts % 50 === 0) await new Promise((resolve) => setImmediate(resolve));
    }
  }
  process.stdout.write(JSON.stringify({ event: 'summary', attempts, connected, errors }) + '\n');
}
