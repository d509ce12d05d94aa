/**
 * `npm run demo` (scripts/demo/run-demo.ts) end to end, with real Envoy: the program itself is run
 * as a child process and its output parsed. Short certificate lifetimes make several rotations
 * land within seconds; traffic must go on across them with not one failed request. Without Envoy
 * this is skipped (with one line saying how to get it), except under CI, where it fails.
 */
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { expect, it } from 'vitest';
import type { DemoSummary } from '../scripts/demo/demo.js';
import { REPO_ROOT, describeWithEnvoy } from './envoy/find-envoy.js';
import { httpRequest } from './envoy/harness.js';

const RUN_DEMO = path.join(REPO_ROOT, 'scripts', 'demo', 'run-demo.ts');

interface DemoRun {
  code: number | null;
  lines: string[];
  summary: DemoSummary | undefined;
}

/** Runs the demo; `whenLine` may act on the output (e.g. send Ctrl-C). */
function runDemo(args: string[], env: NodeJS.ProcessEnv, whenLine?: (line: string, kill: (signal: NodeJS.Signals) => void) => void): Promise<DemoRun> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', RUN_DEMO, ...args], { cwd: REPO_ROOT, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    const lines: string[] = [];
    let partial = '';
    const kill = (signal: NodeJS.Signals): void => void child.kill(signal);
    const collect = (data: Buffer): void => {
      const parts = (partial + data.toString('utf8')).split('\n');
      partial = parts.pop() ?? '';
      for (const line of parts) {
        lines.push(line);
        whenLine?.(line, kill);
      }
    };
    child.stdout.on('data', collect);
    child.stderr.on('data', collect);
    const guard = setTimeout(() => child.kill('SIGKILL'), 80_000);
    child.once('error', reject);
    child.once('exit', (code) => {
      clearTimeout(guard);
      if (partial) lines.push(partial);
      const summaryLine = lines.find((l) => l.startsWith('summary: '));
      resolve({ code, lines, summary: summaryLine ? (JSON.parse(summaryLine.slice('summary: '.length)) as DemoSummary) : undefined });
    });
  });
}

const show = (run: DemoRun): string => `exit ${run.code}; output:\n${run.lines.join('\n')}`;

it('rejects a lifetime too short to rotate (before looking for Envoy)', async () => {
  const run = await runDemo(['--lifetime', '1s', '--duration', '1'], {});
  expect(run.code, show(run)).toBe(2);
  expect(run.lines.join('\n')).toContain('--lifetime expects a duration of at least 4s');
});

describeWithEnvoy('npm run demo: the mesh of docker-compose.yml as local processes with real Envoy', (envoyBin) => {
  it('keeps 10 requests/s flowing front -> back over mTLS across certificate rotations, with zero failures', async () => {
    const run = await runDemo(['--duration', '12', '--lifetime', '6s'], { ENVOY_BIN: envoyBin });
    const summary = run.summary;
    expect(summary, show(run)).toBeDefined();
    if (!summary) return;
    expect(run.code, show(run)).toBe(0);
    expect(summary.stoppedBy).toBe('duration');
    expect(summary.requests.failed, show(run)).toBe(0);
    expect(summary.requests.ok, show(run)).toBeGreaterThanOrEqual(80);
    // A 6 s lifetime is renewed every ~3 s: each Envoy sees at least one new certificate, and
    // requests kept succeeding after the first one landed.
    expect(summary.rotations.front, show(run)).toBeGreaterThanOrEqual(1);
    expect(summary.rotations.back, show(run)).toBeGreaterThanOrEqual(1);
    expect(summary.okAfterFirstRotation, show(run)).toBeGreaterThan(0);
    expect(run.lines.some((l) => /ROTATION (front|back) Envoy now holds serial/.test(l)), show(run)).toBe(true);
    // Every request was its own mTLS handshake at the back Envoy; none failed.
    expect(summary.handshakes).toBeGreaterThanOrEqual(summary.requests.ok - 20);
    expect(summary.connectionErrors, show(run)).toBe(0);
    // The per-second operator view.
    const status = run.lines.filter((l) => /requests ok \d+ \(\+\d+\) failed 0 \| back Envoy ssl\.handshake \d+/.test(l));
    expect(status.length, show(run)).toBeGreaterThanOrEqual(10);
    expect(status.at(-1)).toMatch(/certs front [0-9a-f]{6}…[0-9a-f]{4} exp \d\d:\d\d:\d\dZ \(\d+s\), back /);
    // Stopped cleanly: socket and temp dir gone.
    expect(summary.cleanedUp).toBe(true);
    expect(existsSync(summary.socketPath)).toBe(false);
    expect(existsSync(path.dirname(summary.socketPath))).toBe(false);
  }, 90_000);

  it('Ctrl-C (SIGINT) stops the server, both Envoys and both apps, and removes the socket', async () => {
    let sent = false;
    const run = await runDemo(['--lifetime', '30s'], { ENVOY_BIN: envoyBin }, (line, kill) => {
      if (!sent && /requests ok \d+ \(\+\d+\)/.test(line)) {
        sent = true;
        kill('SIGINT');
      }
    });
    const summary = run.summary;
    expect(summary, show(run)).toBeDefined();
    if (!summary) return;
    expect(run.code, show(run)).toBe(0);
    expect(summary.stoppedBy).toBe('signal');
    expect(summary.requests.failed).toBe(0);
    expect(summary.cleanedUp).toBe(true);
    expect(existsSync(summary.socketPath)).toBe(false);
    // Nothing answers any more on the admin ports the demo printed.
    const ports = run.lines.flatMap((l) => [...l.matchAll(/http:\/\/127\.0\.0\.1:(\d+)\/(?:certs|status)/g)].map((m) => Number(m[1])));
    expect(ports).toHaveLength(3);
    for (const port of ports) await expect(httpRequest({ port, path: '/', timeoutMs: 1000 })).rejects.toThrow();
  }, 60_000);
});
