/**
 * `npm run bench:logger`: what pino costs us (issue 13 asks for pino; issue 14 for a start-up
 * within 1.3x of a bare grpc-js server).
 *
 * 1. Import cost: CPU time of a fresh `node` that imports a module and exits, median of N runs,
 *    for nothing, `pino`, `pino-pretty` (text format only) and `@grpc/grpc-js` (for scale).
 * 2. Per-line cost: CPU ns per `log.info(msg, fields)` through src/core/logger.ts, every line written
 *    with fs.writeSync to /dev/null, plain and from a child logger; with `--baseline <file.ts>`
 *    the same for another logger module exporting `createLogger` (e.g. the pre-pino logger:
 *    `git show 327854d:src/core/logger.ts > /tmp/logger-old.ts`).
 *
 * Options: --runs N (import runs, default 15), --lines N (lines per round, default 100000),
 * --rounds N (default 3).
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { median } from './common.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const argv = process.argv.slice(2);
const opt = (name: string, dflt: number): number => {
  const i = argv.indexOf(`--${name}`);
  return i >= 0 ? Number(argv[i + 1]) : dflt;
};
const RUNS = opt('runs', 15);
const LINES = opt('lines', 100_000);
const ROUNDS = opt('rounds', 3);
const baselineAt = argv.indexOf('--baseline');
const BASELINE = baselineAt >= 0 ? path.resolve(argv[baselineAt + 1]!) : undefined;

interface LoggerModule {
  createLogger(options: { level?: 'info'; format?: 'json' | 'text'; write?: (line: string) => void }): {
    info(msg: string, fields?: Record<string, unknown>): void;
    child(fields: Record<string, unknown>): { info(msg: string, fields?: Record<string, unknown>): void };
  };
}

/**
 * CPU ms of a fresh node process from start to exit, and of the import alone (process.cpuUsage:
 * user + system). CPU time, not wall time: on a shared machine wall time mostly measures the others.
 */
function importCost(specifiers: string[]): { processMs: number; importMs: number } {
  const code = [
    'const c0 = process.cpuUsage();',
    ...specifiers.map((s) => `await import(${JSON.stringify(s)});`),
    'const c = process.cpuUsage(c0), all = process.cpuUsage();',
    'console.log(JSON.stringify({ importMs: (c.user + c.system) / 1000, processMs: (all.user + all.system) / 1000 }));',
  ].join('\n');
  return JSON.parse(execFileSync(process.execPath, ['--input-type=module', '-e', code], { cwd: ROOT, encoding: 'utf8' })) as { processMs: number; importMs: number };
}

function perLineNs(mod: LoggerModule, format: 'json' | 'text', child: boolean): number {
  const fd = fs.openSync('/dev/null', 'w');
  const root = mod.createLogger({ level: 'info', format, write: (line) => void fs.writeSync(fd, line + '\n') });
  const log = child ? root.child({ component: 'file-source', secret: 'spiffe://example.org/front' }) : root;
  const fields = { file: '/etc/sds/front/tls.crt', version: '3f2a9c1e', streams: 12, names: ['default', 'ROOTCA'] };
  for (let i = 0; i < 2000; i++) log.info('secret updated', fields); // warm-up
  const c0 = process.cpuUsage();
  for (let i = 0; i < LINES; i++) log.info('secret updated', fields);
  const c = process.cpuUsage(c0);
  const ns = ((c.user + c.system) * 1000) / LINES;
  fs.closeSync(fd);
  return ns;
}

const load = fs.readFileSync('/proc/loadavg', 'utf8').trim();
console.log(`load average before: ${load}`);

console.log(`\nimport cost (fresh node, median of ${RUNS} runs per round, CPU ms of the import / of the whole process)`);
const specs: Array<[string, string[]]> = [
  ['node (nothing)', []],
  ['pino', ['pino']],
  ['pino-pretty', ['pino-pretty']],
  ['@grpc/grpc-js', ['@grpc/grpc-js']],
  // What pino adds to a process that loads grpc-js anyway (shared node: modules load once).
  ['@grpc/grpc-js + pino', ['@grpc/grpc-js', 'pino']],
];
for (let round = 1; round <= ROUNDS; round++) {
  const row: string[] = [];
  for (const [label, spec] of specs) {
    importCost(spec); // warm the file cache
    const runs = Array.from({ length: RUNS }, () => importCost(spec));
    row.push(`${label} ${median(runs.map((r) => r.importMs)).toFixed(1)} / ${median(runs.map((r) => r.processMs)).toFixed(1)}`);
  }
  console.log(`round ${round}: ${row.join(' | ')}`);
}

const current = (await import(pathToFileURL(path.join(ROOT, 'src/core/logger.ts')).href)) as LoggerModule;
const baseline = BASELINE ? ((await import(pathToFileURL(BASELINE).href)) as LoggerModule) : undefined;
console.log(`\nper-line cost (${LINES} lines to /dev/null, CPU ns per line)`);
for (let round = 1; round <= ROUNDS; round++) {
  const row: string[] = [];
  for (const [label, mod] of [['pino', current], ['baseline', baseline]] as const) {
    if (!mod) continue;
    for (const format of ['json', 'text'] as const) {
      row.push(`${label} ${format} ${perLineNs(mod, format, false).toFixed(0)}`);
      row.push(`${label} ${format} child ${perLineNs(mod, format, true).toFixed(0)}`);
    }
  }
  console.log(`round ${round}: ${row.join(' | ')}`);
}
console.log(`load average after: ${fs.readFileSync('/proc/loadavg', 'utf8').trim()}`);
