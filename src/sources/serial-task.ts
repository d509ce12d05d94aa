/**
 * Runs one async task at a time, coalescing requests: a request made while a run is still waiting
 * to start shares that run; a request made while a run is in progress queues exactly one more.
 * So a burst of file events costs at most one extra read, and two reads of the same secret never
 * overlap (an older read finishing last could otherwise publish stale content).
 */
export class SerialTask {
  private tail: Promise<void> = Promise.resolve();
  private queued: Promise<void> | undefined;

  constructor(private readonly task: () => Promise<void>) {}

  /** Resolves after a run that started after this call has finished. */
  run(): Promise<void> {
    if (this.queued) return this.queued;
    const next = this.tail.then(() => {
      this.queued = undefined;
      return this.task();
    });
    this.queued = next;
    // A failed run must not stop later runs; the caller of run() still sees the rejection.
    this.tail = next.catch(() => undefined);
    return next;
  }

  /** Resolves when every run requested so far has finished. */
  idle(): Promise<void> {
    return this.tail;
  }
}
