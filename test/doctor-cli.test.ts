import http from 'node:http';
import type { AddressInfo } from 'node:net';
/**
 * The operator commands end to end against a real sds-server (real files, real admin HTTP, real
 * Unix socket): GET /certificates (public material only), and the real `sds-server` program's
 * `doctor`, `check` and `fetch` subcommands with their exit codes.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawn } from 'node:child_process';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { startApp, type RunningApp } from '../src/cli/app.js';
import { defaultConfig } from '../src/cli/config.js';
import { silentLogger } from '../src/core/logger.js';
import type { CertificatesView } from '../src/ops/certificates-view.js';
import type { DoctorReport } from '../src/ops/doctor.js';
import { createRootCa, issueLeaf, type IssuedLeaf } from '../src/x509/issue.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const MAIN = path.join(ROOT, 'src', 'cli', 'main.ts');
const SERVER = 'spiffe://example.org/server';
const CLIENT = 'spiffe://example.org/client';
const TD = 'spiffe://example.org';

/** Runs the real `sds-server` program to completion. */
function run(args: string[], env: NodeJS.ProcessEnv = {}): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, ['--import', 'tsx', MAIN, ...args], { cwd: ROOT, env: { ...process.env, ...env } });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    child.once('exit', (code) => resolve({ code, stdout, stderr }));
  });
}

const keyBody = (keyPem: string): string => keyPem.split('\n').filter((l) => l && !l.startsWith('-----')).join('');

describe('operator commands against a real sds-server', () => {
  let dir: string;
  let app: RunningApp;
  let configFile: string;
  let server: IssuedLeaf;
  let client: IssuedLeaf;
  const write = (name: string, text: string): Promise<void> => fs.writeFile(path.join(dir, name), text);

  beforeAll(async () => {
    dir = await fs.mkdtemp(path.join(os.tmpdir(), 'sds-doctor-'));
    const ca = await createRootCa({ commonName: 'example.org root', trustDomain: 'example.org' });
    server = await issueLeaf(ca, { spiffeId: SERVER, dnsNames: ['server.example.org'] });
    client = await issueLeaf(ca, { spiffeId: CLIENT });
    await Promise.all([write('ca.pem', ca.certPem), write('server.crt', server.chainPem), write('server.key', server.keyPem), write('client.crt', client.chainPem), write('client.key', client.keyPem)]);
    configFile = path.join(dir, 'sds.yaml');
    await write(
      'sds.yaml',
      [
        `socket: { path: ${path.join(dir, 'sds.sock')} }`,
        'certificates:',
        `  - { name: "${SERVER}", cert: server.crt, key: server.key }`,
        `  - { name: "${CLIENT}", cert: client.crt, key: client.key }`,
        'bundles:',
        `  - { name: "${TD}", ca: [ca.pem], trustDomain: example.org }`,
        '',
      ].join('\n'),
    );
    const config = defaultConfig();
    config.socket.path = path.join(dir, 'sds.sock');
    config.admin = { host: '127.0.0.1', port: 0 };
    config.watch.pollIntervalMs = 0;
    config.certificates = [
      { name: SERVER, cert: path.join(dir, 'server.crt'), key: path.join(dir, 'server.key'), names: [] },
      { name: CLIENT, cert: path.join(dir, 'client.crt'), key: path.join(dir, 'client.key'), names: [] },
    ];
    config.bundles = [{ name: TD, ca: [path.join(dir, 'ca.pem')], trustDomain: 'example.org', names: [] }];
    app = await startApp(config, silentLogger);
  });
  afterAll(async () => {
    await app?.stop();
    await fs.rm(dir, { recursive: true, force: true });
  });

  it('GET /certificates serves chains, roots and the admin clock, and never a private key', async () => {
    const before = Date.now();
    const res = await fetch(`http://${app.adminAddress}/certificates`);
    const text = await res.text();
    expect(res.status).toBe(200);
    const view = JSON.parse(text) as CertificatesView;
    expect(new Date(view.now).getTime()).toBeGreaterThanOrEqual(before - 1000);
    expect(view.certificates.map((c) => [c.name, c.chain[0]?.serialNumber])).toEqual([
      [SERVER, server.serialNumber],
      [CLIENT, client.serialNumber],
    ]);
    expect(view.certificates[0]?.chain[0]).toMatchObject({ uris: [SERVER], dnsNames: ['server.example.org'], keyType: 'EC P-256' });
    expect(view.bundles[0]?.trustDomains[0]?.roots[0]?.subject).toContain('example.org root');
    expect(text).not.toMatch(/PRIVATE KEY/);
    for (const key of [server.keyPem, client.keyPem]) {
      expect(text).not.toContain(keyBody(key));
      expect(text).not.toContain(keyBody(key).slice(0, 40));
    }
  });

  it('doctor --admin gives a healthy setup a clean bill (exit 0), in text and JSON', async () => {
    const textRun = await run(['doctor', '--admin', app.adminAddress!]);
    expect(textRun.stderr).toBe('');
    expect(textRun.code).toBe(0);
    expect(textRun.stdout).toContain('sds-server doctor: OK (0 problem(s), 0 warning(s))');
    const jsonRun = await run(['doctor', '--admin', app.adminAddress!, '--client', CLIENT, '--server', SERVER, '--expect-san', 'server.example.org', '--json']);
    expect(jsonRun.code).toBe(0);
    expect((JSON.parse(jsonRun.stdout) as DoctorReport).findings).toEqual([]);
  });

  it('doctor --client/--server exits 1 and names a SAN mismatch', async () => {
    const r = await run(['doctor', '--admin', app.adminAddress!, '--client', CLIENT, '--server', SERVER, '--expect-san', 'front.apps.local']);
    expect(r.code).toBe(1);
    expect(r.stdout).toContain(`PROBLEM [san-mismatch] ${CLIENT} -> ${SERVER}`);
    expect(r.stdout).toContain('expected: front.apps.local');
    expect(r.stdout).toContain(`present: URI:${SERVER}, DNS:server.example.org`);
  });

  it('doctor with bad arguments exits 2', async () => {
    expect((await run(['doctor', '--client', CLIENT])).code).toBe(2);
  });

  it('doctor and status agree on admin addresses: a refused port names ECONNREFUSED (a problem found, exit 1, SDS_ERR_ADMIN_UNREACHABLE), another program\'s JSON is named as such, a malformed address is a usage error', async () => {
    const other = http.createServer((_req, res) => res.end('{}'));
    await new Promise<void>((resolve) => other.listen(0, '127.0.0.1', resolve));
    const port = (other.address() as AddressInfo).port;
    try {
      const wrong = await run(['doctor', '--admin', `http://127.0.0.1:${port}/`]);
      expect(wrong.code).toBe(1);
      expect(wrong.stdout).toContain('is not an sds-server /certificates report');
      expect(wrong.stdout).not.toContain('looks like an Envoy admin');
      expect(wrong.stdout + wrong.stderr).not.toContain('TypeError');
    } finally {
      other.close();
    }
    const refused = await run(['doctor', '--admin', `127.0.0.1:${port}`]);
    expect(refused.code).toBe(1);
    expect(refused.stdout).toContain('SDS_ERR_ADMIN_UNREACHABLE');
    expect(refused.stdout).toContain('ECONNREFUSED');
    expect(refused.stdout).not.toContain('SDS_ERR_CONFIG_INVALID');
    const refusedJson = await run(['doctor', '--admin', `127.0.0.1:${port}`, '--json']);
    expect(refusedJson.code).toBe(1);
    expect((JSON.parse(refusedJson.stdout) as DoctorReport).findings.map((f) => f.cause)).toEqual(['admin-unreachable']);
    expect((await run(['doctor', '--admin', 'garbage'])).code).toBe(2);
    const status = await run(['status', '--admin', `http://127.0.0.1:${port}`]);
    expect(status.code).toBe(1);
    expect(status.stderr).toContain('ECONNREFUSED');
    expect((await run(['status', '--admin', 'garbage'])).code).toBe(2);
  });

  it('check --config: exit 0 for good files, 2 naming the file for a broken one', async () => {
    const good = await run(['check', '--config', configFile]);
    expect(good.code).toBe(0);
    expect(good.stdout).toContain(`ok      certificate ${SERVER}: serial ${server.serialNumber}`);
    const badConfig = path.join(dir, 'bad.yaml');
    await fs.writeFile(badConfig, (await fs.readFile(configFile, 'utf8')).replace('client.key', 'missing.key'));
    const bad = await run(['check', '--config', badConfig]);
    expect(bad.code).toBe(2);
    expect(bad.stdout).toMatch(/error {3}SDS_ERR_FILE_MISSING: .*missing\.key/);
    expect(bad.stdout).not.toContain(keyBody(server.keyPem).slice(0, 40));
  });

  it('fetch prints the summary of a certificate and of a bundle, never the key', async () => {
    const leaf = await run(['fetch', SERVER, '--socket', app.socketPath]);
    expect(leaf.stderr).toBe('');
    expect(leaf.code).toBe(0);
    expect(leaf.stdout).toContain(`serial:      ${server.serialNumber}`);
    expect(leaf.stdout).toContain(`SANs:        URI:${SERVER}, DNS:server.example.org`);
    expect(leaf.stdout).toMatch(/SHA-256: {5}([0-9A-F]{2}:){31}[0-9A-F]{2}/);
    expect(leaf.stdout).not.toMatch(/PRIVATE KEY/);
    expect(leaf.stdout).not.toContain(keyBody(server.keyPem).slice(0, 40));
    const bundle = await run(['fetch', TD, '--socket', app.socketPath, '--json']);
    expect(bundle.code).toBe(0);
    expect(JSON.parse(bundle.stdout)).toMatchObject({ name: TD, kind: 'validation-context' });
    expect(bundle.stdout).toContain('example.org root');
    const missing = await run(['fetch', 'spiffe://example.org/nobody', '--socket', app.socketPath, '--timeout', '3000']);
    expect(missing.code).toBe(1);
  });

  it('fetch without --socket uses the server\'s own default: $APPMESH_SDS_SOCKET_PATH, else $XDG_RUNTIME_DIR/sds-server/sds.sock', async () => {
    const viaEnv = await run(['fetch', SERVER], { APPMESH_SDS_SOCKET_PATH: app.socketPath });
    expect(viaEnv.stderr).toBe('');
    expect(viaEnv.code).toBe(0);
    expect(viaEnv.stdout).toContain(`serial:      ${server.serialNumber}`);
    // The per-user default the server listens on when given nothing (here a link to the test's socket).
    const runtime = path.join(dir, 'runtime');
    await fs.mkdir(path.join(runtime, 'sds-server'), { recursive: true, mode: 0o700 });
    await fs.symlink(app.socketPath, path.join(runtime, 'sds-server', 'sds.sock'));
    const viaDefault = await run(['fetch', SERVER], { APPMESH_SDS_SOCKET_PATH: '', XDG_RUNTIME_DIR: runtime });
    expect(viaDefault.stderr).toBe('');
    expect(viaDefault.code).toBe(0);
    expect(viaDefault.stdout).toContain(`serial:      ${server.serialNumber}`);
  });
});
