import type { LogFields, Logger } from './logger.js';

/**
 * One warning kind that a misbehaving client can trigger at will (thousands of bad connections),
 * logged at most once per `intervalMs`. What falls inside a window is counted, not written: the
 * count goes out as `suppressed` on the next line, which is written when the window ends (or by
 * the next call after it), so a burst of 2,000 gives two lines that together account for all.
 * `level` is `warn` unless given (`info` for a routine line a flood could repeat, e.g. `caller attested`).
 */
export class RateLimitedWarning {
  private lastAt = -Infinity;
  private suppressed = 0;
  private lastFields: LogFields = {};
  private flushTimer: NodeJS.Timeout | undefined;
  /** Times `warn` was called, written or not. */
  count = 0;

  constructor(
    private readonly log: Logger,
    private readonly msg: string,
    private readonly intervalMs = 10_000,
    private readonly now: () => number = () => performance.now(),
    private readonly level: 'info' | 'warn' = 'warn',
  ) {}

  warn(fields: LogFields = {}): void {
    this.count++;
    const t = this.now();
    if (t - this.lastAt < this.intervalMs) {
      this.suppressed++;
      this.lastFields = fields;
      if (!this.flushTimer) {
        this.flushTimer = setTimeout(() => this.flush(), Math.max(0, this.lastAt + this.intervalMs - t));
        this.flushTimer.unref();
      }
      return;
    }
    this.write(fields, t);
  }

  private flush(): void {
    this.flushTimer = undefined;
    if (this.suppressed > 0) this.write(this.lastFields, this.now(), true);
  }

  private write(fields: LogFields, t: number, onlySuppressed = false): void {
    clearTimeout(this.flushTimer);
    this.flushTimer = undefined;
    this.lastAt = t;
    const suppressed = this.suppressed - (onlySuppressed ? 1 : 0);
    this.suppressed = 0;
    // When flushing, the last suppressed call is the one written: the rest are counted.
    this.log[this.level](this.msg, suppressed > 0 ? { ...fields, suppressed, suppressedWindowMs: this.intervalMs } : fields);
  }
}
