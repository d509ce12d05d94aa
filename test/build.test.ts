import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFile, execFileSync, spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs/promises';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import { fileURLToPath } from 'node:url';
import { X509Certificate } from 'node:crypto';
import { SdsTestClient, decodeSecret, envoyNode } from './helpers/sds-client.js';
import { rootCa } from './helpers/identities.js';
import { issueLeaf } from '../src/x509/issue.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const FRONT = 'spiffe://example.org/front';

/**
 * What `bin` runs: the esbuild bundle of scripts/build.mjs (chunks loaded with import(), the proto
 * root as JSON, koffi external). Built into a temporary copy laid out like the package (dist/ next
 * to proto/ and package.json), so this test does not touch the checkout's dist/.
 */
describe('the built program (npm run build)', () => {
  let dir: string;
  let main: string;
  const children: ChildProcess[] = [];

  beforeAll(async () => {
    await fs.mkdir(path.join(ROOT, '.tmp'), { recursive: true });
    dir = await fs.mkdtemp(path.join(ROOT, '.tmp', 'build-test-'));
    execFileSync(process.execPath, [path.join(ROOT, 'scripts', 'build.mjs'), path.join(dir, 'dist')], { stdio: 'pipe' });
    await fs.symlink(path.join(ROOT, 'proto'), path.join(dir, 'proto'));
    await fs.copyFile(path.join(ROOT, 'package.json'), path.join(dir, 'package.json'));
    main = path.join(dir, 'dist', 'cli', 'main.js');
  }, 120_000);

  afterAll(async () => {
    for (const c of children) if (c.exitCode === null) c.kill('SIGKILL');
    await fs.rm(dir, { recursive: true, force: true });
  });

  /** Starts the built server; resolves once it logs that every secret is ready. */
  async function serve(args: string[]): Promise<ChildProcess> {
    const child = spawn(process.execPath, [main, ...args, '--log-format', 'text'], { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] });
    children.push(child);
    let out = '';
    await new Promise<void>((resolve, reject) => {
      const onData = (c: Buffer): void => {
        out += c.toString();
        if (out.includes('all secrets ready')) resolve();
      };
      child.stdout!.on('data', onData);
      child.stderr!.on('data', onData);
      child.once('exit', (code) => reject(new Error(`exited ${code}:\n${out}`)));
    });
    return child;
  }

  async function stop(child: ChildProcess): Promise<number | null> {
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    child.kill('SIGTERM');
    return exited;
  }

  it('bundles into dist/cli with the proto root as JSON and prints the package version', async () => {
    const files = await fs.readdir(path.join(dir, 'dist', 'cli'));
    expect(files).toContain('main.js');
    expect(files).toContain('main.js.map');
    expect(files).toContain('proto-root.json');
    const { stdout } = await promisify(execFile)(process.execPath, [main, '--version']);
    expect(stdout.trim()).toBe((JSON.parse(readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { version: string }).version);
  });

  it('serves an identity from files, and the fetch subcommand (a lazily loaded chunk) reads it', async () => {
    const ca = await rootCa('example.org');
    const leaf = await issueLeaf(ca, { spiffeId: FRONT });
    await fs.writeFile(path.join(dir, 'tls.crt'), leaf.chainPem);
    await fs.writeFile(path.join(dir, 'tls.key'), leaf.keyPem, { mode: 0o600 });
    const socket = path.join(dir, 'files.sock');
    const child = await serve(['--cert', 'tls.crt', '--key', 'tls.key', '--socket', socket]);
    const client = new SdsTestClient(socket);
    const res = await client.fetch({ node: envoyNode(), resource_names: [FRONT] });
    client.close();
    expect(new X509Certificate(decodeSecret(res.resources[0]!).tls_certificate!.certificate_chain!.inline_bytes!).serialNumber).toBe(leaf.serialNumber);
    const { stdout } = await promisify(execFile)(process.execPath, [main, 'fetch', FRONT, '--socket', socket]);
    expect(stdout).toContain(`secret ${FRONT}`);
    expect(stdout).toContain(leaf.serialNumber);
    expect(await stop(child)).toBe(0);
  });

  it('issues its default identity from the embedded CA, and again from a kept root after a restart', async () => {
    const socket = path.join(dir, 'ca.sock');
    const dataDir = path.join(dir, 'ca-data');
    const serials: string[] = [];
    let rootSerial: string | undefined;
    for (let start = 0; start < 2; start++) {
      const child = await serve(['--socket', socket, '--data-dir', dataDir]);
      const client = new SdsTestClient(socket);
      const res = await client.fetch({ node: envoyNode(), resource_names: ['spiffe://example.org/sds-server'] });
      client.close();
      const cert = new X509Certificate(decodeSecret(res.resources[0]!).tls_certificate!.certificate_chain!.inline_bytes!);
      const root = new X509Certificate(await fs.readFile(path.join(dataDir, 'ca.crt')));
      expect(cert.subjectAltName).toBe('URI:spiffe://example.org/sds-server');
      expect(cert.verify(root.publicKey)).toBe(true);
      rootSerial ??= root.serialNumber;
      expect(root.serialNumber).toBe(rootSerial);
      serials.push(cert.serialNumber);
      expect(await stop(child)).toBe(0);
    }
    expect(serials[0]).not.toBe(serials[1]);
  });
});
