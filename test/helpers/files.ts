/**
 * Test helpers for file-based secret sources: temp dirs, the three ways operators and tools
 * rotate files, log capture, and counting the pushes a store makes for one name.
 */
import { mkdir, mkdtemp, rename, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { createLogger, type Logger } from '../../src/core/logger.js';
import type { SecretStore } from '../../src/secrets/store.js';

export const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

export async function makeTempDir(prefix = 'sds-file-source-'): Promise<string> {
  return mkdtemp(path.join(tmpdir(), prefix));
}

export async function removeTempDir(dir: string): Promise<void> {
  await rm(dir, { recursive: true, force: true });
}

/** Polls `condition` until it holds; fails with `what` after `timeoutMs`. */
export async function waitFor(what: string, condition: () => boolean, timeoutMs = 5_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(5);
  }
}

/** Files of one rotation, by base name (e.g. `tls.crt`). */
export type FileSet = Record<string, string>;

/** A way of replacing the files in a directory, as some tool in the wild does it. */
export interface RotationStyle {
  readonly name: string;
  /** Path under which the consumer reads `base`. */
  path(base: string): string;
  /** Writes the first version. */
  init(files: FileSet): Promise<void>;
  rotate(files: FileSet): Promise<void>;
}

/** `echo ... > tls.crt`: truncate and write the same inode. */
export class InPlaceWriter implements RotationStyle {
  readonly name = 'in-place write';
  constructor(readonly dir: string) {}
  path(base: string): string {
    return path.join(this.dir, base);
  }
  init(files: FileSet): Promise<void> {
    return this.rotate(files);
  }
  async rotate(files: FileSet): Promise<void> {
    for (const [base, text] of Object.entries(files)) await writeFile(this.path(base), text);
  }
}

/** Write a temp file next to the target, then rename it over the target (cert-manager, most editors). */
export class RenameWriter implements RotationStyle {
  readonly name = 'write temp + rename';
  /** performance.now() right after the last rename of the latest rotation. */
  lastRenameAt = 0;
  constructor(readonly dir: string) {}
  path(base: string): string {
    return path.join(this.dir, base);
  }
  init(files: FileSet): Promise<void> {
    return this.rotate(files);
  }
  async rotate(files: FileSet): Promise<void> {
    for (const [base, text] of Object.entries(files)) {
      const tmp = path.join(this.dir, `.${base}.tmp`);
      await writeFile(tmp, text);
      await rename(tmp, this.path(base));
    }
    this.lastRenameAt = performance.now();
  }
}

/**
 * Kubernetes' AtomicWriter (secret and configMap volumes): files live in a timestamped directory,
 * `..data` points at it, and each visible file is a symlink `name -> ..data/name`. A rotation
 * writes a new timestamped directory and swaps `..data` with one rename.
 */
export class KubernetesAtomicWriter implements RotationStyle {
  readonly name = 'kubernetes ..data symlink swap';
  private current: string | undefined;
  private generation = 0;
  constructor(readonly dir: string) {}
  path(base: string): string {
    return path.join(this.dir, base);
  }

  async init(files: FileSet): Promise<void> {
    this.current = await this.writeTimestampedDir(files);
    await symlink(this.current, path.join(this.dir, '..data'));
    for (const base of Object.keys(files)) await symlink(path.join('..data', base), this.path(base));
  }

  async rotate(files: FileSet): Promise<void> {
    const next = await this.writeTimestampedDir(files);
    const tmpLink = path.join(this.dir, '..data_tmp');
    await symlink(next, tmpLink);
    await rename(tmpLink, path.join(this.dir, '..data'));
    if (this.current) await rm(path.join(this.dir, this.current), { recursive: true, force: true });
    this.current = next;
  }

  private async writeTimestampedDir(files: FileSet): Promise<string> {
    // Same shape as the kubelet's names: ..2026_01_01_00_00_00.123456789
    const name = `..2026_01_01_00_00_${String(this.generation++).padStart(2, '0')}.${process.hrtime.bigint() % 1_000_000_000n}`;
    await mkdir(path.join(this.dir, name));
    for (const [base, text] of Object.entries(files)) await writeFile(path.join(this.dir, name, base), text);
    return name;
  }
}

export interface CapturedLogs {
  logger: Logger;
  lines: string[];
  /** Parsed JSON records. */
  records(): Record<string, unknown>[];
}

export function captureLogs(): CapturedLogs {
  const lines: string[] = [];
  return {
    logger: createLogger({ level: 'debug', write: (line) => lines.push(line) }),
    lines,
    records: () => lines.map((l) => JSON.parse(l) as Record<string, unknown>),
  };
}

export interface Push {
  at: number;
  version: string | undefined;
  serial: string | undefined;
  privateKeyPem: string | undefined;
}

/** Records every notification the store makes for `name`, with what was served at that moment. */
export function recordPushes(store: SecretStore, name: string): { pushes: Push[]; stop: () => void } {
  const pushes: Push[] = [];
  const stop = store.watch(name, () => {
    const value = store.get(name)?.value;
    pushes.push({
      at: performance.now(),
      version: store.get(name)?.version,
      serial: value?.kind === 'tls-certificate' ? value.leaf.serialNumber : undefined,
      privateKeyPem: value?.kind === 'tls-certificate' ? value.privateKeyPem : undefined,
    });
  });
  return { pushes, stop };
}

/** Serial of the certificate the store serves under `name`, if any. */
export function servedSerial(store: SecretStore, name: string): string | undefined {
  const value = store.get(name)?.value;
  return value?.kind === 'tls-certificate' ? value.leaf.serialNumber : undefined;
}

/** The first half of a PEM text: what a reader sees in the middle of a non-atomic write. */
export function truncated(pem: string): string {
  return pem.slice(0, Math.floor(pem.length / 2));
}
