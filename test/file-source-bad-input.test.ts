/**
 * Every kind of bad file an operator (or a half-finished rotation) can produce: FileSource keeps
 * serving the last good version, says what is wrong and where, and recovers with the next good file.
 */
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { chmod, mkdir, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { ErrorCode } from '../src/core/errors.js';
import { SecretStore } from '../src/secrets/store.js';
import { FileSource, MAX_PROBLEM_MESSAGE } from '../src/sources/file-source.js';
import { createRootCa, issueLeaf, type CertificateAuthority, type IssuedLeaf } from '../src/x509/issue.js';
import type { ChildReport } from './helpers/file-source-child.js';
import { bundleForOtherUser, type OtherUserScript } from './helpers/other-user.js';
import { issueLeafWithKeyType } from './helpers/key-types.js';
import { MAX_SECRET_FILE_BYTES } from '../src/core/read-secret-file.js';
import { createPrivateKey } from 'node:crypto';
import {
  captureLogs,
  makeTempDir,
  recordPushes,
  removeTempDir,
  RenameWriter,
  servedSerial,
  sleep,
  truncated,
  waitFor,
  type CapturedLogs,
  type Push,
} from './helpers/files.js';

// How long nothing may be pushed after a refusal, for the "nothing pushed" checks.
const SETTLE_MS = 100;
const NAME = 'workload';
const HOUR = 3_600_000;
const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

let ca: CertificateAuthority;
let dir: string;
let logs: CapturedLogs;
let sources: FileSource[];

beforeAll(async () => {
  ca = await createRootCa({ trustDomain: 'example.org' });
});

beforeEach(async () => {
  dir = await makeTempDir();
  logs = captureLogs();
  sources = [];
});

afterEach(async () => {
  await Promise.all(sources.map((s) => s.close()));
  await removeTempDir(dir);
  expect(logs.lines.filter((l) => l.includes('PRIVATE KEY'))).toEqual([]);
});

interface TlsFixture {
  writer: RenameWriter;
  certFile: string;
  keyFile: string;
  store: SecretStore;
  source: FileSource;
  pushes: Push[];
  good: IssuedLeaf;
}

/** A source serving a good, published certificate. */
async function startWithGoodTls(): Promise<TlsFixture> {
  const writer = new RenameWriter(dir);
  const good = await issueLeaf(ca, { spiffeId: 'spiffe://example.org/web' });
  await writer.init({ 'tls.crt': good.chainPem, 'tls.key': good.keyPem });
  const store = new SecretStore();
  const { pushes } = recordPushes(store, NAME);
  const certFile = writer.path('tls.crt');
  const keyFile = writer.path('tls.key');
  const source = new FileSource({
    tls: [{ name: NAME, certFile, keyFile }],
    bundles: [],
    publisher: store,
    log: logs.logger,
    pollIntervalMs: 0,
  });
  sources.push(source);
  await source.start();
  expect(servedSerial(store, NAME)).toBe(good.serialNumber);
  expect(pushes).toHaveLength(1);
  return { writer, certFile, keyFile, store, source, pushes, good };
}

/** The bad input is refused: nothing pushed, old version served, status and log name the file. */
async function expectRefused(f: TlsFixture, code: ErrorCode, file: string): Promise<string> {
  const version = f.store.get(NAME)?.version;
  await waitFor(`status to report ${code}`, () => f.source.status()[0]?.lastError?.code === code);
  // Logged once it has outlived the grace given to a rotation in progress (REFUSAL_LOG_GRACE_MS).
  await waitFor(`the ${code} refusal to be logged`, () => logs.records().some((r) => r.level === 'warn' && r.code === code));
  await sleep(SETTLE_MS);
  expect(f.pushes).toHaveLength(1);
  expect(f.store.get(NAME)?.version).toBe(version);
  expect(servedSerial(f.store, NAME)).toBe(f.good.serialNumber);
  const [status] = f.source.status();
  expect(status).toMatchObject({ state: 'error', version, lastError: { code } });
  expect(status?.lastError?.message).toContain(file);
  const warning = logs.records().find((r) => r.level === 'warn' && r.code === code);
  expect(warning).toMatchObject({ name: NAME, files: [f.certFile, f.keyFile] });
  return status?.lastError?.message ?? '';
}

/** A new good pair is published and the status is ok again. */
async function expectRecovers(f: TlsFixture): Promise<void> {
  const next = await issueLeaf(ca);
  await f.writer.rotate({ 'tls.crt': next.chainPem, 'tls.key': next.keyPem });
  await waitFor('the good pair to be served', () => servedSerial(f.store, NAME) === next.serialNumber);
  expect(f.pushes).toHaveLength(2);
  expect(f.source.status()[0]).toMatchObject({ state: 'ok', version: f.store.get(NAME)?.version, lastError: undefined });
}

interface BadInput {
  what: string;
  code: ErrorCode;
  /** Which file the message must name. */
  names: 'cert' | 'key';
  apply(f: TlsFixture): Promise<void>;
  /** Clears what a plain file write cannot replace (e.g. a directory). */
  undo?(f: TlsFixture): Promise<void>;
  check?(message: string, f: TlsFixture): void;
}

const expiredWindow = { notBefore: new Date(Date.now() - 2 * HOUR), notAfter: new Date(Date.now() - HOUR) };

const badInputs: BadInput[] = [
  {
    what: 'malformed PEM',
    code: ErrorCode.PemInvalid,
    names: 'cert',
    apply: (f) => writeFile(f.certFile, '-----BEGIN CERTIFICATE-----\nthis is not base64!\n-----END CERTIFICATE-----\n'),
  },
  {
    what: 'a key that does not match the certificate',
    code: ErrorCode.KeyMismatch,
    names: 'key',
    apply: async (f) => f.writer.rotate({ 'tls.key': (await issueLeaf(ca)).keyPem }),
    check: (message, f) => expect(message).toContain(f.certFile),
  },
  {
    what: 'an expired certificate',
    code: ErrorCode.CertExpired,
    names: 'cert',
    apply: async (f) => {
      const leaf = await issueLeaf(ca, expiredWindow);
      await f.writer.rotate({ 'tls.crt': leaf.chainPem, 'tls.key': leaf.keyPem });
    },
    // X.509 times have whole seconds.
    check: (message) => expect(message).toContain(`notAfter ${new Date(Math.floor(expiredWindow.notAfter.getTime() / 1000) * 1000).toISOString()}`),
  },
  {
    what: 'a certificate that is not valid yet',
    code: ErrorCode.CertNotYetValid,
    names: 'cert',
    apply: async (f) => {
      const leaf = await issueLeaf(ca, { notBefore: new Date(Date.now() + HOUR), notAfter: new Date(Date.now() + 2 * HOUR) });
      await f.writer.rotate({ 'tls.crt': leaf.chainPem, 'tls.key': leaf.keyPem });
    },
    check: (message) => expect(message).toMatch(/notBefore \d{4}-\d\d-\d\dT/),
  },
  {
    what: 'an empty file',
    code: ErrorCode.FileEmpty,
    names: 'cert',
    apply: (f) => writeFile(f.certFile, ''),
  },
  {
    what: 'a directory instead of a file',
    code: ErrorCode.NotAFile,
    names: 'cert',
    apply: async (f) => {
      await rm(f.certFile);
      await mkdir(f.certFile);
    },
    undo: (f) => rm(f.certFile, { recursive: true }),
  },
  {
    what: 'a truncated write (half a PEM)',
    code: ErrorCode.PemInvalid,
    names: 'cert',
    apply: async (f) => {
      const leaf = await issueLeaf(ca);
      await writeFile(f.keyFile, leaf.keyPem);
      await writeFile(f.certFile, truncated(leaf.chainPem));
    },
    check: (message) => expect(message).toContain('truncated'),
  },
  {
    what: 'an encrypted legacy key (Proc-Type: 4,ENCRYPTED): "private key is encrypted", not truncated DER',
    code: ErrorCode.KeyEncrypted,
    names: 'key',
    apply: async (f) => writeFile(f.keyFile, encryptedKey(f.good.keyPem, 'sec1')),
    check: (message) => {
      expect(message).toContain('private key is encrypted');
      expect(message).not.toContain('truncated');
    },
  },
  {
    what: 'a PKCS#8 ENCRYPTED PRIVATE KEY',
    code: ErrorCode.KeyEncrypted,
    names: 'key',
    apply: async (f) => writeFile(f.keyFile, encryptedKey(f.good.keyPem, 'pkcs8')),
    check: (message) => expect(message).toContain('private key is encrypted'),
  },
  {
    what: 'an RSA 1024 key (Envoy requires >= 2048 bits)',
    code: ErrorCode.KeyUnsupported,
    names: 'key',
    apply: async (f) => {
      const leaf = await issueLeafWithKeyType(ca, 'rsa-1024', { spiffeId: 'spiffe://example.org/web' });
      await f.writer.rotate({ 'tls.crt': leaf.chainPem, 'tls.key': leaf.keyPem });
    },
    check: (message) => expect(message).toContain('RSA 1024 bits'),
  },
  {
    what: 'an EC key on secp256k1 (a curve Envoy refuses)',
    code: ErrorCode.KeyUnsupported,
    names: 'key',
    apply: async (f) => {
      const leaf = await issueLeafWithKeyType(ca, 'secp256k1', { spiffeId: 'spiffe://example.org/web' });
      await f.writer.rotate({ 'tls.crt': leaf.chainPem, 'tls.key': leaf.keyPem });
    },
    check: (message) => expect(message).toContain('secp256k1'),
  },
  {
    what: 'a file over the 1 MiB cap (certificate header lines): refused without parsing, bounded message',
    code: ErrorCode.FileTooLarge,
    names: 'cert',
    apply: (f) => writeFile(f.certFile, '-----BEGIN CERTIFICATE-----\n'.repeat(Math.ceil((MAX_SECRET_FILE_BYTES + 1) / 28))),
    check: (message) => {
      expect(message).toContain(`${MAX_SECRET_FILE_BYTES}-byte limit`);
      expect(message.length).toBeLessThan(300);
    },
  },
  {
    what: 'a certificate with a 5,000-character subject and a key that does not match: message bounded',
    code: ErrorCode.KeyMismatch,
    names: 'key',
    apply: async (f) => {
      const leaf = await issueLeaf(ca, { commonName: 'x'.repeat(5000) });
      await f.writer.rotate({ 'tls.crt': leaf.chainPem, 'tls.key': (await issueLeaf(ca)).keyPem });
    },
    check: (message) => {
      expect(message.length).toBeLessThan(MAX_PROBLEM_MESSAGE + 100);
      expect(message).toMatch(/\.\.\. \(\d+ more characters\)$/);
    },
  },
  {
    what: 'a deleted file',
    code: ErrorCode.FileMissing,
    names: 'key',
    apply: (f) => rm(f.keyFile),
  },
];

describe('FileSource with bad input keeps the last good version', () => {
  it.each(badInputs.map((b) => [b.what, b] as const))('%s', async (_what, bad) => {
    const f = await startWithGoodTls();
    await bad.apply(f);
    const message = await expectRefused(f, bad.code, bad.names === 'cert' ? f.certFile : f.keyFile);
    bad.check?.(message, f);
    await bad.undo?.(f);
    await expectRecovers(f);
  });

  it('an unreadable file', async () => {
    if (process.getuid?.() === 0) await unreadableAsOtherUser();
    else await unreadableInProcess();
  });

  describe('trust bundles', () => {
    const bundleCases: [string, () => Promise<string>][] = [
      ['a file with no certificates', async () => '# the CA certificates will be written here\n'],
      // An operator pointing the CA file at a key file: refused, and the key label never logged.
      ['a file holding only a private key', async () => (await issueLeaf(ca)).keyPem],
    ];

    it.each(bundleCases)('%s', async (_what, badText) => {
      const caFile = path.join(dir, 'ca.pem');
      await writeFile(caFile, ca.certPem);
      const store = new SecretStore();
      const { pushes } = recordPushes(store, 'roots');
      const source = new FileSource({
        tls: [],
        bundles: [{ name: 'roots', caFiles: [caFile], trustDomain: 'example.org' }],
        publisher: store,
        log: logs.logger,
            pollIntervalMs: 0,
      });
      sources.push(source);
      await source.start();
      const version = store.get('roots')?.version;
      expect(version).toBeDefined();

      await new RenameWriter(dir).rotate({ 'ca.pem': await badText() });
      // The validator reports a CA file without certificates as PemInvalid ("contains no
      // CERTIFICATE PEM block"); BundleEmpty is for a bundle configured with no files at all.
      await waitFor('the bundle to be refused', () => source.status()[0]?.state === 'error');
      await sleep(SETTLE_MS);
      expect(pushes).toHaveLength(1);
      expect(store.get('roots')?.version).toBe(version);
      const [status] = source.status();
      expect(status).toMatchObject({ state: 'error', version, lastError: { code: ErrorCode.PemInvalid } });
      expect(status?.lastError?.message).toContain(caFile);

      const otherCa = await createRootCa({ commonName: 'next root' });
      await new RenameWriter(dir).rotate({ 'ca.pem': ca.certPem + otherCa.certPem });
      await waitFor('the good bundle to be served', () => pushes.length === 2);
      expect(source.status()[0]).toMatchObject({ state: 'ok', lastError: undefined });
      const value = store.get('roots')?.value;
      expect(value?.kind === 'trust-bundle' ? value.bundles[0]?.rootsPem.length : 0).toBe(2);
    });

    it('a bundle configured with no files is refused as BundleEmpty', async () => {
      const store = new SecretStore();
      const source = new FileSource({
        tls: [],
        bundles: [{ name: 'roots', caFiles: [] }],
        publisher: store,
        log: logs.logger,
        pollIntervalMs: 0,
      });
      sources.push(source);
      await source.start();
      expect(source.status()[0]).toMatchObject({ state: 'error', lastError: { code: ErrorCode.BundleEmpty } });
      expect(store.resolve('roots')).toEqual({ kind: 'pending' });
    });
  });
});

/** `keyPem` re-exported encrypted: legacy SEC1 PEM with Proc-Type/DEK-Info headers, or PKCS#8. */
function encryptedKey(keyPem: string, type: 'sec1' | 'pkcs8'): string {
  return createPrivateKey(keyPem).export({ type, format: 'pem', cipher: 'aes-128-cbc', passphrase: 'secret' }).toString();
}

/**
 * Not running as root: chmod 000 is enough. Rather than depend on how the watcher reports a mode
 * change, the test asks for a re-read, as SIGHUP would.
 */
async function unreadableInProcess(): Promise<void> {
  const f = await startWithGoodTls();
  await chmod(f.certFile, 0o000);
  await f.source.reloadAll();
  const message = await expectRefused(f, ErrorCode.FileUnreadable, f.certFile);
  expect(message).toContain('EACCES');
  await chmod(f.certFile, 0o644);
  await expectRecovers(f);
}

/** As root, reads ignore file modes: run the source as nobody (65534) in a child process. */
async function unreadableAsOtherUser(): Promise<void> {
  await chmod(dir, 0o755);
  const writer = new RenameWriter(dir);
  const good = await issueLeaf(ca);
  await writer.init({ 'tls.crt': good.chainPem, 'tls.key': good.keyPem });
  const certFile = writer.path('tls.crt');
  const keyFile = writer.path('tls.key');
  await chmod(certFile, 0o644);
  await chmod(keyFile, 0o644);

  const script = await bundleForOtherUser(path.join(repoRoot, 'test/helpers/file-source-child.ts'));
  const child = startChild(script, { tls: [{ name: NAME, certFile, keyFile }] });
  try {
    const first = await child.next();
    expect(first.uid).toBe(65534);
    expect(first.status[0]).toMatchObject({ state: 'ok' });
    expect(first.served[NAME]?.serial).toBe(good.serialNumber);
    const version = first.served[NAME]?.version;

    await chmod(certFile, 0o000);
    const refused = await child.request('reload');
    expect(refused.pushes[NAME]).toBe(1);
    expect(refused.served[NAME]).toEqual({ version, serial: good.serialNumber });
    expect(refused.status[0]).toMatchObject({ state: 'error', version, lastError: { code: ErrorCode.FileUnreadable } });
    expect(refused.status[0]?.lastError?.message).toContain(certFile);
    expect(refused.status[0]?.lastError?.message).toContain('EACCES');
    const warning = refused.logs.map((l) => JSON.parse(l) as Record<string, unknown>).find((r) => r.level === 'warn');
    expect(warning).toMatchObject({ name: NAME, code: ErrorCode.FileUnreadable, files: [certFile, keyFile] });

    await chmod(certFile, 0o644);
    const next = await issueLeaf(ca);
    await writer.rotate({ 'tls.crt': next.chainPem, 'tls.key': next.keyPem });
    const recovered = await child.request('reload');
    expect(recovered.status[0]).toMatchObject({ state: 'ok' });
    expect(recovered.status[0]?.lastError).toBeUndefined();
    expect(recovered.served[NAME]?.serial).toBe(next.serialNumber);
    expect(recovered.pushes[NAME]).toBe(2);
    for (const r of [first, refused, recovered]) logs.lines.push(...r.logs); // checked in afterEach
  } finally {
    await child.close();
    await script.remove();
  }
}

interface Child {
  next(): Promise<ChildReport>;
  request(command: string): Promise<ChildReport>;
  close(): Promise<void>;
}

/** Runs the bundled file-source child as nobody (65534) from its temp folder, not from the checkout. */
function startChild(script: OtherUserScript, config: object): Child {
  const proc: ChildProcessWithoutNullStreams = spawn(process.execPath, [script.file, JSON.stringify(config)], {
    cwd: script.dir,
    uid: 65534,
    gid: 65534,
    stdio: 'pipe',
  });
  let stderr = '';
  proc.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  const exited = new Promise<void>((resolve) => proc.once('exit', () => resolve()));
  const lines = createInterface({ input: proc.stdout })[Symbol.asyncIterator]();

  const next = async (): Promise<ChildReport> => {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`no report from the child process; stderr: ${stderr}`)), 15_000);
    });
    try {
      const line = await Promise.race([lines.next(), timeout]);
      if (line.done) throw new Error(`child process exited; stderr: ${stderr}`);
      return JSON.parse(line.value) as ChildReport;
    } finally {
      clearTimeout(timer);
    }
  };
  return {
    next,
    request: (command) => {
      proc.stdin.write(command + '\n');
      return next();
    },
    close: async () => {
      proc.stdin.end();
      const killer = setTimeout(() => proc.kill(), 5_000);
      await exited;
      clearTimeout(killer);
    },
  };
}
