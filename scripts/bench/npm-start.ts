/**
 * `npm start` time to listening: from running the command to the SDS socket existing, with the
 * embedded CA default, against `node dist/cli/main.js` itself (the floor) in the same rounds.
 * What `npm start` adds is its prestart step (`node scripts/build.mjs --if-stale`, which returns
 * once it finds dist/ newer than src/, proto/, package.json and the build script) and npm's own
 * start-up; "full build + start" rebuilds on every start, as npm start did before (then a whole tsc
 * build; now the esbuild bundle). Rounds alternate the variants so machine load hits them alike.
 *
 *   npm run bench:npm-start -- [--rounds 3]
 *
 * Prints one line per run, then medians and the load average. dist/ must be current first (the
 * first round would otherwise include a build): run `npm run build` before.
 */
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

/** Milliseconds from spawning `argv` (plus `--socket`) to the socket existing; the process group is then ended. */
async function timeToListening(argv: string[]): Promise<number> {
  const dir = mkdtempSync(path.join(tmpdir(), 'sds-bench-start-'));
  const socket = path.join(dir, 'run', 'sds.sock');
  const started = performance.now();
  const child = spawn(argv[0]!, [...argv.slice(1), '--socket', socket], {
    cwd: REPO_ROOT,
    env: { ...process.env, XDG_DATA_HOME: path.join(dir, 'data') },
    stdio: 'ignore',
    detached: true, // npm runs the server in a child shell: end the whole group
  });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  try {
    // Polling, because the event is a file appearing in a directory that does not exist yet.
    while (!existsSync(socket)) {
      if (child.exitCode !== null) throw new Error(`${argv.join(' ')} exited (${child.exitCode}) before listening`);
      await new Promise((r) => setTimeout(r, 10));
    }
    return performance.now() - started;
  } finally {
    try {
      process.kill(-child.pid!, 'SIGTERM');
    } catch {
      // already gone
    }
    await exited;
    rmSync(dir, { recursive: true, force: true });
  }
}

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
};

const { values } = parseArgs({ options: { rounds: { type: 'string', default: '3' } } });
const rounds = Number(values.rounds);
const variants: Record<string, string[]> = {
  'npm start': ['npm', 'start', '--'],
  'node dist/cli/main.js': [process.execPath, 'dist/cli/main.js'],
  // What npm start did before its prestart learned to skip a current dist/: a full build on every
  // start (now the esbuild bundle; it was a whole tsc build, about 50 s on this loaded machine).
  'full build + start': ['sh', '-c', 'node scripts/build.mjs && exec node dist/cli/main.js "$@"', 'sh'],
};
const results: Record<string, number[]> = Object.fromEntries(Object.keys(variants).map((k) => [k, []]));
for (let round = 1; round <= rounds; round++) {
  for (const [name, argv] of Object.entries(variants)) {
    const ms = await timeToListening(argv);
    results[name]!.push(ms);
    console.log(`round ${round}: ${name.padEnd(24)} ${(ms / 1000).toFixed(2)} s`);
  }
}
const load = readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ');
for (const [name, xs] of Object.entries(results)) console.log(`median ${name.padEnd(24)} ${(median(xs) / 1000).toFixed(2)} s over ${xs.length} rounds`);
console.log(`load average: ${load}`);
