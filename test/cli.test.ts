import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { X509Certificate } from 'node:crypto';
import { SdsTestClient, decodeSecret, envoyNode } from './helpers/sds-client.js';
import { rootCa } from './helpers/identities.js';
import { issueLeaf } from '../src/x509/issue.js';
import { parseCommandLine } from '../src/cli/args.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const MAIN = path.join(ROOT, 'src', 'cli', 'main.ts');
const FRONT = 'spiffe://example.org/front';

interface Running {
  child: ChildProcess;
  lines: string[];
  exited: Promise<number | null>;
}

/** The real `sds-server` program (run from source through tsx), its stdout lines collected. */
function run(args: string[], env: NodeJS.ProcessEnv = {}): Running {
  const child = spawn(process.execPath, ['--import', 'tsx', MAIN, ...args], { cwd: ROOT, env: { ...process.env, ...env } });
  const lines: string[] = [];
  let buffer = '';
  const collect = (chunk: Buffer): void => {
    buffer += chunk.toString();
    const parts = buffer.split('\n');
    buffer = parts.pop() ?? '';
    lines.push(...parts);
  };
  child.stdout?.on('data', collect);
  child.stderr?.on('data', collect);
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  return { child, lines, exited };
}

async function waitForLine(r: Running, pattern: RegExp, timeoutMs = 15_000): Promise<string> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const line = r.lines.find((l) => pattern.test(l));
    if (line) return line;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  throw new Error(`no line matching ${pattern} in:\n${r.lines.join('\n')}`);
}

describe('the sds-server program', () => {
  let dir: string;
  let running: Running[];

  beforeEach(async () => {
    dir = await fs.mkdtemp(path.join(os.tmpdir(), 'sds-cli-'));
    running = [];
  });
  afterEach(async () => {
    for (const r of running) if (r.child.exitCode === null) r.child.kill('SIGKILL');
    await fs.rm(dir, { recursive: true, force: true });
  });

  async function writeIdentity(): Promise<{ cert: string; key: string; ca: string; serial: string }> {
    const ca = await rootCa('example.org');
    const leaf = await issueLeaf(ca, { spiffeId: FRONT });
    const files = { cert: path.join(dir, 'tls.crt'), key: path.join(dir, 'tls.key'), ca: path.join(dir, 'ca.crt') };
    await fs.writeFile(files.cert, leaf.chainPem);
    await fs.writeFile(files.key, leaf.keyPem, { mode: 0o600 });
    await fs.writeFile(files.ca, ca.certPem);
    return { ...files, serial: leaf.serialNumber };
  }

  it('quick mode serves one identity under its SPIFFE ID and `default`, its bundle under the trust-domain ID and ROOTCA, on APPMESH_SDS_SOCKET_PATH; SIGTERM stops it cleanly', async () => {
    const files = await writeIdentity();
    const socketPath = path.join(dir, 'appmesh', 'sds.sock');
    const r = run(['--cert', files.cert, '--key', files.key, '--ca', files.ca], { APPMESH_SDS_SOCKET_PATH: socketPath });
    running.push(r);
    await waitForLine(r, /all secrets ready/);
    // JSON logs by default, and never a key.
    for (const line of r.lines) expect(() => JSON.parse(line)).not.toThrow();

    const client = new SdsTestClient(socketPath);
    for (const name of [FRONT, 'default']) {
      const res = await client.fetch({ node: envoyNode(), resource_names: [name] });
      const secret = decodeSecret(res.resources[0]!);
      expect(secret.name).toBe(name);
      expect(new X509Certificate(secret.tls_certificate!.certificate_chain!.inline_bytes!).serialNumber).toBe(files.serial);
    }
    for (const name of ['spiffe://example.org', 'ROOTCA']) {
      const res = await client.fetch({ node: envoyNode({ metadata: { disable_spiffe_cert_validation: true } }), resource_names: [name] });
      expect(decodeSecret(res.resources[0]!).validation_context?.trusted_ca?.inline_bytes?.toString()).toBe(await fs.readFile(files.ca, 'utf8'));
    }
    client.close();

    r.child.kill('SIGTERM');
    expect(await r.exited).toBe(0);
    await expect(fs.lstat(socketPath)).rejects.toMatchObject({ code: 'ENOENT' });
    expect(r.lines.join('\n')).not.toContain('PRIVATE KEY');
  });

  it('binds the socket before files exist, holds the request, and answers when they appear', async () => {
    const socketPath = path.join(dir, 'sds.sock');
    const certDir = path.join(dir, 'later');
    const config = path.join(dir, 'sds.yaml');
    await fs.writeFile(
      config,
      [
        'certificates:',
        `  - name: ${FRONT}`,
        '    cert: later/tls.crt',
        '    key: later/tls.key',
        'watch:',
        '  pollIntervalMs: 200',
      ].join('\n'),
    );
    const r = run(['--config', config, '--socket', socketPath, '--log-format', 'text']);
    running.push(r);
    await waitForLine(r, /some secrets are not available yet/);
    const client = new SdsTestClient(socketPath);
    const stream = client.stream();
    stream.send({ node: envoyNode(), resource_names: [FRONT], type_url: client.typeUrl });
    expect(await stream.nothingWithin(300)).toBe(true);

    const ca = await rootCa('example.org');
    const leaf = await issueLeaf(ca, { spiffeId: FRONT });
    await fs.mkdir(certDir);
    await fs.writeFile(path.join(certDir, 'tls.key'), leaf.keyPem);
    await fs.writeFile(path.join(certDir, 'tls.crt'), leaf.chainPem);
    const res = await stream.next(5000);
    expect(new X509Certificate(decodeSecret(res.resources[0]!).tls_certificate!.certificate_chain!.inline_bytes!).serialNumber).toBe(leaf.serialNumber);
    stream.end();
    client.close();
    // Text log format was asked for.
    expect(r.lines.some((l) => / INFO  listening /.test(l))).toBe(true);
    r.child.kill('SIGINT');
    expect(await r.exited).toBe(0);
  });

  it('issues from the embedded CA with nothing configured, keeps its root in the data dir, and rolls it on SIGUSR2', async () => {
    const socketPath = path.join(dir, 'sds.sock');
    const dataDir = path.join(dir, 'ca');
    const r = run(['--socket', socketPath, '--data-dir', dataDir, '--spiffe-id', FRONT]);
    running.push(r);
    await waitForLine(r, /all secrets ready/);
    expect((await fs.stat(path.join(dataDir, 'ca.key'))).mode & 0o777).toBe(0o600);
    const firstRoot = await fs.readFile(path.join(dataDir, 'ca.crt'), 'utf8');
    const client = new SdsTestClient(socketPath);
    const leafOf = async (): Promise<X509Certificate> => {
      const res = await client.fetch({ node: envoyNode(), resource_names: ['default'] });
      return new X509Certificate(decodeSecret(res.resources[0]!).tls_certificate!.certificate_chain!.inline_bytes!);
    };
    expect((await leafOf()).verify(new X509Certificate(firstRoot).publicKey)).toBe(true);

    r.child.kill('SIGUSR2');
    await waitForLine(r, /CA root rollover done/);
    const newRoot = await fs.readFile(path.join(dataDir, 'ca.crt'), 'utf8');
    expect(newRoot).not.toBe(firstRoot);
    const leaf = await leafOf();
    expect(leaf.verify(new X509Certificate(newRoot).publicKey)).toBe(true);
    expect(leaf.subjectAltName).toContain(FRONT);
    client.close();
    r.child.kill('SIGTERM');
    expect(await r.exited).toBe(0);
    expect(r.lines.join('\n')).not.toContain('PRIVATE KEY');
  });

  it('exits with code 2 and names the file and field of every configuration problem', async () => {
    const config = path.join(dir, 'bad.yaml');
    await fs.writeFile(
      config,
      ['bundleFormat: fancy', 'certificates:', '  - name: spiffe://example.org/x', '    cert: a.crt', 'bundles:', '  - name: spiffe://example.org', '    ca: []', 'colour: blue'].join('\n'),
    );
    const r = run(['--config', config]);
    running.push(r);
    expect(await r.exited).toBe(2);
    const out = r.lines.join('\n');
    expect(out).toContain('SDS_ERR_CONFIG_INVALID');
    expect(out).toContain(`${config}: bundleFormat: expected one of auto, spiffe, trusted-ca, got string "fancy"`);
    expect(out).toContain(`${config}: certificates[0].key: is required`);
    expect(out).toContain(`${config}: bundles[0].ca: must name at least one CA file`);
    expect(out).toContain(`${config}: colour: unknown field`);
  });
});

describe('command-line parsing', () => {
  it('rejects --cert without --key and unknown flags with a clear message', () => {
    expect(() => parseCommandLine(['--cert', 'a.crt'], {})).toThrow(/--cert\/--key: both are required/);
    expect(() => parseCommandLine(['--colour', 'blue'], {})).toThrow(/Unknown option '--colour'/);
    expect(() => parseCommandLine(['--socket-mode', '999'], {})).toThrow(/--socket-mode: expected an octal file mode/);
  });

  it('takes the embedded identity from --trust-domain / --spiffe-id and the socket from the environment', () => {
    const cmd = parseCommandLine(['--spiffe-id', 'spiffe://corp.test/web', '--cert-lifetime', '90s'], { APPMESH_SDS_SOCKET_PATH: '/run/sds.sock', XDG_DATA_HOME: '/data' });
    expect(cmd.kind).toBe('run');
    if (cmd.kind !== 'run') return;
    expect(cmd.config.ca.backend).toBe('embedded');
    expect(cmd.config.ca.trustDomain).toBe('corp.test');
    expect(cmd.config.ca.embedded.dataDir).toBe('/data/sds-server/ca/corp.test');
    expect(cmd.config.identities).toEqual([{ spiffeId: 'spiffe://corp.test/web', dnsNames: [], keyType: 'ec-p256', lifetimeSeconds: 90, names: [] }]);
    expect(cmd.config.socket.path).toBe('/run/sds.sock');
    expect(cmd.config.certificates).toEqual([]);
  });
});

describe('CA configuration', () => {
  it('names the field of every CA and identity problem', async () => {
    const { parseConfigFile } = await import('../src/cli/config.js');
    const text = [
      'ca:',
      '  backend: vault',
      '  trustDomain: Example.ORG',
      '  awsPca: { certificateAuthorityArn: nope }',
      'identities:',
      '  - spiffeId: spiffe://other.test/web',
      '  - spiffeId: spiffe://example.org/api',
      '    lifetime: forever',
      '    keyType: dsa',
    ].join('\n');
    let message = '';
    try {
      parseConfigFile(text, 'ca.yaml');
    } catch (err) {
      message = (err as Error).message;
    }
    expect(message).toContain('ca.yaml: ca.backend: expected one of embedded, aws-pca, cfssl, got string "vault"');
    expect(message).toContain('ca.yaml: ca.trustDomain: "Example.ORG" is not a valid trust domain name');
    expect(message).toContain('ca.yaml: ca.awsPca.certificateAuthorityArn: expected an ACM PCA ARN');
    expect(message).toContain('ca.yaml: identities[0].spiffeId: "spiffe://other.test/web" is not in the CA\'s trust domain example.org');
    expect(message).toContain('ca.yaml: identities[1].lifetime: expected a duration');
    expect(message).toContain('ca.yaml: identities[1].keyType: expected one of ec-p256, ec-p384, rsa-2048');
  });

  it('reads a valid CA configuration with durations and backend options', async () => {
    const { parseConfigFile } = await import('../src/cli/config.js');
    const config = parseConfigFile(
      ['ca:', '  backend: cfssl', '  trustDomain: corp.test', '  cfssl: { url: "https://ca:8888", authKeyEnv: CFSSL_KEY, profile: short }', 'identities:', '  - { spiffeId: "spiffe://corp.test/web", dnsNames: [web.apps.local], lifetime: 15m, keyType: ec-p384 }'].join('\n'),
      '/etc/sds/sds.yaml',
    );
    expect(config.ca.cfssl).toEqual({ url: 'https://ca:8888', authKeyEnv: 'CFSSL_KEY', profile: 'short' });
    expect(config.identities).toEqual([{ spiffeId: 'spiffe://corp.test/web', dnsNames: ['web.apps.local'], keyType: 'ec-p384', lifetimeSeconds: 900, names: [] }]);
  });
});
