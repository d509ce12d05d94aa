/**
 * examples/config runs as shipped: scripts/examples/config-certs.ts (the command its README gives)
 * makes every certificate and key its sds-server.yaml names, `sds-server check --config` gives it a
 * clean bill, and the server started from it serves the certificate the script made. The config is
 * copied into a temp folder with its certificates (the script's DIR argument); only the socket
 * path and the admin address differ from the shipped file, so this test shares nothing with others.
 */
import { execFileSync } from 'node:child_process';
import { copyFile, mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startApp, type RunningApp } from '../src/cli/app.js';
import { checkMain } from '../src/cli/check-command.js';
import { parseConfigFile } from '../src/cli/config.js';
import { silentLogger } from '../src/core/logger.js';
import { SECRET_TYPE_URL, SdsTestClient, decodeSecret, envoyNode } from './helpers/sds-client.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const FRONT = 'spiffe://example.org/front';

describe('examples/config runs as shipped once scripts/examples/config-certs.ts made its certificates', () => {
  let dir: string;
  let configFile: string;
  let app: RunningApp | undefined;
  let client: SdsTestClient | undefined;

  beforeAll(async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'sds-example-config-'));
    configFile = path.join(dir, 'sds-server.yaml');
    await copyFile(path.join(ROOT, 'examples', 'config', 'sds-server.yaml'), configFile);
    const readme = await readFile(path.join(ROOT, 'examples', 'config', 'README.md'), 'utf8');
    expect(readme).toContain('npx tsx scripts/examples/config-certs.ts');
    execFileSync('npx', ['tsx', 'scripts/examples/config-certs.ts', dir], { cwd: ROOT, encoding: 'utf8', timeout: 60_000 });
  }, 90_000);

  afterAll(async () => {
    client?.close();
    await app?.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('every file the config names exists; keys are 0600', async () => {
    const config = parseConfigFile(await readFile(configFile, 'utf8'), configFile);
    const files = [...config.certificates.flatMap((c) => [c.cert, c.key]), ...config.bundles.flatMap((b) => b.ca)];
    expect(files.length).toBe(7);
    for (const file of files) expect((await stat(file)).isFile(), file).toBe(true);
    for (const c of config.certificates) expect((await stat(c.key)).mode & 0o777, c.key).toBe(0o600);
  });

  it('`sds-server check --config` exits 0 with no problem (and prints no key)', async () => {
    let out = '';
    const code = await checkMain(['--config', configFile], (s) => (out += s));
    expect(out).not.toMatch(/PRIVATE KEY|PROBLEM/);
    expect(code, out).toBe(0);
  });

  it(`the server started from it serves ${FRONT}: the chain the script wrote`, async () => {
    const config = parseConfigFile(await readFile(configFile, 'utf8'), configFile);
    config.socket.path = path.join(dir, 'sds.sock');
    delete config.admin; // 127.0.0.1:15001 in the file: not a fixed port in a test
    app = await startApp(config, silentLogger);
    client = new SdsTestClient(app.socketPath, 'v3');
    const res = await client.fetch({ node: envoyNode({ id: 'front' }), resource_names: [FRONT], type_url: SECRET_TYPE_URL.v3 });
    expect(res.resources).toHaveLength(1);
    const secret = decodeSecret(res.resources[0]!);
    expect(secret.name).toBe(FRONT);
    const chain = Buffer.from(secret.tls_certificate?.certificate_chain?.inline_bytes ?? []).toString('utf8');
    expect(chain).toBe(await readFile(path.join(dir, 'certs', 'front', 'tls.crt'), 'utf8'));
  });
});
