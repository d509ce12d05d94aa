/**
 * SIGUSR1 must not open Node's debugger (the inspector on 127.0.0.1:9229, where any local user
 * could connect and run code as this server: issue 13).
 *
 * Node 20 has no `--disable-sigusr1` (added in 22.14 / 23.7), and a `process.on('SIGUSR1')`
 * listener alone does not stop it: measured on Node 20.20, the debugger still opens and the
 * listener is never called. What works is to set the signal's disposition to SIG_IGN through the C
 * library first (koffi, already our FFI for SO_PEERCRED); a listener added afterwards then gets the
 * signal through libuv, and Node's inspector trigger is gone for the life of the process.
 */
import { createRequire } from 'node:module';
import type { Logger } from '../core/logger.js';

const SIGUSR1 = 10; // Linux (x86, arm, riscv); signal(7)
const SIG_IGN = 1;

/**
 * Stops SIGUSR1 from opening the debugger and logs each SIGUSR1 instead. Returns false (after a
 * warning) where that is not possible: not Linux, or the C library cannot be bound; then Node's
 * default stays, unless the process runs with `--disable-sigusr1` (Node >= 22.14).
 */
export function disableDebuggerSignal(log: Logger): boolean {
  const announce = (): void => {
    process.on('SIGUSR1', () => log.warn('SIGUSR1 ignored: this server does not open a debugger on a signal (start it with node --inspect to debug)'));
  };
  if (process.execArgv.includes('--disable-sigusr1')) {
    announce();
    return true;
  }
  if (process.platform !== 'linux') {
    log.warn('SIGUSR1 would open the Node.js debugger on 127.0.0.1:9229; run node with --disable-sigusr1 (Node >= 22.14) to prevent it', { platform: process.platform });
    return false;
  }
  let problem: string | undefined;
  try {
    const require = createRequire(import.meta.url);
    const koffi = require('koffi') as typeof import('koffi');
    // sighandler_t signal(int, sighandler_t): the handler is a pointer; SIG_IGN is (void (*)(int)) 1.
    const signal = koffi.load('libc.so.6').func('intptr_t signal(int signum, intptr_t handler)') as unknown as (signum: number, handler: number) => number | bigint;
    if (Number(signal(SIGUSR1, SIG_IGN)) === -1) problem = 'signal(SIGUSR1, SIG_IGN) returned SIG_ERR';
  } catch (err) {
    problem = (err as Error).message;
  }
  if (problem !== undefined) {
    log.warn('cannot stop SIGUSR1 from opening the Node.js debugger on 127.0.0.1:9229', { error: problem });
    return false;
  }
  announce();
  return true;
}
