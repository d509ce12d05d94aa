/**
 * Cancellation helpers shared by the CA backends and the CA source: one way to say "aborted", to
 * stop waiting on a call that does not watch its AbortSignal, and to sleep until a signal fires.
 */
import { SdsError, type ErrorCode } from './errors.js';

/**
 * The error for an operation cut short by `signal`: an SdsError with `code` whose message is
 * `<what> aborted[ <during>][: <reason>]` (the reason's message when it is an Error, e.g. a
 * TimeoutError's "no answer within 10000 ms"). Named `AbortError`, the DOM convention for a
 * cancelled operation.
 */
export function abortError(code: ErrorCode, what: string, signal: AbortSignal, during?: string): SdsError {
  const reason = signal.reason instanceof Error ? `: ${signal.reason.message}` : '';
  const err = new SdsError(code, `${what} aborted${during ? ` ${during}` : ''}${reason}`, { cause: signal.reason });
  err.name = 'AbortError';
  return err;
}

/** True when `signal` fired because of `AbortSignal.timeout`, not a caller's abort. */
export function timedOut(signal: AbortSignal): boolean {
  return signal.reason instanceof Error && signal.reason.name === 'TimeoutError';
}

/**
 * Settles as `promise` does, unless `signal` aborts first: then rejects at once with `onAbort()`.
 * For calls that react to their signal late or never (the AWS SDK's retry sleeps, a CA backend);
 * a rejection of `promise` after the abort is swallowed, never an unhandled rejection.
 */
export function raceAbort<T>(promise: Promise<T>, signal: AbortSignal, onAbort: () => Error): Promise<T> {
  if (signal.aborted) {
    promise.catch(() => undefined);
    return Promise.reject(onAbort());
  }
  return new Promise<T>((resolve, reject) => {
    const abort = (): void => reject(onAbort());
    signal.addEventListener('abort', abort, { once: true });
    promise.then(
      (value) => {
        signal.removeEventListener('abort', abort);
        resolve(value);
      },
      (err: unknown) => {
        signal.removeEventListener('abort', abort);
        reject(err);
      },
    );
  });
}

/** Resolves after `ms` milliseconds; rejects with `onAbort()` as soon as `signal` aborts. */
export function sleep(ms: number, signal: AbortSignal, onAbort: () => Error): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  const slept = new Promise<void>((resolve) => (timer = setTimeout(resolve, ms)));
  return raceAbort(slept, signal, onAbort).finally(() => clearTimeout(timer));
}
