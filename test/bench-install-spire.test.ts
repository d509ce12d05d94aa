import { afterEach, describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

// scripts/bench/spire/install-spire.sh: what `npm run bench -- --peer spire` runs first. The real
// build (minutes, network) is not run here; these check the two paths that must not need it.
const SCRIPT = fileURLToPath(new URL('../scripts/bench/spire/install-spire.sh', import.meta.url));

const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) fs.rmSync(d, { recursive: true, force: true });
});

function toolsDir(): string {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), 'install-spire-'));
  dirs.push(d);
  return d;
}

/** A PATH with bash and coreutils but no `go` (Go lives in /usr/local/go/bin or ~/go/bin when installed). */
function pathWithoutGo(): string {
  return (process.env.PATH ?? '/usr/bin:/bin')
    .split(':')
    .filter((dir) => dir && !fs.existsSync(path.join(dir, 'go')))
    .join(':');
}

describe('install-spire.sh', () => {
  it('fails with exit 127 and a message naming Go and where to put binaries when Go is missing', () => {
    const dest = toolsDir();
    const r = spawnSync('bash', [SCRIPT], { env: { PATH: pathWithoutGo(), SPIRE_TOOLS_DIR: dest }, encoding: 'utf8' });
    expect(r.status).toBe(127);
    expect(r.stderr).toContain('Go is not installed');
    expect(r.stderr).toContain('1.13.3');
    expect(r.stderr).toContain(path.join(dest, 'bin'));
    // Nothing half-built is left behind.
    expect(fs.readdirSync(dest)).toEqual([]);
  });

  it('reuses spire-server and spire-agent already in the tools folder without calling Go', () => {
    const dest = toolsDir();
    fs.mkdirSync(path.join(dest, 'bin'));
    for (const b of ['spire-server', 'spire-agent']) fs.writeFileSync(path.join(dest, 'bin', b), '#!/bin/sh\n', { mode: 0o755 });
    const r = spawnSync('bash', [SCRIPT], { env: { PATH: pathWithoutGo(), SPIRE_TOOLS_DIR: dest }, encoding: 'utf8' });
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    expect(r.stdout).toContain(`reusing SPIRE 1.13.3 in ${path.join(dest, 'bin')}`);
  });
});
