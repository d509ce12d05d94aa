import type { LogFields, Logger } from '../ops/logger.js';

/**
 * One warning kind that a misbehaving client can trigger at will (thousands of bad connections),
 * logged at most once per `intervalMs`. The next line that gets through carries `suppressed`: how
 * many were dropped since the previous line, so an operator still sees the volume.
 */
export class RateLimitedWarning {
  private lastAt = -Infinity;
  private suppressed = 0;
  /** Times `warn` was called, logged or not. */
  count = 0;

  constructor(
    private readonly log: Logger,
    private readonly msg: string,
    private readonly intervalMs = 10_000,
    private readonly now: () => number = () => performance.now(),
  ) {}

  warn(fields: LogFields = {}): void {
    this.count++;
    const t = this.now();
    if (t - this.lastAt < this.intervalMs) {
      this.suppressed++;
      return;
    }
    this.lastAt = t;
    const suppressed = this.suppressed;
    this.suppressed = 0;
    this.log.warn(this.msg, suppressed > 0 ? { ...fields, suppressed, suppressedWindowMs: this.intervalMs } : fields);
  }
}
