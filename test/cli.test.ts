import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs/promises';
import { readFileSync, readdirSync, readlinkSync } from 'node:fs';
import net, { type AddressInfo } from 'node:net';
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
    // Text log format was asked for (pino-pretty's one-line form).
    expect(r.lines.some((l) => /^\[[0-9T:.-]+Z\] INFO: listening /.test(l))).toBe(true);
    r.child.kill('SIGINT');
    expect(await r.exited).toBe(0);
  });

  it('quick mode whose files appear after start holds requests for the SPIFFE ID and the trust-domain ID, then answers them (issue 10)', async () => {
    const socketPath = path.join(dir, 'sds.sock');
    const later = path.join(dir, 'later');
    const files = { cert: path.join(later, 'tls.crt'), key: path.join(later, 'tls.key'), ca: path.join(later, 'ca.crt') };
    const r = run(['--cert', files.cert, '--key', files.key, '--ca', files.ca, '--socket', socketPath, '--poll-interval', '200']);
    running.push(r);
    await waitForLine(r, /some secrets are not available yet/);
    const client = new SdsTestClient(socketPath);
    const streams = [FRONT, 'spiffe://example.org'].map((name) => {
      const stream = client.stream();
      stream.send({ node: envoyNode(), resource_names: [name], type_url: client.typeUrl });
      return stream;
    });
    // Held, not refused as unknown (SDS_ERR_UNKNOWN_SECRET ended these streams before).
    for (const stream of streams) expect(await stream.nothingWithin(300)).toBe(true);

    const ca = await rootCa('example.org');
    const leaf = await issueLeaf(ca, { spiffeId: FRONT });
    await fs.mkdir(later);
    await fs.writeFile(files.ca, ca.certPem);
    await fs.writeFile(files.key, leaf.keyPem);
    await fs.writeFile(files.cert, leaf.chainPem);
    const [certStream, bundleStream] = streams as [(typeof streams)[0], (typeof streams)[0]];
    const certSecret = decodeSecret((await certStream.next(5000)).resources[0]!);
    expect(certSecret.name).toBe(FRONT);
    expect(new X509Certificate(certSecret.tls_certificate!.certificate_chain!.inline_bytes!).serialNumber).toBe(leaf.serialNumber);
    const bundleSecret = decodeSecret((await bundleStream.next(5000)).resources[0]!);
    expect(bundleSecret.name).toBe('spiffe://example.org');
    // The SPIFFE validator, with the trust domain taken from the certificate once it was read.
    const validator = bundleSecret.validation_context?.custom_validator_config;
    expect(validator?.name).toBe('envoy.tls.cert_validator.spiffe');
    const config = Buffer.from(validator?.typed_config?.value ?? []).toString('latin1');
    expect(config).toContain('example.org');
    expect(config).toContain(ca.certPem.trim());
    for (const stream of streams) stream.end();
    client.close();
    r.child.kill('SIGTERM');
    expect(await r.exited).toBe(0);
    expect(r.lines.join('\n')).not.toContain('PRIVATE KEY');
  });

  it('a directory where a file is expected: warn lines with the path (file source), a coded start-up error naming it (embedded CA files) (issue 10)', async () => {
    const certDir = path.join(dir, 'tls.crt');
    await fs.mkdir(certDir);
    const config = path.join(dir, 'sds.yaml');
    await fs.writeFile(config, ['certificates:', `  - name: ${FRONT}`, '    cert: tls.crt', '    key: tls.key'].join('\n'));
    const r = run(['--config', config, '--socket', path.join(dir, 'sds.sock')]);
    running.push(r);
    await waitForLine(r, /some secrets are not available yet/);
    const records = r.lines.map((l) => JSON.parse(l) as Record<string, unknown>);
    const notFile = records.find((x) => x.code === 'SDS_ERR_NOT_A_FILE');
    expect(notFile).toMatchObject({ level: 'warn', message: `${certDir}: is a directory, not a regular file` });
    expect(records.find((x) => x.msg === 'serving; some secrets are not available yet')?.level).toBe('warn');
    r.child.kill('SIGTERM');
    expect(await r.exited).toBe(0);

    const caConfig = path.join(dir, 'ca.yaml');
    await fs.writeFile(caConfig, ['ca:', '  embedded:', '    caCert: tls.crt', '    caKey: tls.crt', 'identities:', `  - spiffeId: ${FRONT}`].join('\n'));
    const ca = run(['--config', caConfig, '--socket', path.join(dir, 'ca.sock')]);
    running.push(ca);
    expect(await ca.exited).not.toBe(0);
    const failure = ca.lines.map((l) => JSON.parse(l) as Record<string, unknown>).find((x) => x.msg === 'could not start');
    expect(failure).toMatchObject({ level: 'error', code: 'SDS_ERR_NOT_A_FILE', error: `${certDir}: is a directory, not a regular file` });
  }, 40_000);

  it('a short-lived certificate: warned before expiry, withheld from new streams once expired, /ready 503 saying why, a log line when it expires (issue 10)', async () => {
    const config = path.join(dir, 'sds.yaml');
    await fs.writeFile(config, ['certificates:', `  - name: ${FRONT}`, '    cert: tls.crt', '    key: tls.key', 'expiryWarning: 1h', 'admin:', '  address: 127.0.0.1:0', 'watch:', '  pollIntervalMs: 0'].join('\n'));
    const socketPath = path.join(dir, 'sds.sock');
    const r = run(['--config', config, '--socket', socketPath]);
    running.push(r);
    const admin = (JSON.parse(await waitForLine(r, /admin listening/)) as { address: string }).address;
    await waitForLine(r, /some secrets are not available yet/);
    // Written once the program runs (its start-up time varies): whole-second X.509 times put notAfter
    // 3-4 s from now. Lifetime ~65 s, so the warning window is its last third (~21 s, shorter than
    // expiryWarning: 1h): warned from the start.
    const ca = await rootCa('example.org');
    const now = Date.now();
    const leaf = await issueLeaf(ca, { spiffeId: FRONT, notBefore: new Date(now - 60_000), notAfter: new Date(now + 4_000) });
    await fs.writeFile(path.join(dir, 'tls.key'), leaf.keyPem);
    await fs.writeFile(path.join(dir, 'tls.crt'), leaf.chainPem);
    await waitForLine(r, /secret updated/);
    const get = async (p: string): Promise<{ status: number; json: Record<string, any> }> => {
      const res = await fetch(`http://${admin}${p}`);
      return { status: res.status, json: (await res.json()) as Record<string, any> };
    };

    const soon = JSON.parse(await waitForLine(r, /certificate expires soon/)) as Record<string, unknown>;
    expect(soon).toMatchObject({ level: 'warn', code: 'SDS_ERR_CERT_EXPIRING_SOON', name: FRONT, serial: leaf.serialNumber });
    const before = await get('/status');
    expect(before.json.secrets[0].warnings[0].code).toBe('SDS_ERR_CERT_EXPIRING_SOON');
    expect((await get('/ready')).status).toBe(200);

    const expired = JSON.parse(await waitForLine(r, /certificate expired/, 10_000)) as Record<string, unknown>;
    expect(expired).toMatchObject({ level: 'error', code: 'SDS_ERR_CERT_EXPIRED', name: FRONT, serial: leaf.serialNumber });
    const ready = await get('/ready');
    expect(ready.status).toBe(503);
    expect(ready.json.notReady).toEqual([{ name: FRONT, state: 'expired', lastError: { code: 'SDS_ERR_CERT_EXPIRED', message: expect.stringContaining('has expired') } }]);
    expect((await get('/status')).json.secrets[0].state).toBe('expired');

    // New streams do not get it: Fetch says not ready, a stream waits...
    const client = new SdsTestClient(socketPath);
    await expect(client.fetch({ node: envoyNode(), resource_names: [FRONT] })).rejects.toThrow(/SDS_ERR_SECRET_NOT_READY/);
    const stream = client.stream();
    stream.send({ node: envoyNode(), resource_names: [FRONT], type_url: client.typeUrl });
    expect(await stream.nothingWithin(300)).toBe(true);
    // ...until a renewed certificate is written.
    const renewed = await issueLeaf(ca, { spiffeId: FRONT });
    await fs.writeFile(path.join(dir, 'tls.key'), renewed.keyPem);
    await fs.writeFile(path.join(dir, 'tls.crt'), renewed.chainPem);
    const res = await stream.next(5000);
    expect(new X509Certificate(decodeSecret(res.resources[0]!).tls_certificate!.certificate_chain!.inline_bytes!).serialNumber).toBe(renewed.serialNumber);
    expect((await get('/ready')).status).toBe(200);
    stream.end();
    client.close();
    r.child.kill('SIGTERM');
    expect(await r.exited).toBe(0);
  }, 30_000);

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
    expect(out).toContain(`${config}: bundleFormat: expected one of auto, spiffe, trusted-ca, got a string of 5 characters`);
    expect(out).toContain(`${config}: certificates[0].key: is required`);
    expect(out).toContain(`${config}: bundles[0].ca: must name at least one CA file`);
    expect(out).toContain(`${config}: colour: unknown field`);
  });

  // Start-up failures: each has a code and the exit status docs/errors.md gives it (issue 13).
  const startFailures: Array<[string, (d: string, busyPort: number) => string[], string, number]> = [
    ['a socket group that does not exist', (d) => ['--socket', path.join(d, 'sds.sock'), '--data-dir', path.join(d, 'ca'), '--socket-group', 'no-such-group'], 'SDS_ERR_CONFIG_INVALID', 2],
    ['an admin address another process listens on', (d, port) => ['--socket', path.join(d, 'sds.sock'), '--data-dir', path.join(d, 'ca'), '--admin', `127.0.0.1:${port}`], 'SDS_ERR_ADMIN_LISTEN', 2],
    ['a CA data directory that is a file', (d) => ['--socket', path.join(d, 'sds.sock'), '--data-dir', path.join(d, 'a-file')], 'SDS_ERR_CA_DATA_DIR', 2],
  ];
  for (const [what, args, code, status] of startFailures) {
    it(`start-up with ${what}: one "could not start" line with ${code}, exit ${status}`, async () => {
      await fs.writeFile(path.join(dir, 'a-file'), 'not a directory');
      const busy = net.createServer();
      await new Promise<void>((resolve) => busy.listen(0, '127.0.0.1', resolve));
      try {
        const r = run(args(dir, (busy.address() as AddressInfo).port));
        running.push(r);
        expect(await r.exited).toBe(status);
        const failed = r.lines.filter((l) => l.includes('could not start')).map((l) => JSON.parse(l) as { code?: string; level?: string });
        expect(failed).toEqual([expect.objectContaining({ level: 'error', code })]);
      } finally {
        busy.close();
      }
    });
  }

  it('check reports a socket group that does not exist and exits 2', async () => {
    const r = run(['check', '--socket-group', 'no-such-group']);
    running.push(r);
    expect(await r.exited).toBe(2);
    expect(r.lines.join('\n')).toContain('SDS_ERR_CONFIG_INVALID: socket group "no-such-group" not found');
  });

  it('SIGUSR1 opens no debugger: nothing of the server listens on 9229, a warning is logged, and it still serves', async () => {
    const socketPath = path.join(dir, 'sds.sock');
    const r = run(['--socket', socketPath, '--data-dir', path.join(dir, 'ca'), '--spiffe-id', FRONT, '--admin', '127.0.0.1:0']);
    running.push(r);
    await waitForLine(r, /all secrets ready/);
    // The port reader sees what the server listens on: its admin port.
    const adminPort = Number((JSON.parse(await waitForLine(r, /admin listening/)) as { address: string }).address.split(':')[1]);
    expect(listeningPorts(r.child.pid!)).toContain(adminPort);
    r.child.kill('SIGUSR1');
    await waitForLine(r, /SIGUSR1 ignored/);
    // Node's debugger would print this on stderr and listen on 127.0.0.1:9229.
    expect(r.lines.join('\n')).not.toContain('Debugger listening');
    expect(listeningPorts(r.child.pid!)).not.toContain(9229);
    const client = new SdsTestClient(socketPath);
    const res = await client.fetch({ node: envoyNode(), resource_names: [FRONT] });
    expect(decodeSecret(res.resources[0]!).name).toBe(FRONT);
    client.close();
    r.child.kill('SIGTERM');
    expect(await r.exited).toBe(0);
  });
});

/** TCP ports in LISTEN state on sockets the process `pid` holds (from /proc/<pid>/fd and /proc/net/tcp{,6}). */
function listeningPorts(pid: number): number[] {
  const inodes = new Set<string>();
  for (const fd of readdirSync(`/proc/${pid}/fd`)) {
    try {
      const m = /^socket:\[(\d+)\]$/.exec(readlinkSync(`/proc/${pid}/fd/${fd}`));
      if (m) inodes.add(m[1]!);
    } catch {
      // closed while we looked
    }
  }
  const ports: number[] = [];
  for (const table of ['/proc/net/tcp', '/proc/net/tcp6']) {
    for (const line of readFileSync(table, 'utf8').split('\n').slice(1)) {
      const f = line.trim().split(/\s+/);
      // local_address is HEXIP:HEXPORT, st 0A is LISTEN, inode is field 10.
      if (f.length > 9 && f[3] === '0A' && inodes.has(f[9]!)) ports.push(parseInt(f[1]!.split(':')[1]!, 16));
    }
  }
  return ports;
}

describe('keys where they must not be (issue 10)', () => {
  let dir: string;
  let key: string;
  /** Every base64 line of the key: none may appear in any output. */
  let keyLines: string[];
  beforeEach(async () => {
    dir = await fs.mkdtemp(path.join(os.tmpdir(), 'sds-keys-'));
    const leaf = await issueLeaf(await rootCa('example.org'), { spiffeId: FRONT });
    key = leaf.keyPem;
    keyLines = key.split('\n').filter((l) => l.length > 0 && !l.startsWith('-----'));
  });
  afterEach(async () => {
    await fs.rm(dir, { recursive: true, force: true });
  });
  const expectNoKey = (text: string): void => {
    expect(text).not.toContain('PRIVATE KEY');
    for (const line of keyLines) expect(text).not.toContain(line.slice(0, 16));
  };
  const configError = (argv: string[]): string => {
    try {
      parseCommandLine(argv, {});
    } catch (err) {
      return `${(err as { code?: string }).code}: ${(err as Error).message}`;
    }
    throw new Error(`expected a configuration error for ${argv.join(' ').slice(0, 40)}`);
  };

  it('the program given --config <private key file> exits 2 and describes the value by type and length, never its content', async () => {
    const keyFile = path.join(dir, 'tls.key');
    await fs.writeFile(keyFile, key, { mode: 0o600 });
    const r = run(['--config', keyFile]);
    expect(await r.exited).toBe(2);
    const out = r.lines.join('\n');
    expect(out).toContain('SDS_ERR_CONFIG_INVALID');
    expect(out).toMatch(new RegExp(`${keyFile}: \\(top level\\): expected a mapping, got a string of \\d+ characters`));
    expectNoKey(out);
  });

  // Every way a key can end up in a config value reaches a config error that does not quote it.
  const keyInConfig: Array<[string, (k: string) => string]> = [
    ['the whole file is a key', (k) => k],
    ['a key as a block scalar in certificates[].key', (k) => `certificates:\n  - name: a\n    cert: a.crt\n    key: |\n${indent(k, 6)}`],
    ['a key in cert: and ca:', (k) => `certificates:\n  - name: a\n    cert: |\n${indent(k, 6)}    key: a.key\nbundles:\n  - name: b\n    ca:\n      - |\n${indent(k, 8)}`],
    ['a key pasted unindented (YAML syntax error)', (k) => `certificates:\n  - name: a\n    key: ${k}`],
    ['a key as an enum value', (k) => `bundleFormat: ${JSON.stringify(k)}`],
    ['a key as a number field', (k) => `watch:\n  debounceMs: ${JSON.stringify(k)}`],
    ['a key as a field name', (k) => `${JSON.stringify(k)}: 1`],
    ['a key as the socket path', (k) => `socket:\n  path: ${JSON.stringify(k)}`],
    ['a key as a secret name', (k) => `certificates:\n  - name: ${JSON.stringify(k)}\n    cert: a.crt\n    key: a.key`],
    ['a key as an admin address', (k) => `admin:\n  address: ${JSON.stringify(k)}`],
    ['a key as the trust domain', (k) => `ca:\n  trustDomain: ${JSON.stringify(k)}`],
  ];
  it.each(keyInConfig)('config file with %s: config error, key never quoted', async (_what, write) => {
    const file = path.join(dir, 'sds.yaml');
    await fs.writeFile(file, write(key));
    const message = configError(['--config', file]);
    expect(message).toContain('SDS_ERR_CONFIG_INVALID');
    expect(message).toContain(file);
    expectNoKey(message);
  });

  it('a PEM key pasted into key:, cert: or ca: is refused, naming the field', async () => {
    const file = path.join(dir, 'sds.yaml');
    await fs.writeFile(file, keyInConfig[2]![1](key));
    const message = configError(['--config', file]);
    expect(message).toContain(`${file}: certificates[0].cert: contains a PEM block; give the path of the file, not its content`);
    expect(message).toContain(`${file}: bundles[0].ca[0]: contains a PEM block`);
    await fs.writeFile(file, `certificates:\n  - name: a\n    cert: "a.crt\\nb"\n    key: a.key\n`);
    expect(configError(['--config', file])).toContain(`${file}: certificates[0].cert: contains a line break`);
  });

  it.each([
    ['--key=<key>', (k: string) => ['--cert', 'a.crt', `--key=${k}`]],
    ['--key <key>', (k: string) => ['--cert', 'a.crt', '--key', k]],
    ['--ca <key>', (k: string) => ['--cert', 'a.crt', '--key', 'a.key', `--ca=${k}`]],
    ['--config=<key>', (k: string) => [`--config=${k}`]],
    ['<key> as an argument', (k: string) => [k]],
    ['<key> as a positional after --', (k: string) => ['--', k]],
    ['--socket-group <key>', (k: string) => [`--socket-group=${k}`]],
    ['--spiffe-id <key>', (k: string) => [`--spiffe-id=${k}`]],
    ['--admin <key>', (k: string) => [`--admin=${k}`]],
  ])('command line with %s: config error, key never quoted', (_what, argv) => {
    const message = configError(argv(key));
    expect(message).toContain('SDS_ERR_CONFIG_INVALID');
    expectNoKey(message);
  });

  it.each([
    ['base64 of the PEM file (the Kubernetes Secret form)', (k: string) => Buffer.from(k).toString('base64')],
    ['the PEM body with its line breaks removed', (k: string) => k.split('\n').filter((l) => l && !l.startsWith('-----')).join('')],
  ])('a key pasted as one line, %s, is refused in key: and on the command line, never echoed', async (_what, oneLine) => {
    const pasted = oneLine(key);
    const file = path.join(dir, 'sds.yaml');
    await fs.writeFile(file, `certificates:\n  - name: a\n    cert: a.crt\n    key: ${pasted}\n`);
    const message = configError(['--config', file]);
    expect(message).toContain(`${file}: certificates[0].key: looks like base64-encoded content`);
    expect(message).not.toContain(pasted.slice(0, 24));
    const flagMessage = configError(['--cert', 'a.crt', `--key=${pasted}`]);
    expect(flagMessage).toContain('looks like base64-encoded content');
    expect(flagMessage).not.toContain(pasted.slice(0, 24));
  });

  it('real paths, SPIFFE IDs and digests are not mistaken for pasted content', async () => {
    const { pastedContentProblem } = await import('../src/cli/config.js');
    for (const value of [
      '/var/run/secrets/kubernetes.io/serviceaccount/..2026_11_30_06_00_00.123456789/token',
      '/Users/JohnSmith/Projects/MyService2024/Certificates/Production/Frontend/tls.key',
      'spiffe://example.org/ns/shop/sa/back-end-service-account-with-a-long-name',
      `/etc/sds/certs/${'3f2a9c'.repeat(11)}/tls.crt`,
    ]) {
      expect(pastedContentProblem(value), value).toBeUndefined();
    }
  });

  it('two aliases renamed to the same name: a config error naming both', async () => {
    const file = path.join(dir, 'sds.yaml');
    await fs.writeFile(file, 'aliases:\n  defaultCertificate: mine\n  rootBundle: mine\n  allBundles: ALL\n');
    expect(configError(['--config', file])).toContain(`${file}: aliases.rootBundle: has the same name as aliases.defaultCertificate`);
    await fs.writeFile(file, 'aliases:\n  allBundles: default\n');
    expect(configError(['--config', file])).toContain(`${file}: aliases.allBundles: has the same name as aliases.defaultCertificate`);
  });
});

function indent(text: string, spaces: number): string {
  return text.split('\n').map((l) => (l ? ' '.repeat(spaces) + l : l)).join('\n');
}

describe('command-line parsing', () => {
  it('rejects --cert without --key and unknown flags with a clear message', () => {
    expect(() => parseCommandLine(['--cert', 'a.crt'], {})).toThrow(/--cert\/--key: both are required/);
    expect(() => parseCommandLine(['--colour', 'blue'], {})).toThrow(/unknown option --colour/);
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
    expect(message).toContain('ca.yaml: ca.backend: expected one of embedded, aws-pca, cfssl, got a string of 5 characters');
    expect(message).toContain('ca.yaml: ca.trustDomain: is not a valid trust domain name');
    expect(message).toContain('ca.yaml: ca.awsPca.certificateAuthorityArn: expected an ACM PCA ARN');
    expect(message).toContain('ca.yaml: identities[0].spiffeId: is not in the CA\'s trust domain example.org');
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
