/**
 * Reads one secret file and turns every way that can fail into an operator-facing Problem
 * naming the file. Never throws.
 */
import { closeSync, constants, fstatSync, openSync, readSync, type Stats } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';
import { ErrorCode, SdsError, fail, ok, type Result } from './errors.js';

/**
 * Largest secret file read, in bytes (1 MiB). A certificate chain or bundle is a few KiB; a real
 * bundle of hundreds of roots stays well under this. Anything bigger is refused before it is read
 * whole, so a runaway file cannot hold memory or the event loop.
 */
export const MAX_SECRET_FILE_BYTES = 1024 * 1024;

export async function readSecretFile(file: string, maxBytes: number = MAX_SECRET_FILE_BYTES): Promise<Result<string>> {
  let handle: FileHandle;
  try {
    // O_NONBLOCK: a FIFO put in place of a certificate must not hang the open (and a libuv
    // thread) until some writer appears; it has no effect on regular files.
    handle = await open(file, constants.O_RDONLY | constants.O_NONBLOCK);
  } catch (err) {
    return openFailure(file, err);
  }
  try {
    // fstat of the opened descriptor, not stat of the path: the path may be swapped in between.
    const stats = await handle.stat();
    const refused = refuseStats(file, stats, maxBytes);
    if (refused) return refused;
    const buffer = bufferFor(stats, maxBytes);
    let length = 0;
    while (length < buffer.length) {
      const { bytesRead } = await handle.read(buffer, length, buffer.length - length, null);
      if (bytesRead === 0) break;
      length += bytesRead;
    }
    return contentOf(file, buffer, length, maxBytes);
  } catch (err) {
    return fail(ErrorCode.FileUnreadable, `${file}: cannot be read (${errorCode(err)})`);
  } finally {
    await handle.close().catch(() => undefined);
  }
}

/**
 * {@link readSecretFile} without leaving the event loop thread: same checks, same problems.
 *
 * For the file watcher's re-reads: a secret file is a few KiB on a local disk or tmpfs, which a
 * synchronous read takes microseconds for, while the asynchronous read makes four thread-pool
 * round trips per file (open, fstat, read, close) that each wait for a scheduling slot on a busy
 * machine. That wait, not the read, dominated the time from rename to publish.
 */
export function readSecretFileSync(file: string, maxBytes: number = MAX_SECRET_FILE_BYTES): Result<string> {
  let fd: number;
  try {
    fd = openSync(file, constants.O_RDONLY | constants.O_NONBLOCK);
  } catch (err) {
    return openFailure(file, err);
  }
  try {
    const stats = fstatSync(fd);
    const refused = refuseStats(file, stats, maxBytes);
    if (refused) return refused;
    const buffer = bufferFor(stats, maxBytes);
    let length = 0;
    while (length < buffer.length) {
      const bytesRead = readSync(fd, buffer, length, buffer.length - length, null);
      if (bytesRead === 0) break;
      length += bytesRead;
    }
    return contentOf(file, buffer, length, maxBytes);
  } catch (err) {
    return fail(ErrorCode.FileUnreadable, `${file}: cannot be read (${errorCode(err)})`);
  } finally {
    try {
      closeSync(fd);
    } catch {
      // nothing to do: the descriptor is gone either way
    }
  }
}

/** The fstat verdict both readers share: a regular file within the cap, else the problem. */
function refuseStats(file: string, stats: Stats, maxBytes: number): Result<string> | undefined {
  if (!stats.isFile()) return fail(ErrorCode.NotAFile, `${file}: is ${describeType(stats)}, not a regular file`);
  if (stats.size > maxBytes) return tooLarge(file, `${stats.size} bytes`, maxBytes);
  return undefined;
}

/** Room for the file as fstat saw it, and at most one byte past the cap: it may grow after fstat. */
function bufferFor(stats: Stats, maxBytes: number): Buffer {
  return Buffer.alloc(Math.min(maxBytes + 1, Math.max(stats.size, 0) + 64 * 1024));
}

/** The text read, unless the file outgrew the cap or the buffer while it was read. */
function contentOf(file: string, buffer: Buffer, length: number, maxBytes: number): Result<string> {
  if (length > maxBytes) return tooLarge(file, `more than ${maxBytes} bytes`, maxBytes);
  if (length === buffer.length) return fail(ErrorCode.FileUnreadable, `${file}: grew while being read (rotation in progress?)`);
  return ok(buffer.subarray(0, length).toString('utf8'));
}

/** {@link readSecretFile} for start-up reads: throws an SdsError naming the file instead. */
export async function readSecretFileOrThrow(file: string): Promise<string> {
  const result = await readSecretFile(file);
  if (!result.ok) throw new SdsError(result.problem.code, result.problem.message);
  return result.value;
}

function tooLarge(file: string, size: string, maxBytes: number): Result<string> {
  return fail(ErrorCode.FileTooLarge, `${file}: is ${size}, over the ${maxBytes}-byte limit for a secret file`);
}

function openFailure(file: string, err: unknown): Result<string> {
  const code = errorCode(err);
  switch (code) {
    case 'ENOENT':
      return fail(ErrorCode.FileMissing, `${file}: does not exist (or is a symlink to a missing file)`);
    case 'ENOTDIR':
      return fail(ErrorCode.FileMissing, `${file}: does not exist (a parent path component is not a directory)`);
    case 'EISDIR':
      return fail(ErrorCode.NotAFile, `${file}: is a directory, not a regular file`);
    case 'EACCES':
    case 'EPERM':
      return fail(ErrorCode.FileUnreadable, `${file}: permission denied (${code}) for ${processIdentity()}`);
    default:
      return fail(ErrorCode.FileUnreadable, `${file}: cannot be opened (${code})`);
  }
}

/** Who we are, so a permission message says which user needs access. */
function processIdentity(): string {
  const uid = process.getuid?.();
  const gid = process.getgid?.();
  return uid === undefined ? 'this process' : `uid ${uid}, gid ${gid ?? '?'}`;
}

function describeType(stats: Stats): string {
  if (stats.isDirectory()) return 'a directory';
  if (stats.isFIFO()) return 'a named pipe';
  if (stats.isSocket()) return 'a socket';
  if (stats.isCharacterDevice() || stats.isBlockDevice()) return 'a device';
  return 'a special file';
}

function errorCode(err: unknown): string {
  const code = (err as { code?: unknown } | undefined)?.code;
  return typeof code === 'string' ? code : String(err);
}
