/**
 * The config schema beyond what test/cli.test.ts covers: settings new to the file (cfssl profiles,
 * label, maxResponseBytes; transport limits), rules between fields named by their path, defaults
 * from the schema, and CA backends loaded only when chosen.
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs/promises';
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { defaultConfig, defaultIdentity, parseConfigFile } from '../src/cli/config.js';
import { parseCommandLine } from '../src/cli/args.js';
import { createCaBackend } from '../src/ca/create-backend.js';
import { createLogger } from '../src/core/logger.js';
import { ErrorCode } from '../src/core/errors.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const quiet = createLogger({ write: () => undefined });

const problems = (yaml: string): string => {
  try {
    parseConfigFile(yaml, '/etc/sds/sds.yaml');
  } catch (err) {
    expect((err as { code?: string }).code).toBe(ErrorCode.ConfigInvalid);
    return (err as Error).message;
  }
  return '';
};

/**
 * Node turns a timer delay above 2^31 - 1 ms into 1 ms (a "once a month" setting would re-run
 * every millisecond), and a duration of hundreds of digits is Infinity: both are refused.
 */
describe('config file: numbers and durations are bounded', () => {
  const MAX_MS = 2147483647;
  const TOO_LONG = `expected a duration such as 3600, "90s", "15m" or "1h", at most 3650d`;
  it.each([
    ['ca: { bundleRefreshMs: 3000000000 }', `ca.bundleRefreshMs: expected an integer >= 0 and <= ${MAX_MS}, got number 3000000000`],
    ['ca: { bundlePropagationMs: 2147483648 }', `ca.bundlePropagationMs: expected an integer >= 0 and <= ${MAX_MS}, got number 2147483648`],
    ['ca: { timeoutMs: 3000000000 }', `ca.timeoutMs: expected an integer >= 1 and <= ${MAX_MS}, got number 3000000000`],
    ['ca: { backoff: { initialMs: 1e12, maxMs: 1e12 } }', `ca.backoff.initialMs: expected an integer >= 1 and <= ${MAX_MS}, got number 1000000000000`],
    ['ca: { backoff: { maxMs: 1e12 } }', `ca.backoff.maxMs: expected an integer >= 1 and <= ${MAX_MS}, got number 1000000000000`],
    ['watch: { pollIntervalMs: 3000000000 }', `watch.pollIntervalMs: expected an integer >= 0 and <= ${MAX_MS}, got number 3000000000`],
    ['watch: { debounceMs: 2147483648 }', `watch.debounceMs: expected an integer >= 0 and <= ${MAX_MS}, got number 2147483648`],
    ['socket: { limits: { pingIntervalMs: 1e10 } }', `socket.limits.pingIntervalMs: expected an integer >= 0 and <= ${MAX_MS}, got number 10000000000`],
    ['socket: { limits: { prefaceTimeoutMs: 1e10 } }', `socket.limits.prefaceTimeoutMs: expected an integer >= 1 and <= ${MAX_MS}, got number 10000000000`],
    ['onDemandIdleSeconds: 2147484', 'onDemandIdleSeconds: expected an integer >= 0 and <= 2147483, got number 2147484'],
    [`identities:\n  - { spiffeId: "spiffe://example.org/a", lifetime: "${'9'.repeat(400)}" }`, `identities[0].lifetime: ${TOO_LONG}, got a string of 400 characters`],
    [`identities:\n  - { spiffeId: "spiffe://example.org/a", lifetime: ${'9'.repeat(400)} }`, `identities[0].lifetime: ${TOO_LONG}, got number Infinity`],
    ['identities:\n  - { spiffeId: "spiffe://example.org/a", lifetime: 3651d }', `identities[0].lifetime: ${TOO_LONG}, got a string of 5 characters`],
    ['expiryWarning: 315360001', `expiryWarning: ${TOO_LONG}, got number 315360001`],
  ])('%s', (yaml, expected) => {
    expect(problems(yaml)).toContain(`/etc/sds/sds.yaml: ${expected}`);
  });

  it('the limits themselves are accepted (2147483647 ms, 3650d)', () => {
    const config = parseConfigFile(
      `ca: { trustDomain: example.org, bundleRefreshMs: 2147483647, timeoutMs: 2147483647 }\nwatch: { pollIntervalMs: 2147483647 }\nidentities:\n  - { spiffeId: "spiffe://example.org/a", lifetime: 3650d }\n`,
      '/etc/sds/sds.yaml',
    );
    expect(config.ca).toMatchObject({ bundleRefreshMs: 2147483647, timeoutMs: 2147483647 });
    expect(config.watch.pollIntervalMs).toBe(2147483647);
    expect(config.identities[0]!.lifetimeSeconds).toBe(3650 * 86400);
  });

  it.each([
    [['--poll-interval', '3000000000'], `--poll-interval: expected milliseconds >= 0 and <= ${MAX_MS}`],
    [['--ping-interval', '3000000000'], `--ping-interval: expected an integer >= 0 and <= ${MAX_MS}`],
    [['--cert-lifetime', '3651d'], '--cert-lifetime: expected a duration such as 90s, 15m or 1h, at most 3650d'],
  ])('command line %j is refused', (argv, expected) => {
    expect(() => parseCommandLine(argv, {})).toThrow(expected);
  });
});

describe('config file: rules between fields name the field path', () => {
  it.each([
    ['ca:\n  backend: cfssl', 'ca.cfssl: is required when ca.backend is cfssl'],
    ['ca:\n  backend: aws-pca', 'ca.awsPca: is required when ca.backend is aws-pca'],
    ['ca:\n  backend: cfssl\n  cfssl: { url: ca.internal:8888 }', 'ca.cfssl.url: expected an http(s):// URL, got a string of 16 characters'],
    ['ca:\n  cfssl: { url: "https://ca", profiles: [{ name: short }] }', 'ca.cfssl.profiles[0].lifetime: is required'],
    ['ca:\n  cfssl: { url: "https://ca", maxResponseBytes: 10 }', 'ca.cfssl.maxResponseBytes: expected an integer >= 1024, got number 10'],
    ['ca:\n  embedded: { caCert: ca.pem }', 'ca.embedded: give both caCert and caKey, or neither'],
    ['socket:\n  limits: { maxConnections: 0 }', 'socket.limits.maxConnections: expected an integer >= 1 and <= 2147483647, got number 0'],
    ['socket:\n  limits: { pingEvery: 5 }', 'socket.limits.pingEvery: unknown field'],
    [
      'certificates:\n  - { name: a, cert: a.crt, key: a.key }\n  - { name: b, cert: b.crt, key: b.key }\n  - { name: c, cert: c.crt }',
      'certificates[2].key: is required',
    ],
    ['certificates:\n  - { name: a, cert: a.crt, key: a.key }\n  - { name: b, cert: b.crt, key: b.key, names: [a] }', 'certificates[1].names[0]: the same name is already used by certificates[0].name'],
    ['certificates:\n  - { name: ROOTCA, cert: a.crt, key: a.key }', 'certificates[0].name: the same name is reserved as an alias (aliases.rootBundle)'],
    ['default: front\ncertificates:\n  - { name: back, cert: a.crt, key: a.key }', 'default: is not the name of a configured certificate'],
    ['bundles:\n  - { name: "spiffe://example.org/front", ca: ca.pem }', 'bundles[0].name: has a path; a bundle is named by a trust-domain ID such as spiffe://example.org'],
    ['identities:\n  - spiffeId: spiffe://example.org/a\nca:\n  trustDomain: corp.test', "identities[0].spiffeId: is not in the CA's trust domain corp.test"],
    ['onDemandLifetime: 15m', 'onDemandLifetime: applies only with identityTemplate'],
  ])('%s', (yaml, expected) => {
    expect(problems(yaml)).toContain(`/etc/sds/sds.yaml: ${expected}`);
  });

  it('names every unknown field, not only the first of each mapping', () => {
    const message = problems('colour: blue\nsize: 3\nwatch: { debounce: 1, poll: 2 }\ncertificates:\n  - { name: a, cert: a.crt, key: a.key, keyfile: b }');
    for (const field of ['colour', 'size', 'watch.debounce', 'watch.poll', 'certificates[0].keyfile']) {
      expect(message).toContain(`/etc/sds/sds.yaml: ${field}: unknown field (expected one of `);
    }
    expect(message.match(/: colour: /g)).toHaveLength(1);
  });

  it('one bad field does not hide a rule that involves other fields', () => {
    const message = problems('watch: { debounceMs: soon }\ncertificates:\n  - { name: a, cert: a.crt, key: a.key }\n  - { name: a, cert: b.crt, key: b.key }');
    expect(message).toContain('watch.debounceMs: expected an integer >= 0 and <= 2147483647, got a string of 4 characters');
    expect(message).toContain('certificates[1].name: the same name is already used by certificates[0].name');
  });

  it('a key pasted as a workload identity is refused without being quoted, and the rule about configured identities does not quote it either', () => {
    const pasted = 'MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgVq3Zb8XW2kLqY7rJpN4tH6mC1xR9sFd0Ae5uKwT';
    const message = problems(`identities: [{ spiffeId: "spiffe://example.org/a" }]\nworkloads:\n  - selectors: ["unix:uid:1"]\n    identities: ["${pasted}"]`);
    expect(message).toContain('workloads[0].identities[0]: looks like base64-encoded content');
    expect(message).not.toContain(pasted.slice(0, 16));
  });
});

describe('config file: settings that only flags or code could set before', () => {
  it('reads cfssl profiles, label and maxResponseBytes', () => {
    const config = parseConfigFile(
      'ca:\n  backend: cfssl\n  cfssl:\n    url: "https://ca:8888"\n    label: primary\n    maxResponseBytes: 65536\n    profiles:\n      - { name: short, lifetime: 90s }\n      - { name: long, lifetime: 1h }\nidentities: [{ spiffeId: "spiffe://example.org/web" }]',
      '/etc/sds/sds.yaml',
    );
    expect(config.ca.cfssl).toEqual({
      url: 'https://ca:8888',
      label: 'primary',
      maxResponseBytes: 65536,
      profiles: [
        { name: 'short', lifetimeSeconds: 90 },
        { name: 'long', lifetimeSeconds: 3600 },
      ],
    });
  });

  it('reads transport limits from socket.limits; a flag overrides the file', async () => {
    const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'sds-limits-'));
    try {
      const file = path.join(dir, 'sds.yaml');
      await fs.writeFile(file, 'socket:\n  limits:\n    maxConnections: 100\n    pingIntervalMs: 0\n    prefaceTimeoutMs:\n');
      const run = (argv: string[]) => {
        const command = parseCommandLine(['--config', file, '--data-dir', path.join(dir, 'ca'), ...argv], {});
        if (command.kind !== 'run') throw new Error('expected run');
        return command.config.socket.limits;
      };
      expect(run([])).toEqual({ maxConnections: 100, pingIntervalMs: 0 });
      expect(run(['--max-connections', '50'])).toEqual({ maxConnections: 50, pingIntervalMs: 0 });
    } finally {
      await fs.rm(dir, { recursive: true, force: true });
    }
  });
});

describe('cfssl settings from the file reach cfssl (recording cfssl test double on loopback)', () => {
  const requests: Array<{ url: string; body: Record<string, unknown> }> = [];
  let server: http.Server;
  let url: string;
  beforeAll(async () => {
    server = http.createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        requests.push({ url: req.url ?? '', body: JSON.parse(Buffer.concat(chunks).toString('utf8')) as Record<string, unknown> });
        // 4 KiB: over the configured maxResponseBytes (2048), under the default (1 MiB).
        res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ success: false, padding: 'x'.repeat(4096) }));
      });
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  afterAll(async () => {
    await new Promise((resolve) => server.close(resolve));
  });

  it('chooses the profile by lifetime, sends the label, and refuses an answer over maxResponseBytes', async () => {
    const config = parseConfigFile(
      `ca:\n  backend: cfssl\n  cfssl:\n    url: "${url}"\n    label: primary\n    maxResponseBytes: 2048\n    profiles: [{ name: short, lifetime: 90s }, { name: long, lifetime: 1h }]\nidentities: [{ spiffeId: "spiffe://example.org/web" }]`,
      '/etc/sds/sds.yaml',
    );
    const backend = await createCaBackend(config.ca, quiet);
    try {
      expect(backend.kind).toBe('cfssl');
      const sign = (lifetimeSeconds: number) => backend.sign({ csrPem: 'csr', spiffeId: 'spiffe://example.org/web', dnsNames: [], lifetimeSeconds }, AbortSignal.timeout(10_000));
      await expect(sign(3600)).rejects.toThrow(/with a body over 2048 bytes/);
      await expect(sign(120)).rejects.toThrow(/with a body over 2048 bytes/);
      expect(requests.map((r) => [r.url, r.body.profile, r.body.label])).toEqual([
        ['/api/v1/cfssl/sign', 'long', 'primary'],
        ['/api/v1/cfssl/sign', 'short', 'primary'],
      ]);
    } finally {
      await backend.close();
    }
  });
});

describe('CA backend registry', () => {
  const PROBE = `
    const [configUrl, createUrl, loggerUrl] = process.argv.slice(2);
    const { parseConfigFile } = await import(configUrl);
    const { createCaBackend } = await import(createUrl);
    const { createLogger } = await import(loggerUrl);
    const config = parseConfigFile(process.env.PROBE_YAML, process.env.PROBE_FILE);
    const backend = await createCaBackend(config.ca, createLogger({ write: () => undefined }));
    console.log(backend.kind);
    await backend.close();
  `;
  let dir: string;
  beforeAll(async () => {
    dir = await fs.mkdtemp(path.join(os.tmpdir(), 'sds-registry-'));
    await fs.writeFile(path.join(dir, 'probe.mjs'), PROBE);
  });
  afterAll(async () => {
    await fs.rm(dir, { recursive: true, force: true });
  });

  /** Runs the probe in a fresh process; returns the backend kind and every module URL it loaded. */
  const probe = async (name: string, yaml: string): Promise<{ kind: string; loaded: string[] }> => {
    const record = path.join(dir, `${name}.imports`);
    const child = spawn(
      process.execPath,
      [
        '--import',
        'tsx',
        '--import',
        pathToFileURL(path.join(ROOT, 'test', 'helpers', 'record-imports.mjs')).href,
        path.join(dir, 'probe.mjs'),
        ...['src/cli/config.ts', 'src/ca/create-backend.ts', 'src/core/logger.ts'].map((f) => pathToFileURL(path.join(ROOT, f)).href),
      ],
      { cwd: ROOT, env: { ...process.env, RECORD_IMPORTS_FILE: record, PROBE_YAML: yaml, PROBE_FILE: path.join(dir, `${name}.yaml`) } },
    );
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    const code = await new Promise<number | null>((resolve) => child.on('exit', resolve));
    expect(code, err).toBe(0);
    return { kind: out.trim(), loaded: (await fs.readFile(record, 'utf8')).split('\n') };
  };
  const loads = (loaded: string[], pattern: RegExp): boolean => loaded.some((u) => pattern.test(u));

  it.each([
    ['embedded', 'ca:\n  embedded: { dataDir: ca }', /embedded-ca\.ts$/, [/aws-pca-backend/, /@aws-sdk/, /cfssl-backend/]],
    ['cfssl', 'ca:\n  backend: cfssl\n  cfssl: { url: "http://127.0.0.1:1" }', /cfssl-backend\.ts$/, [/aws-pca-backend/, /@aws-sdk/, /embedded-ca\.ts$/]],
    ['aws-pca', 'ca:\n  backend: aws-pca\n  awsPca: { certificateAuthorityArn: "arn:aws:acm-pca:us-east-1:1:certificate-authority/x", region: us-east-1 }', /aws-pca-backend\.ts$/, [/cfssl-backend/, /embedded-ca\.ts$/]],
  ] as const)('ca.backend %s imports its own implementation and no other backend', async (name, yaml, own, others) => {
    const { kind, loaded } = await probe(name, yaml);
    expect(kind).toBe(name);
    expect(loads(loaded, own)).toBe(true);
    for (const other of others) expect(loads(loaded, other), String(other)).toBe(false);
  }, 60_000);
});

describe('config file: any field of the wrong shape is a config error, never a crash', () => {
  /** A valid file that sets every kind of field. */
  const full: Record<string, unknown> = {
    socket: { path: 's.sock', mode: '0660', group: 1, allowSharedDirectory: true, limits: { maxConnections: 5 } },
    aliases: { defaultCertificate: 'd' },
    default: 'a',
    rootBundle: 'spiffe://partner.test',
    watch: { debounceMs: 1 },
    log: { level: 'info' },
    admin: { address: '127.0.0.1:1' },
    certificates: [{ name: 'a', cert: 'a.crt', key: 'a.key', names: ['x'] }],
    bundles: [{ name: 'spiffe://partner.test', ca: ['ca.pem'], names: 'y' }],
    ca: {
      backend: 'cfssl',
      trustDomain: 'example.org',
      bundleNames: ['z'],
      backoff: { initialMs: 1 },
      embedded: { dataDir: 'd' },
      cfssl: { url: 'http://x', profiles: [{ name: 'p', lifetime: '1h' }] },
      awsPca: { certificateAuthorityArn: 'arn:aws:acm-pca:x' },
    },
    identities: [{ spiffeId: 'spiffe://example.org/i', dnsNames: ['d'], names: ['n'] }],
    workloads: [{ selectors: ['unix:uid:1'], identities: ['a'] }],
    identityTemplate: 'spiffe://{trustDomain}/u/{unix:uid}',
    onDemandIdleSeconds: 1,
    onDemandLifetime: '1h',
    attestation: { kubernetes: { kubeletUrl: 'https://x:1' } },
  };
  const paths: string[][] = [];
  const walk = (value: unknown, at: string[]): void => {
    if (at.length > 0) paths.push(at);
    if (value && typeof value === 'object') for (const [k, child] of Object.entries(value)) walk(child, [...at, k]);
  };
  walk(full, []);

  it('the full file is valid', () => {
    expect(() => parseConfigFile(stringify(full), '/etc/sds/sds.yaml')).not.toThrow();
  });

  it.each(paths.map((p) => [p.join('.'), p] as const))('%s', (_name, at) => {
    for (const wrong of [5, 'x', [], {}, null, [null], [5], true]) {
      const doc = structuredClone(full);
      let holder = doc as Record<string, unknown>;
      for (const key of at.slice(0, -1)) holder = holder[key] as Record<string, unknown>;
      holder[at.at(-1)!] = wrong;
      try {
        parseConfigFile(stringify(doc), '/etc/sds/sds.yaml');
      } catch (err) {
        expect((err as { code?: string }).code, `${at.join('.')} = ${JSON.stringify(wrong)}: ${(err as Error).message}`).toBe(ErrorCode.ConfigInvalid);
      }
    }
  });
});

describe('defaults come from the schema', () => {
  it('defaultConfig() is an empty config file', () => {
    expect(parseConfigFile('', '/etc/sds/sds.yaml')).toEqual(defaultConfig());
    const config = defaultConfig();
    expect(config.ca).toMatchObject({ backend: 'embedded', trustDomain: 'example.org', embedded: {}, renewFraction: 0.5, backoff: { initialMs: 1000, maxMs: 60_000 } });
    expect(config.socket).toEqual({ mode: 0o660 });
    expect(config.authorization).toEqual({ enabled: false, workloads: [], onDemandIdleSeconds: 300, onDemandLifetimeSeconds: 3600 });
  });

  it('defaultIdentity() takes the identity defaults of the schema', () => {
    expect(defaultIdentity('corp.test')).toEqual({ spiffeId: 'spiffe://corp.test/sds-server', dnsNames: [], keyType: 'ec-p256', lifetimeSeconds: 3600, names: [] });
    expect(defaultIdentity('corp.test', 90).lifetimeSeconds).toBe(90);
  });
});
