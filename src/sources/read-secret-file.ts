/**
 * Reads one secret file and turns every way that can fail into an operator-facing Problem
 * naming the file. Never throws.
 */
import { constants, type Stats } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';
import { ErrorCode, fail, ok, type Result } from '../ops/errors.js';

export async function readSecretFile(file: string): Promise<Result<string>> {
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
    if (!stats.isFile()) return fail(ErrorCode.NotAFile, `${file}: is ${describeType(stats)}, not a regular file`);
    return ok(await handle.readFile('utf8'));
  } catch (err) {
    return fail(ErrorCode.FileUnreadable, `${file}: cannot be read (${errorCode(err)})`);
  } finally {
    await handle.close().catch(() => undefined);
  }
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
