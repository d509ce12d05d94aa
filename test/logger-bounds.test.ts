import { describe, expect, it } from 'vitest';
import { createLogger, MAX_LOG_ARRAY_ITEMS, MAX_LOG_FIELD_CHARS, MAX_LOG_LINE_CHARS, type LogFormat } from '../src/core/logger.js';
import { RateLimitedWarning } from '../src/core/rate-limited-log.js';

function capture(format: LogFormat): { lines: string[]; log: ReturnType<typeof createLogger> } {
  const lines: string[] = [];
  return { lines, log: createLogger({ format, write: (l) => lines.push(l) }) };
}

describe('log line size', () => {
  for (const format of ['json', 'text'] as const) {
    it(`a 1 MiB field value cannot make a 1 MB line (${format})`, () => {
      const { lines, log } = capture(format);
      log.warn('unknown secret', { name: 'n'.repeat(1024 * 1024) });
      expect(lines).toHaveLength(1);
      expect(lines[0]!.length).toBeLessThan(MAX_LOG_FIELD_CHARS + 300);
      expect(lines[0]).toContain(`[${1024 * 1024 - MAX_LOG_FIELD_CHARS} more chars]`);
    });

    it(`10,000 names in an array field show the first ${MAX_LOG_ARRAY_ITEMS} and a count (${format})`, () => {
      const { lines, log } = capture(format);
      log.warn('unknown secrets', { names: Array.from({ length: 10_000 }, (_, i) => `spiffe://example.org/n${i}`) });
      expect(lines[0]).toContain('n31');
      expect(lines[0]).not.toContain('n32"');
      expect(lines[0]).toContain(`[${10_000 - MAX_LOG_ARRAY_ITEMS} more items]`);
    });

    it(`many bounded fields together still stay under ${MAX_LOG_LINE_CHARS} characters (${format})`, () => {
      const { lines, log } = capture(format);
      const fields = Object.fromEntries(Array.from({ length: 100 }, (_, i) => [`f${i}`, 'x'.repeat(MAX_LOG_FIELD_CHARS)]));
      log.error('many fields', fields);
      expect(lines[0]!.length).toBeLessThanOrEqual(MAX_LOG_LINE_CHARS);
      expect(lines[0]).toContain('many fields');
      expect(lines[0]).toContain('truncatedLogLine');
    });
  }

  it('a private key is redacted before a value is cut, so no part of it survives the cut', () => {
    const { lines, log } = capture('json');
    const key = `-----BEGIN PRIVATE KEY-----\n${'A'.repeat(5000)}\n-----END PRIVATE KEY-----`;
    log.warn('oops', { value: 'x'.repeat(MAX_LOG_FIELD_CHARS - 10) + key });
    expect(lines[0]).not.toContain('AAAA');
    expect(lines[0]).not.toContain('BEGIN PRIV');
  });

  it('nested values are bounded too', () => {
    const { lines, log } = capture('json');
    log.info('nested', { request: { names: ['a'.repeat(100_000)] } });
    expect(lines[0]!.length).toBeLessThan(MAX_LOG_FIELD_CHARS + 300);
  });
});

describe('RateLimitedWarning', () => {
  it('logs the first of a burst, then one line per interval carrying the number suppressed', () => {
    const { lines, log } = capture('json');
    let now = 0;
    const w = new RateLimitedWarning(log, 'closing connection', 10_000, () => now);
    for (let i = 0; i < 2000; i++) w.warn({ i });
    expect(lines).toHaveLength(1);
    now = 10_000;
    w.warn({ i: 2000 });
    expect(lines).toHaveLength(2);
    expect(JSON.parse(lines[1]!)).toMatchObject({ msg: 'closing connection', i: 2000, suppressed: 1999, suppressedWindowMs: 10_000 });
    expect(w.count).toBe(2001);
  });

  it('writes what a burst suppressed when the window ends, even if nothing else comes', async () => {
    const { lines, log } = capture('json');
    const w = new RateLimitedWarning(log, 'closing connection', 50);
    for (let i = 0; i < 100; i++) w.warn({ i });
    expect(lines).toHaveLength(1);
    await new Promise<void>((resolve) => {
      const check = (): void => void (lines.length === 2 ? resolve() : setTimeout(check, 5));
      check();
    });
    // The first line, then the last call of the burst carrying the 98 before it.
    expect(JSON.parse(lines[1]!)).toMatchObject({ i: 99, suppressed: 98 });
  });
});
