#!/usr/bin/env node
import { readFileSync } from 'node:fs';
import { createLogger } from '../core/logger.js';
import { ErrorCode, SdsError } from '../core/errors.js';
import { parseCommandLine, USAGE } from './args.js';
import { startApp } from './app.js';

/**
 * Subcommands; `sds-server` without one (or with options only) runs the server. Each is imported
 * when used, so the server's start-up does not load them (start-up time, BENCHMARKS.md).
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
    process.stderr.write(`sds-server: ${err instanceof SdsError ? `${err.code}: ${err.message}` : String(err)}\n`);
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
]);

/** The `sds-server` program: parse, start, run until SIGTERM/SIGINT, shut down cleanly. */
async function main(): Promise<number> {
  const first = process.argv[2];
  const sub = first !== undefined ? SUBCOMMANDS[first] : undefined;
  if (sub) return subcommand(sub, process.argv.slice(3));
  let command;
  try {
    command = parseCommandLine(process.argv.slice(2));
  } catch (err) {
    process.stderr.write(`sds-server: ${err instanceof SdsError ? `${err.code}: ${err.message}` : String(err)}\n`);
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
  let app;
  try {
    app = await startApp(command.config, log);
  } catch (err) {
    log.error('could not start', err instanceof SdsError ? { code: err.code, error: err.message } : { error: String(err) });
    return err instanceof SdsError && EXIT_2_AT_START.has(err.code) ? 2 : 1;
  }

  // Nothing a client or a file does may take the process down; log what escaped and keep serving.
  process.on('uncaughtException', (err) => log.error('unexpected error (still serving)', { error: err.message, stack: err.stack }));
  process.on('unhandledRejection', (reason) => log.error('unexpected rejection (still serving)', { error: String(reason) }));

  process.on('SIGHUP', () => {
    log.info('SIGHUP: re-reading secret files');
    app.reload().catch((err: Error) => log.error('reload failed', { error: err.message }));
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
