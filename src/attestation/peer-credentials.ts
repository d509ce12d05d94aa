import type net from 'node:net';
import { createRequire } from 'node:module';
import { ErrorCode, SdsError } from '../core/errors.js';

/**
 * The kernel's record of who connected to a Unix socket: `struct ucred` of `SO_PEERCRED`
 * (socket(7), unix(7)). The values are those of the connecting process at `connect()` time; the
 * kernel fills them, the client cannot choose them.
 */
export interface PeerCredentials {
  /** Process id (in the server's pid namespace). */
  pid: number;
  /** Effective user id at connect time. */
  uid: number;
  /** Effective group id at connect time. */
  gid: number;
}

/** Linux constants, from <asm-generic/socket.h> (x86-64, arm64, riscv: all use the generic values). */
const SOL_SOCKET = 1;
const SO_PEERCRED = 17;
/** Linux >= 6.5: a pidfd for the process that connected (socket(7)). */
const SO_PEERPIDFD = 77;
/** pidfd_send_signal(2), the same number on every architecture (unified syscall table, Linux >= 5.1). */
const SYS_PIDFD_SEND_SIGNAL = 424;
const ESRCH = 3;
/** sizeof(struct ucred): three 32-bit integers. */
const UCRED_SIZE = 12;

type GetSockOpt = (fd: number, level: number, name: number, value: Buffer, length: Uint32Array) => number;

type PidfdSendSignal = (pidfd: number, signal: number, info: null, flags: number) => number;

interface Libc {
  getsockopt: GetSockOpt;
  pidfdSendSignal: PidfdSendSignal;
  errno: () => number;
}

let libc: Libc | undefined;
let libcProblem: string | undefined;

/**
 * Binds getsockopt(2) from the C library through koffi, once. koffi is an FFI library whose npm
 * package carries prebuilt binaries for each platform (optional dependencies), so `npm ci` needs no
 * compiler and no install script. Loaded lazily so that platforms without it still run the server
 * with attestation off.
 */
function loadLibc(): Libc {
  if (libc) return libc;
  if (libcProblem) throw new SdsError(ErrorCode.PeerCredentials, libcProblem);
  if (process.platform !== 'linux') {
    libcProblem = `peer credentials (SO_PEERCRED) are read on Linux only, not on ${process.platform}`;
    throw new SdsError(ErrorCode.PeerCredentials, libcProblem);
  }
  try {
    // koffi is CommonJS-compatible; require keeps the load synchronous (the accept loop is).
    const require = createRequire(import.meta.url);
    const koffi = require('koffi') as typeof import('koffi');
    const lib = koffi.load('libc.so.6');
    const getsockopt = lib.func('int getsockopt(int fd, int level, int optname, _Out_ void *optval, _Inout_ uint32_t *optlen)') as unknown as GetSockOpt;
    const syscall = lib.func('long syscall(long number, ...)');
    const pidfdSendSignal: PidfdSendSignal = (pidfd, signal, _info, flags) =>
      Number(syscall(SYS_PIDFD_SEND_SIGNAL, 'int', pidfd, 'int', signal, 'void *', null, 'unsigned int', flags));
    libc = { getsockopt, pidfdSendSignal, errno: () => koffi.errno() };
    return libc;
  } catch (err) {
    libcProblem = `cannot bind getsockopt from the C library through koffi: ${(err as Error).message}`;
    throw new SdsError(ErrorCode.PeerCredentials, libcProblem);
  }
}

/**
 * The file descriptor behind an accepted `net.Socket`.
 *
 * Node keeps it on the libuv handle: `socket._handle` is a `Pipe` (Unix socket) or `TCP` wrap whose
 * `fd` getter returns `uv_fileno()` on Unix (-1 on Windows). It is not public API but has been
 * stable since Node 0.x and is used by well-known modules. Reading it is safe here because we call
 * it synchronously inside the `connection` callback: the socket has just been accepted, nothing has
 * read from or closed it yet, so the fd cannot have been closed and reused for another file, and
 * getsockopt(SO_PEERCRED) only reads kernel state.
 */
function socketFd(socket: net.Socket): number {
  const handle = (socket as unknown as { _handle?: { fd?: unknown } | null })._handle;
  const fd = handle?.fd;
  if (typeof fd !== 'number' || fd < 0) {
    throw new SdsError(ErrorCode.PeerCredentials, 'the connection has no file descriptor (closed already, or not a Unix socket on Linux)');
  }
  return fd;
}

/**
 * Reads SO_PEERCRED of an accepted Unix-socket connection: getsockopt(fd, SOL_SOCKET, SO_PEERCRED,
 * &ucred{pid,uid,gid}, &len). Call it once per connection, in the `connection` callback.
 *
 * @throws SdsError `SDS_ERR_PEER_CREDENTIALS` when not on Linux, koffi cannot load, the socket
 *   has no fd, or getsockopt fails (the message names errno). Callers fail closed: close the socket.
 */
export function readPeerCredentials(socket: net.Socket): PeerCredentials {
  const { getsockopt, errno } = loadLibc();
  const fd = socketFd(socket);
  const value = Buffer.alloc(UCRED_SIZE);
  const length = new Uint32Array([UCRED_SIZE]);
  const rc = getsockopt(fd, SOL_SOCKET, SO_PEERCRED, value, length);
  if (rc !== 0) {
    throw new SdsError(ErrorCode.PeerCredentials, `getsockopt(SO_PEERCRED) failed on fd ${fd}: errno ${errno()}`);
  }
  if (length[0] !== UCRED_SIZE) {
    throw new SdsError(ErrorCode.PeerCredentials, `getsockopt(SO_PEERCRED) returned ${length[0]} bytes, expected ${UCRED_SIZE}`);
  }
  const pid = value.readInt32LE(0);
  // pid 0: not a Unix socket (TCP answers pid 0), or the peer lives in a pid namespace this
  // process cannot see (a container without hostPID): nothing can be attested about it.
  if (pid <= 0) {
    throw new SdsError(ErrorCode.PeerCredentials, `the kernel names no peer process (pid ${pid}): not a Unix socket, or the client is in a pid namespace this server cannot see (run it in the host's, e.g. hostPID: true)`);
  }
  return { pid, uid: value.readUInt32LE(4), gid: value.readUInt32LE(8) };
}

/** What SO_PEERPIDFD gave for a connection. */
export type PeerPidfd =
  /** A pidfd of the connecting process; the receiver must close it (fs.closeSync). */
  | { kind: 'pidfd'; fd: number }
  /** The kernel refused a pidfd because the connecting process has already exited (kernels before pidfs kept no pidfd for exited tasks). */
  | { kind: 'exited' }
  /** No SO_PEERPIDFD (Linux older than 6.5, not Linux, no fd): only the start time guards. */
  | { kind: 'unsupported' };

const ENOPROTOOPT = 92;

/**
 * A pidfd for the process that connected (`SO_PEERPIDFD`, Linux >= 6.5): unlike the pid, it can
 * never come to name another process. Read it in the `connection` callback, like the credentials.
 */
export function openPeerPidfd(socket: net.Socket): PeerPidfd {
  let lib: Libc;
  let fd: number;
  try {
    lib = loadLibc();
    fd = socketFd(socket);
  } catch {
    return { kind: 'unsupported' };
  }
  const value = Buffer.alloc(4);
  const length = new Uint32Array([4]);
  if (lib.getsockopt(fd, SOL_SOCKET, SO_PEERPIDFD, value, length) !== 0) {
    const errno = lib.errno();
    // EINVAL/ESRCH: the socket has a peer pid whose process is gone (6.5 <= kernel < pidfs).
    return errno === ENOPROTOOPT || errno === 0 ? { kind: 'unsupported' } : { kind: 'exited' };
  }
  const pidfd = value.readInt32LE(0);
  return length[0] === 4 && pidfd >= 0 ? { kind: 'pidfd', fd: pidfd } : { kind: 'unsupported' };
}

/**
 * Whether the process behind a pidfd still runs: pidfd_send_signal(pidfd, 0) fails with ESRCH once
 * it has exited (a zombie still counts as running here; the start-time check catches those).
 * EPERM (not allowed to signal it) means it exists.
 */
export function pidfdAlive(pidfd: number): boolean {
  const lib = loadLibc();
  return lib.pidfdSendSignal(pidfd, 0, null, 0) === 0 || lib.errno() !== ESRCH;
}
