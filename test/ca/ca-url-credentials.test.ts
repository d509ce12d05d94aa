import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs/promises';
import net, { type AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { redactUrlCredentials } from '../../src/core/redact-url.js';
import { AwsPcaBackend } from '../../src/ca/aws-pca/aws-pca-backend.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const MAIN = path.join(ROOT, 'src', 'cli', 'main.ts');
const PASSWORD = 'hunter2secret';

/** A loopback port that nothing listens on (bound, then closed). */
async function closedPort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

describe('redactUrlCredentials', () => {
  it.each([
    ['https://user:hunter2secret@ca.internal:8888/api', 'https://user:***@ca.internal:8888/api'],
    ['cfssl at http://u:p%40ss@127.0.0.1:1/x is unreachable', 'cfssl at http://u:***@127.0.0.1:1/x is unreachable'],
    ['https://:onlypass@host/', 'https://:***@host/'],
    ['https://user@host/ has no password', 'https://user@host/ has no password'],
    ['https://host:8888/plain', 'https://host:8888/plain'],
    ['two: http://a:b@h1/ and https://c:d@h2/', 'two: http://a:***@h1/ and https://c:***@h2/'],
  ])('%s', (input, expected) => {
    expect(redactUrlCredentials(input)).toBe(expected);
  });
});

describe('a cfssl url with a password, CA unreachable (real program)', () => {
  let dir: string;
  let child: ChildProcess | undefined;
  beforeEach(async () => {
    dir = await fs.mkdtemp(path.join(os.tmpdir(), 'sds-cfssl-cred-'));
  });
  afterEach(async () => {
    if (child && child.exitCode === null) {
      child.kill('SIGKILL');
      await new Promise((resolve) => child!.once('exit', resolve));
    }
    child = undefined;
    await fs.rm(dir, { recursive: true, force: true });
  });

  it('never puts the password in a log line or in /status lastError.message', async () => {
    const caPort = await closedPort();
    const adminPort = await closedPort();
    const file = path.join(dir, 'sds.yaml');
    await fs.writeFile(
      file,
      [
        `socket: { path: ${path.join(dir, 'sds.sock')} }`,
        `admin: { address: "127.0.0.1:${adminPort}" }`,
        'log: { level: debug }',
        'ca:',
        '  backend: cfssl',
        '  trustDomain: example.org',
        `  cfssl: { url: "http://user:${PASSWORD}@127.0.0.1:${caPort}/" }`,
        '  backoff: { initialMs: 50, maxMs: 100 }',
        '  timeoutMs: 1000',
        'identities:',
        '  - { spiffeId: "spiffe://example.org/web" }',
      ].join('\n'),
    );
    let output = '';
    child = spawn(process.execPath, ['--import', 'tsx', MAIN, '--config', file], { cwd: ROOT });
    child.stdout!.on('data', (c: Buffer) => (output += c.toString()));
    child.stderr!.on('data', (c: Buffer) => (output += c.toString()));

    // Wait until the CA failure is in /status (several retries have been logged by then).
    const deadline = Date.now() + 20_000;
    let statusText = '';
    let failures = 0;
    while (Date.now() < deadline) {
      try {
        const res = await fetch(`http://127.0.0.1:${adminPort}/status`);
        statusText = await res.text();
      } catch {
        statusText = '';
      }
      failures = output.split('\n').filter((l) => l.includes('SDS_ERR_CA_UNAVAILABLE')).length;
      if (statusText.includes('SDS_ERR_CA_UNAVAILABLE') && failures >= 2) break;
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    expect(statusText).toContain('SDS_ERR_CA_UNAVAILABLE');
    expect(failures).toBeGreaterThanOrEqual(2);
    // The URL is still named (the operator must find the entry), with the password masked.
    expect(statusText).toContain(`http://user:***@127.0.0.1:${caPort}/`);
    expect(output).toContain(`http://user:***@127.0.0.1:${caPort}/`);
    expect(statusText).not.toContain(PASSWORD);
    expect(output).not.toContain(PASSWORD);
  }, 30_000);
});

describe('an aws-pca endpoint with a password, unreachable', () => {
  it('the sign error names the CA and the cause, never the password', async () => {
    const saved = { id: process.env.AWS_ACCESS_KEY_ID, secret: process.env.AWS_SECRET_ACCESS_KEY };
    // Static test credentials: the SDK signs before it connects; nothing leaves loopback.
    process.env.AWS_ACCESS_KEY_ID = 'AKIDEXAMPLE';
    process.env.AWS_SECRET_ACCESS_KEY = 'test-secret';
    try {
      const backend = new AwsPcaBackend({
        certificateAuthorityArn: 'arn:aws:acm-pca:us-east-1:123456789012:certificate-authority/test',
        region: 'us-east-1',
        endpoint: `http://user:${PASSWORD}@127.0.0.1:${await closedPort()}`,
      });
      const err = (await backend.sign({ csrPem: 'unused', spiffeId: 'spiffe://example.org/web', dnsNames: [], lifetimeSeconds: 60 }, AbortSignal.timeout(5000)).catch((e: unknown) => e)) as Error;
      await backend.close();
      expect(err.message).toContain('IssueCertificate failed');
      expect(err.message).not.toContain(PASSWORD);
    } finally {
      if (saved.id === undefined) delete process.env.AWS_ACCESS_KEY_ID;
      else process.env.AWS_ACCESS_KEY_ID = saved.id;
      if (saved.secret === undefined) delete process.env.AWS_SECRET_ACCESS_KEY;
      else process.env.AWS_SECRET_ACCESS_KEY = saved.secret;
    }
  });
});

