/**
 * FileSource against real files, real certificates and real fs.watch watchers: the first load, each
 * rotation style repeated, a cert/key pair rotated out of step, files that appear later, close().
 */
import { renameSync, writeFileSync } from 'node:fs';
import { mkdir, symlink, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { ErrorCode } from '../src/core/errors.js';
import { SecretStore } from '../src/secrets/store.js';
import { FileSource, type FileSourceOptions } from '../src/sources/file-source.js';
import { createRootCa, issueLeaf, type CertificateAuthority, type IssuedLeaf } from '../src/x509/issue.js';
import {
  captureLogs,
  InPlaceWriter,
  KubernetesAtomicWriter,
  makeTempDir,
  recordPushes,
  removeTempDir,
  RenameWriter,
  servedSerial,
  sleep,
  waitFor,
  type CapturedLogs,
  type RotationStyle,
} from './helpers/files.js';

// Long enough for any straggling event of a rotation to have caused a second push.
const SETTLE_MS = 200;
const NAME = 'workload';
const SPIFFE_ID = 'spiffe://example.org/ns/default/sa/web';

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

const newLeaf = (): Promise<IssuedLeaf> => issueLeaf(ca, { spiffeId: SPIFFE_ID });
const filesOf = (leaf: IssuedLeaf): Record<string, string> => ({ 'tls.crt': leaf.chainPem, 'tls.key': leaf.keyPem });

async function startSource(certFile: string, keyFile: string, extra: Partial<FileSourceOptions> = {}) {
  const store = new SecretStore();
  const recorder = recordPushes(store, NAME);
  const source = new FileSource({
    tls: [{ name: NAME, certFile, keyFile }],
    bundles: [],
    publisher: store,
    log: logs.logger,
    pollIntervalMs: 0,
    ...extra,
  });
  sources.push(source);
  await source.start();
  return { store, source, pushes: recorder.pushes };
}

describe('FileSource', () => {
  it('publishes the files on start and logs what it serves, without key material', async () => {
    const leaf = await newLeaf();
    const writer = new InPlaceWriter(dir);
    await writer.init(filesOf(leaf));

    const { store, source, pushes } = await startSource(writer.path('tls.crt'), writer.path('tls.key'));

    expect(pushes).toHaveLength(1);
    expect(servedSerial(store, NAME)).toBe(leaf.serialNumber);
    const [status] = source.status();
    expect(status).toMatchObject({ name: NAME, kind: 'tls-certificate', state: 'ok', version: store.get(NAME)?.version });
    expect(status?.files).toEqual([writer.path('tls.crt'), writer.path('tls.key')]);
    expect(status?.lastError).toBeUndefined();
    expect(status?.lastChangeAt).toBeInstanceOf(Date);
    const updated = logs.records().find((r) => r.msg === 'secret updated');
    expect(updated).toMatchObject({
      level: 'info',
      name: NAME,
      version: store.get(NAME)?.version,
      serial: leaf.serialNumber,
      spiffeId: SPIFFE_ID,
    });
    expect(typeof updated?.notAfter).toBe('string');
  });

  it('start() serves before the watchers are ready; a rotation between the read and the watch is still published', async () => {
    const first = await newLeaf();
    const next = await newLeaf();
    const writer = new RenameWriter(dir);
    await writer.init(filesOf(first));

    const { store, source, pushes } = await startSource(writer.path('tls.crt'), writer.path('tls.key'));
    expect(servedSerial(store, NAME)).toBe(first.serialNumber);
    // Synchronously, before the watcher set up by start() can have been armed.
    writeFileSync(path.join(dir, 'tls.key.tmp'), next.keyPem);
    writeFileSync(path.join(dir, 'tls.crt.tmp'), next.chainPem);
    renameSync(path.join(dir, 'tls.key.tmp'), writer.path('tls.key'));
    renameSync(path.join(dir, 'tls.crt.tmp'), writer.path('tls.crt'));

    // watching() includes the re-read that follows the watchers: no waiting for an event here.
    await source.watching();
    expect(servedSerial(store, NAME)).toBe(next.serialNumber);
    expect(pushes.map((p) => p.serial)).toEqual([first.serialNumber, next.serialNumber]);
  });

  const styles: [string, (dir: string) => RotationStyle][] = [
    ['in-place write', (d) => new InPlaceWriter(d)],
    ['write temp + rename', (d) => new RenameWriter(d)],
    ['kubernetes ..data symlink swap', (d) => new KubernetesAtomicWriter(d)],
  ];

  it.each(styles)('%s: three rotations in a row each publish the new serial exactly once', async (style, make) => {
    const writer = make(dir);
    const first = await newLeaf();
    await writer.init(filesOf(first));
    const { store, pushes } = await startSource(writer.path('tls.crt'), writer.path('tls.key'));
    expect(pushes).toHaveLength(1);
    const keyBySerial = new Map([[first.serialNumber, first.keyPem]]);
    const latencies: number[] = [];

    for (let i = 1; i <= 3; i++) {
      const leaf = await newLeaf();
      keyBySerial.set(leaf.serialNumber, leaf.keyPem);
      const before = pushes.length;
      await writer.rotate(filesOf(leaf));
      const rotatedAt = writer instanceof RenameWriter ? writer.lastRenameAt : performance.now();

      await waitFor(`rotation ${i} to be served`, () => servedSerial(store, NAME) === leaf.serialNumber);
      latencies.push((pushes.at(-1)?.at ?? NaN) - rotatedAt);
      await sleep(SETTLE_MS);
      expect(pushes.length, `pushes after rotation ${i}`).toBe(before + 1);
    }

    // Every push served a matching pair: never a new certificate with an old key or vice versa.
    for (const push of pushes) expect(push.privateKeyPem).toBe(keyBySerial.get(push.serial ?? ''));
    const ms = latencies.map((l) => `${l.toFixed(1)} ms`).join(', ');
    console.log(`[${style}] rotation -> publish: ${ms}`);
  });

  it.each(styles)('%s in another directory, reached through symlinks: each rotation is published without the poll', async (_style, make) => {
    // The configured paths are links into a directory of their own (a sidecar's volume, say):
    // the rotation happens there, and only a watch on that directory (or its links) sees it.
    const target = path.join(dir, 'volume');
    const linked = path.join(dir, 'etc');
    await mkdir(target);
    await mkdir(linked);
    const writer = make(target);
    await writer.init(filesOf(await newLeaf()));
    await symlink(writer.path('tls.crt'), path.join(linked, 'tls.crt'));
    await symlink(writer.path('tls.key'), path.join(linked, 'tls.key'));
    const { store, source } = await startSource(path.join(linked, 'tls.crt'), path.join(linked, 'tls.key'));
    await source.watching();
    expect(source.watchedDirs()).toContain(target);

    for (let i = 1; i <= 2; i++) {
      const leaf = await newLeaf();
      await writer.rotate(filesOf(leaf));
      await waitFor(`rotation ${i} to be served`, () => servedSerial(store, NAME) === leaf.serialNumber);
    }
  });

  it('a cert rotated 100 ms before its key: serves only the consistent pair, once; the mismatch shows in status meanwhile and is no warning', async () => {
    const writer = new RenameWriter(dir);
    const first = await newLeaf();
    await writer.init(filesOf(first));
    // A grace far beyond the 100 ms gap, so a slow machine cannot turn the rotation into a warning.
    const { store, source, pushes } = await startSource(writer.path('tls.crt'), writer.path('tls.key'), { refusalGraceMs: 60_000 });
    const next = await newLeaf();

    await writer.rotate({ 'tls.crt': next.chainPem });
    const certWrittenAt = Date.now();
    await waitFor('the mismatch to be reported', () => source.status()[0]?.lastError?.code === ErrorCode.KeyMismatch);
    expect(source.status()[0]?.state).toBe('error');
    expect(servedSerial(store, NAME)).toBe(first.serialNumber);
    await sleep(Math.max(0, 100 - (Date.now() - certWrittenAt)));
    await writer.rotate({ 'tls.key': next.keyPem });

    await waitFor('the new pair to be served', () => servedSerial(store, NAME) === next.serialNumber);
    await sleep(SETTLE_MS);
    expect(pushes.map((p) => p.serial)).toEqual([first.serialNumber, next.serialNumber]);
    expect(pushes[1]?.privateKeyPem).toBe(next.keyPem);
    expect(source.status()[0]).toMatchObject({ state: 'ok', lastError: undefined });

    // A rotation in progress: the refusal is a debug line, never a warning.
    const refusals = logs.records().filter((r) => r.code === ErrorCode.KeyMismatch);
    expect(refusals.length).toBeGreaterThan(0);
    expect(refusals.map((r) => r.level)).toEqual(refusals.map(() => 'debug'));
    expect(refusals[0]).toMatchObject({ name: NAME, files: [writer.path('tls.crt'), writer.path('tls.key')] });
    expect(String(refusals[0]?.message)).toContain(writer.path('tls.key'));
  });

  it('a mismatch that outlives the grace is logged once as a warning, after a re-read', async () => {
    const writer = new RenameWriter(dir);
    const first = await newLeaf();
    await writer.init(filesOf(first));
    const { store, source, pushes } = await startSource(writer.path('tls.crt'), writer.path('tls.key'), { refusalGraceMs: 50 });
    const next = await newLeaf();
    await writer.rotate({ 'tls.crt': next.chainPem });
    await waitFor('the mismatch to be logged', () => logs.records().some((r) => r.level === 'warn' && r.code === ErrorCode.KeyMismatch));
    const refusals = logs.records().filter((r) => r.code === ErrorCode.KeyMismatch);
    // First debug lines from the reads of the rename's events, then one warning from the re-read
    // when the grace ended.
    const levels = refusals.map((r) => r.level);
    expect(levels.filter((l) => l === 'warn')).toHaveLength(1);
    expect(levels.slice(0, -1)).toEqual(levels.slice(0, -1).map(() => 'debug'));
    expect(levels.length).toBeGreaterThan(1);
    expect(refusals.at(-1)).toMatchObject({ name: NAME, files: [writer.path('tls.crt'), writer.path('tls.key')], serving: source.status()[0]?.version });
    expect(servedSerial(store, NAME)).toBe(first.serialNumber);
    expect(pushes).toHaveLength(1);
  });

  it('a file whose directory is missing at start stays pending, then is published when it appears', async () => {
    const leafDir = path.join(dir, 'not', 'yet');
    const certFile = path.join(leafDir, 'tls.crt');
    const keyFile = path.join(leafDir, 'tls.key');
    const { store, source, pushes } = await startSource(certFile, keyFile);

    expect(pushes).toHaveLength(0);
    expect(store.resolve(NAME)).toEqual({ kind: 'pending' });
    const [status] = source.status();
    expect(status).toMatchObject({ state: 'pending', lastError: { code: ErrorCode.FileMissing } });
    expect(status?.lastError?.message).toContain(certFile);
    await source.watching();
    expect(source.watchedDirs()).toEqual([dir]); // the nearest existing ancestor

    const leaf = await newLeaf();
    await mkdir(leafDir, { recursive: true });
    await writeFile(keyFile, leaf.keyPem);
    await writeFile(certFile, leaf.chainPem);

    await waitFor('the late file to be served', () => servedSerial(store, NAME) === leaf.serialNumber);
    expect(source.status()[0]?.state).toBe('ok');
    await waitFor('the watch to move to the real directory', () => source.watchedDirs().includes(leafDir));

    // And it is watched like any other directory from then on.
    const next = await newLeaf();
    await new RenameWriter(leafDir).rotate(filesOf(next));
    await waitFor('a rotation in the late directory', () => servedSerial(store, NAME) === next.serialNumber);
    expect(pushes.map((p) => p.serial)).toEqual([leaf.serialNumber, next.serialNumber]);
  });

  it('the periodic re-read alone picks up a file that appears later', async () => {
    const leafDir = path.join(dir, 'later');
    const certFile = path.join(leafDir, 'tls.crt');
    const keyFile = path.join(leafDir, 'tls.key');
    // A debounce far beyond the test's length: only the poll can publish here.
    const { store, pushes } = await startSource(certFile, keyFile, { debounceMs: 60_000, pollIntervalMs: 100 });
    expect(pushes).toHaveLength(0);

    const leaf = await newLeaf();
    await mkdir(leafDir);
    await writeFile(keyFile, leaf.keyPem);
    await writeFile(certFile, leaf.chainPem);

    await waitFor('the poll to publish', () => servedSerial(store, NAME) === leaf.serialNumber, 3_000);
    await sleep(300); // several more polls of unchanged files
    expect(pushes).toHaveLength(1);
  });

  it('reloadAll() re-reads the files immediately', async () => {
    const writer = new InPlaceWriter(dir);
    await writer.init(filesOf(await newLeaf()));
    const { store, source } = await startSource(writer.path('tls.crt'), writer.path('tls.key'), { debounceMs: 60_000 });
    const next = await newLeaf();
    await writer.rotate(filesOf(next));

    await source.reloadAll();
    expect(servedSerial(store, NAME)).toBe(next.serialNumber);
  });

  it('close() stops watching: a later change is not published', async () => {
    const writer = new RenameWriter(dir);
    const first = await newLeaf();
    await writer.init(filesOf(first));
    const { store, source, pushes } = await startSource(writer.path('tls.crt'), writer.path('tls.key'), {
      pollIntervalMs: 50,
    });

    await source.close();
    await writer.rotate(filesOf(await newLeaf()));
    await sleep(SETTLE_MS + 100);

    expect(pushes).toHaveLength(1);
    expect(servedSerial(store, NAME)).toBe(first.serialNumber);
    expect(source.watchedDirs()).toEqual([]);
  });
});
