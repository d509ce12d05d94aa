/**
 * SIGUSR1 must not open Node's debugger (the inspector on 127.0.0.1:9229, where any local user
 * could connect and run code as this server: issue 13).
 *
 * Node 20 has no `--disable-sigusr1` (added in 22.14 / 23.7). A `process.on('SIGUSR1')` listener
 * is enough: while one is installed, Node delivers the signal to it instead of starting the
 * inspector (checked on Node 20.20 by test/cli.test.ts, which reads /proc for a listener on 9229).
 * The listener must be installed before anything could send the signal, so `main` calls this first.
 */
import type { Logger } from '../core/logger.js';

/** Logs each SIGUSR1 instead of opening the debugger. Idempotent. */
export function disableDebuggerSignal(log: Logger): void {
  if (process.listenerCount('SIGUSR1') > 0) return;
  process.on('SIGUSR1', () => log.warn('SIGUSR1 ignored: this server does not open a debugger on a signal (start it with node --inspect to debug)'));
}
