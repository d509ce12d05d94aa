#!/usr/bin/env node
// First: SIGHUP must not terminate the process while the rest loads and starts (early-signals.ts).
import { onSighup, restoreDefaultSighup, sighupPending } from './early-signals.js';
import { readFileSync } from 'node:fs';
import { createLogger } from '../core/logger.js';
import { ErrorCode, SdsError, describeError, errorCode, errorMessage } from '../core/errors.js';
import { parseCommandLine, USAGE } from './args.js';
import { readConfigFile, type ServerConfig } from './config.js';
import type { RunningApp } from './app.js';
import { disableDebuggerSignal } from './sigusr1.js';

/**
 * Subcommands; `sds-server` without one (or with options only) runs the server. Each is imported
 * when used: the server's start-up does not load them (start-up time, BENCHMARKS.md), and its
 * window before the SIGHUP listener exists stays small.
 */
const SUBCOMMANDS: Record<string, (argv: string[]) => Promise<number>> = {
  doctor: async (argv) => (await import('./doctor-command.js')).doctorMain(argv),
  check: async (argv) => (await import('./check-command.js')).checkMain(argv),
  fetch: async (argv) => (await import('./fetch-command.js')).fetchMain(argv),
  status: async (argv) => (await import('./status-command.js')).runStatusCommand(argv, (s) => process.stdout.write(s), (s) => process.stderr.write(s)),
};

/** Runs a subcommand; command-line errors exit 2 (docs/errors.md). */
async function subcommand(run: (argv: string[]) => Promise<number>, argv: string[]): Promise<number> {
  try {
    return await run(argv);
  } catch (err) {
    process.stderr.write(`sds-server: ${describeError(err)}\n`);
    return 2;
  }
}

/**
 * Start-up failures an operator fixes by changing the configuration or the socket's surroundings
 * exit with 2, like command-line errors (docs/errors.md); other start-up failures exit with 1.
 */
const EXIT_2_AT_START = new Set<string>([
  ErrorCode.ConfigInvalid,
  ErrorCode.SocketInUse,
  ErrorCode.SocketPathNotSocket,
  ErrorCode.SocketPathTooLong,
  ErrorCode.SocketPathUnsupported,
  ErrorCode.SocketDirUnsafe,
  ErrorCode.CaDataDir,
  ErrorCode.AdminListen,
]);

/** The `sds-server` program: parse, start, run until SIGTERM/SIGINT, shut down cleanly. */
async function main(): Promise<number> {
  const first = process.argv[2];
  const sub = first !== undefined ? SUBCOMMANDS[first] : undefined;
  if (sub) {
    restoreDefaultSighup();
    return subcommand(sub, process.argv.slice(3));
  }
  let command;
  try {
    command = parseCommandLine(process.argv.slice(2));
  } catch (err) {
    process.stderr.write(`sds-server: ${describeError(err)}\n`);
    return 2;
  }
  if (command.kind === 'help') {
    process.stdout.write(USAGE);
    return 0;
  }
  if (command.kind === 'version') {
    const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string };
    process.stdout.write(`${pkg.version}\n`);
    return 0;
  }

  const log = createLogger(command.config.log);
  disableDebuggerSignal(log);
  const argv = process.argv.slice(2);
  // A reload reads the config file and the command line again, as at start, but the file without
  // blocking the event loop (a FIFO or a device put in its place is refused, not waited on).
  const load = async (): Promise<ServerConfig> => {
    const configText = command.configFile !== undefined ? await readConfigFile(command.configFile) : undefined;
    const again = parseCommandLine(argv, process.env, configText !== undefined ? { configText } : {});
    if (again.kind !== 'run') throw new SdsError(ErrorCode.ConfigInvalid, 'config reload: the command line no longer runs the server');
    return again.config;
  };
  const configFile = command.configFile;
  // Nothing a client or a file does may take the process down; log what escaped and keep serving.
  // Installed before start-up so a stray error while the CA starts is logged the same way.
  process.on('uncaughtException', (err) => log.error('unexpected error (still serving)', { error: err.message, stack: err.stack }));
  process.on('unhandledRejection', (reason) => log.error('unexpected rejection (still serving)', { error: String(reason) }));
  let app: RunningApp;
  try {
    if (sighupPending()) log.info('SIGHUP during start-up: the reload runs once the server is running');
    const { startApp } = await import('./app.js');
    app = await startApp(command.config, log, {
      ...(configFile !== undefined ? { load, configFile } : {}),
      ...(command.watchConfig ? { watchConfig: true } : {}),
    });
  } catch (err) {
    // Every start-up failure carries a code; one without ours is a path we did not foresee.
    const code = errorCode(err, ErrorCode.Internal);
    log.error('could not start', { code, error: errorMessage(err) });
    return EXIT_2_AT_START.has(code) ? 2 : 1;
  }

  // SIGHUP: with --config, the config is read again and applied live (src/cli/reload.ts); in every
  // case every secret file is then re-read at once (the behaviour documented before config reload).
  // One that arrived during start-up (held by early-signals.ts) runs now, once.
  onSighup(() => {
    log.info(configFile !== undefined ? 'SIGHUP: reloading the config and re-reading secret files' : 'SIGHUP: re-reading secret files');
    const running = app;
    (configFile !== undefined ? running.reloadConfig('SIGHUP') : Promise.resolve())
      .then(() => running.reload())
      .catch((err: Error) => log.error('reload failed', { error: err.message }));
  });
  // An operator-triggered CA rollover (embedded CA): new root, both roots served, leaves re-issued,
  // old root dropped once nothing chains to it.
  process.on('SIGUSR2', () => {
    log.info('SIGUSR2: rolling the CA root over');
    app.rolloverCaRoot().then(
      () => log.info('CA root rollover done'),
      (err: Error) => log.error('CA root rollover failed', { error: err.message }),
    );
  });
  return new Promise<number>((resolve) => {
    let stopping = false;
    const stop = (signal: string): void => {
      if (stopping) return;
      stopping = true;
      log.info('shutting down', { signal });
      app.stop().then(
        () => resolve(0),
        (err: Error) => {
          log.error('error during shutdown', { error: err.message });
          resolve(1);
        },
      );
    };
    process.on('SIGTERM', () => stop('SIGTERM'));
    process.on('SIGINT', () => stop('SIGINT'));
  });
}

main().then((code) => process.exit(code));
