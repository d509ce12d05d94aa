/**
 * Bench-only entry point of the real sds-server: builds the real program (`startApp` with a file
 * config, exactly what `sds-server --config FILE` runs) and adds a control channel over the
 * fork() IPC pipe so the orchestrator can
 *   - rotate the certificate files (write temp + rename) and learn when the store published it,
 *   - read this process's memory, handle counts and CPU time.
 * Publish time = the first store watcher of the rotated name firing (registered before any stream,
 * so it runs before the streams' own listeners), as wall-clock ms comparable across processes.
 *
 * Usage (by run.ts, compiled): node --expose-gc sds-entry.js --config F --socket S --dir D --pairs P --name N
 */
import fs from 'node:fs/promises';
import path from 'node:path';
import { parseArgs } from 'node:util';
import v8 from 'node:v8';
import { startApp } from '../../src/cli/app.js';
import { parseConfigFile } from '../../src/cli/config.js';
import { createLogger } from '../../src/core/logger.js';
import { sampleProcess, serveIpc, wallMs } from './common.js';

const { values } = parseArgs({
  options: {
    config: { type: 'string' },
    socket: { type: 'string' },
    dir: { type: 'string' },
    pairs: { type: 'string' },
    name: { type: 'string' },
  },
});
const configFile = values.config!;
const dir = values.dir!;
const name = values.name!;
const pairs = JSON.parse(await fs.readFile(values.pairs!, 'utf8')) as Array<{ chainPem: string; keyPem: string }>;

let warnings = 0;
let errors = 0;
const firstLines: string[] = [];
const log = createLogger({
  level: 'warn',
  write: (line) => {
    if (line.includes('"level":"error"')) errors += 1;
    else warnings += 1;
    if (firstLines.length < 10) {
      firstLines.push(line);
      process.stderr.write(`[sds-server] ${line}\n`);
    }
  },
});
process.on('uncaughtException', (err) => {
  errors += 1;
  process.stderr.write(`[sds-server] uncaught: ${err.stack ?? err.message}\n`);
});

const config = parseConfigFile(await fs.readFile(configFile, 'utf8'), configFile);
config.socket.path = values.socket!;
const app = await startApp(config, log);

let publishWaiter: ((t: number) => void) | undefined;
let lastPublish = 0;
let loopDoneAt = 0;
app.store.watch(name, () => {
  lastPublish = wallMs();
  // Runs once the store has called every stream's listener (the synchronous part of a push).
  queueMicrotask(() => {
    loopDoneAt = wallMs();
  });
  publishWaiter?.(lastPublish);
});

// Continue the cycle from whatever pair the files hold now (a previous server may have rotated them).
const currentKey = await fs.readFile(path.join(dir, 'tls.key'), 'utf8');
let rotation = Math.max(0, pairs.findIndex((p) => p.keyPem === currentKey));
serveIpc({
  sample: (args) => ({ ...sampleProcess(args.gc === true), warnings, errors, watchers: app.store.watcherCount }),
  rotate: async () => {
    rotation += 1;
    const pair = pairs[rotation % pairs.length]!;
    const published = new Promise<number>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('rotation not published within 5 s')), 5000);
      publishWaiter = (t) => {
        clearTimeout(timer);
        publishWaiter = undefined;
        resolve(t);
      };
    });
    // The usual rotation: write both files next to the old ones, then rename key, then cert.
    await fs.writeFile(path.join(dir, 'tls.key.tmp'), pair.keyPem);
    await fs.writeFile(path.join(dir, 'tls.crt.tmp'), pair.chainPem);
    await fs.rename(path.join(dir, 'tls.key.tmp'), path.join(dir, 'tls.key'));
    await fs.rename(path.join(dir, 'tls.crt.tmp'), path.join(dir, 'tls.crt'));
    const renamedAt = wallMs();
    const publishedAt = await published;
    const resolution = app.store.resolve(name);
    if (resolution.kind !== 'ready') throw new Error(`${name} is ${resolution.kind} after rotation`);
    return { renamedAt, publishedAt, loopDoneAt, version: resolution.entry.version };
  },
  heapSnapshot: (args) => v8.writeHeapSnapshot(String(args.file)),
  version: () => {
    const resolution = app.store.resolve(name);
    return resolution.kind === 'ready' ? resolution.entry.version : undefined;
  },
  stop: async () => {
    await app.stop();
    setImmediate(() => process.exit(0));
    return { lastPublish };
  },
});
process.send?.({ ready: true });
