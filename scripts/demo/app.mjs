#!/usr/bin/env node
// The demo's tiny HTTP app (plain JavaScript, no dependencies: docker-compose.yml runs it in the
// stock node image, `npm run demo` runs it with the local node). One process per service; it only
// talks HTTP on loopback, its Envoy sidecar does the mTLS.
//
//   GET /         {"app": APP_NAME, "caller": <SPIFFE ID of the calling sidecar, from x-forwarded-client-cert>}
//   GET /traffic  counters of the calls this app makes (below)
//
// With CALL_URL set it also calls CALL_URL (its Envoy's egress listener) CALL_RATE times a second,
// after every URL in WAIT_FOR (comma-separated, e.g. the Envoys' /ready) has answered 200, and
// prints one line a second with what succeeded and what failed.
//
// Environment: APP_NAME (default "app"), PORT (8080), CALL_URL, CALL_RATE (10), WAIT_FOR,
// REPORT (1: print the per-second line; 0: quiet).
import http from 'node:http';

const name = process.env.APP_NAME || 'app';
const port = Number(process.env.PORT || 8080);
const callUrl = process.env.CALL_URL || '';
const rate = Math.max(1, Number(process.env.CALL_RATE || 10));
const waitFor = (process.env.WAIT_FOR || '').split(',').map((s) => s.trim()).filter(Boolean);
const report = (process.env.REPORT ?? '1') !== '0';

const traffic = { started: false, ok: 0, failed: 0, inFlight: 0, lastError: '', lastCaller: '', errors: {} };

/** URI SAN of the client certificate, as Envoy writes it into x-forwarded-client-cert (`URI=...`). */
function callerOf(req) {
  const xfcc = req.headers['x-forwarded-client-cert'];
  const match = /(?:^|;)URI=([^;,]*)/.exec(typeof xfcc === 'string' ? xfcc : '');
  return match ? decodeURIComponent(match[1]) : '';
}

const server = http.createServer((req, res) => {
  const url = (req.url || '/').split('?')[0];
  const body = url === '/traffic' ? traffic : { app: name, caller: callerOf(req) };
  res.writeHead(200, { 'content-type': 'application/json' });
  res.end(JSON.stringify(body) + '\n');
});
server.keepAliveTimeout = 1000;

server.listen(port, '127.0.0.1', () => {
  console.log(`${name}: listening on 127.0.0.1:${port}${callUrl ? `, will call ${callUrl} ${rate}/s` : ''}`);
  if (callUrl) void startCalling();
});

function get(url, timeoutMs) {
  return new Promise((resolve, reject) => {
    const req = http.get(url, { agent: false, timeout: timeoutMs }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (chunk) => (text += chunk));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, text }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`timed out after ${timeoutMs} ms`)));
    req.on('error', reject);
  });
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function waitUntilUp() {
  for (const url of waitFor) {
    let said = false;
    for (;;) {
      try {
        if ((await get(url, 1000)).status === 200) break;
      } catch {
        // not up yet
      }
      if (!said) console.log(`${name}: waiting for ${url}`);
      said = true;
      await sleep(250);
    }
  }
}

function fail(reason) {
  traffic.failed++;
  traffic.lastError = reason;
  traffic.errors[reason] = (traffic.errors[reason] || 0) + 1;
}

async function callOnce() {
  traffic.inFlight++;
  try {
    const res = await get(callUrl, 2000);
    if (res.status === 200) {
      traffic.ok++;
      try {
        traffic.lastCaller = JSON.parse(res.text).caller || '';
      } catch {
        // not our app answering; still a 200
      }
    } else {
      fail(`HTTP ${res.status}: ${res.text.trim().slice(0, 120)}`);
    }
  } catch (err) {
    fail(err instanceof Error ? err.message : String(err));
  } finally {
    traffic.inFlight--;
  }
}

async function startCalling() {
  await waitUntilUp();
  traffic.started = true;
  console.log(`${name}: calling ${callUrl} ${rate} times a second`);
  setInterval(() => void callOnce(), Math.round(1000 / rate));
  if (report) {
    let last = { ok: 0, failed: 0 };
    setInterval(() => {
      const line =
        `${name}: ${traffic.ok - last.ok} ok, ${traffic.failed - last.failed} failed in the last second ` +
        `(total ${traffic.ok} ok, ${traffic.failed} failed)` +
        (traffic.lastCaller ? `; the peer saw us as ${traffic.lastCaller}` : '') +
        (traffic.failed > last.failed ? `; last error: ${traffic.lastError}` : '');
      last = { ok: traffic.ok, failed: traffic.failed };
      console.log(line);
    }, 1000);
  }
}

for (const signal of ['SIGINT', 'SIGTERM']) {
  process.on(signal, () => {
    server.closeAllConnections();
    server.close(() => process.exit(0));
    setTimeout(() => process.exit(0), 1000).unref();
  });
}
