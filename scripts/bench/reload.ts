/**
 * `npm run bench:reload -- [--streams 1000] [--rounds 3]`: how long a config reload takes with many
 * streams open, and that it disturbs none it does not concern (issue 13). Per round, a fresh
 * in-process server (embedded CA) serves identity `keep` to 90 % of the streams and `gone` to the
 * rest; the config file then swaps `gone` for `added` and the server reloads it. Reported: the
 * reload's own time, the time until every `gone` stream was told (SotW: ended), the time until a
 * new stream is served `added`, and how many responses the `keep` streams got (must be 0).
 */
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import * as grpc from '@grpc/grpc-js';
import { startApp } from '../../src/cli/app.js';
import { parseCommandLine } from '../../src/cli/args.js';
import { silentLogger } from '../../src/core/logger.js';
import { SDS_V3_STREAM_PATH, SECRET_TYPE_URL_V3, encodeDiscoveryRequest, encodeNode } from './common.js';

const { values } = parseArgs({ options: { streams: { type: 'string', default: '1000' }, rounds: { type: 'string', default: '3' } } });
const STREAMS = Number(values.streams);
const ROUNDS = Number(values.rounds);
const PER_CONNECTION = 500;
const id = (name: string): string => `spiffe://example.org/${name}`;

interface Probe {
  responses: number;
  ended: Promise<void>;
  first: Promise<void>;
  isEnded: boolean;
}

function open(client: grpc.Client, name: string): Probe {
  const call = client.makeBidiStreamRequest(SDS_V3_STREAM_PATH, (b: Buffer) => b, (b: Buffer) => b);
  const probe: Probe = { responses: 0, isEnded: false, ended: Promise.resolve(), first: Promise.resolve() };
  probe.first = new Promise((resolve) => call.once('data', () => resolve()));
  probe.ended = new Promise((resolve) => {
    const end = (): void => {
      probe.isEnded = true;
      resolve();
    };
    call.on('error', end);
    call.on('status', end);
  });
  call.on('data', () => (probe.responses += 1));
  call.write(encodeDiscoveryRequest({ node: encodeNode('bench', 'bench'), names: [name], typeUrl: SECRET_TYPE_URL_V3 }));
  return probe;
}

async function round(): Promise<Record<string, number>> {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'sds-bench-reload-'));
  const file = path.join(dir, 'sds.yaml');
  const write = (names: string[]): Promise<void> =>
    fs.writeFile(
      file,
      `socket: { path: ${path.join(dir, 'sds.sock')} }\nca: { trustDomain: example.org, embedded: { dataDir: ${path.join(dir, 'ca')} }, bundlePropagationMs: 0 }\nidentities:\n${names.map((n) => `  - spiffeId: ${id(n)}\n`).join('')}`,
    );
  const load = () => {
    const c = parseCommandLine(['--config', file], {});
    if (c.kind !== 'run') throw new Error('expected run');
    return c.config;
  };
  await write(['keep', 'gone']);
  const app = await startApp(load(), silentLogger, { load, configFile: file });
  const clients = Array.from({ length: Math.ceil(STREAMS / PER_CONNECTION) }, () => new grpc.Client(`unix:${app.socketPath}`, grpc.credentials.createInsecure()));
  try {
    const goneCount = Math.max(1, Math.round(STREAMS / 10));
    const keep: Probe[] = [];
    const gone: Probe[] = [];
    for (let i = 0; i < STREAMS; i++) (i < goneCount ? gone : keep).push(open(clients[i % clients.length]!, id(i < goneCount ? 'gone' : 'keep')));
    await Promise.all([...keep, ...gone].map((p) => p.first));
    const before = keep.reduce((n, p) => n + p.responses, 0);

    await write(['keep', 'added']);
    const t0 = performance.now();
    const outcome = await app.reloadConfig('bench');
    const reloadMs = performance.now() - t0;
    if (outcome.outcome !== 'applied') throw new Error(`reload ${outcome.outcome}`);
    await Promise.all(gone.map((p) => p.ended));
    const goneToldMs = performance.now() - t0;
    const added = open(clients[0]!, id('added'));
    await added.first;
    const addedServedMs = performance.now() - t0;
    // Barrier: a new stream's answer on each connection comes after anything the reload wrote there.
    await Promise.all(clients.map((c) => open(c, id('keep')).first));
    const keepResponses = keep.reduce((n, p) => n + p.responses, 0) - before;
    const keepEnded = keep.filter((p) => p.isEnded).length;
    return { reloadMs, goneToldMs, addedServedMs, keepResponses, keepEnded };
  } finally {
    for (const c of clients) c.close();
    await app.stop();
    await fs.rm(dir, { recursive: true, force: true });
  }
}

const results: Array<Record<string, number>> = [];
for (let r = 0; r < ROUNDS; r++) results.push(await round());
const fmt = (n: number): string => (Number.isInteger(n) ? String(n) : n.toFixed(1));
console.log(`config reload with ${STREAMS} SotW streams (${Math.round(STREAMS / 10)} on the removed identity), loadavg ${(await fs.readFile('/proc/loadavg', 'utf8')).split(' ').slice(0, 3).join(' ')}`);
for (const [i, r] of results.entries()) console.log(`  round ${i + 1}: ${Object.entries(r).map(([k, v]) => `${k} ${fmt(v)}`).join(', ')}`);
process.exit(results.every((r) => r.keepResponses === 0 && r.keepEnded === 0) ? 0 : 1);
