/**
 * SIGHUP from the very start. Node's default for SIGHUP terminates the process, and the real
 * handler (main.ts) needs the running app; without a listener until then, a SIGHUP sent while the
 * modules load or the CA is set up (a config-management tool reloading every service, say) would
 * kill the server. main.ts imports this module first, so its listener exists as soon as main's own
 * module graph runs; a SIGHUP before the handler is installed is held and applied once.
 */
let handler: (() => void) | undefined;
let pending = false;

const listener = (): void => {
  if (handler) handler();
  else pending = true;
};
process.on('SIGHUP', listener);

/** Subcommands (doctor, fetch, ...) keep Node's default: a hang-up ends them (one held is re-sent). */
export function restoreDefaultSighup(): void {
  process.removeListener('SIGHUP', listener);
  if (pending) process.kill(process.pid, 'SIGHUP');
}

/** Installs the SIGHUP handler; a SIGHUP received before (any number) runs it once, now. */
export function onSighup(run: () => void): void {
  handler = run;
  if (pending) {
    pending = false;
    run();
  }
}

/** True when a SIGHUP arrived and no handler has taken it yet. */
export function sighupPending(): boolean {
  return pending;
}
