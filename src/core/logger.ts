/**
 * Structured logging: one JSON object per line (default) or a human-readable line.
 * Callers pass fields, never secret material; `redact` is a last line of defence for PEM keys.
 */
export type LogLevel = 'debug' | 'info' | 'warn' | 'error';
export type LogFormat = 'json' | 'text';
export type LogFields = Record<string, unknown>;

export interface Logger {
  debug(msg: string, fields?: LogFields): void;
  info(msg: string, fields?: LogFields): void;
  warn(msg: string, fields?: LogFields): void;
  error(msg: string, fields?: LogFields): void;
  child(fields: LogFields): Logger;
}

const LEVELS: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40 };

const PRIVATE_KEY_BLOCK = /-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?(-----END [A-Z ]*PRIVATE KEY-----|$)/g;

/** Replaces any PEM private key block in a string; keys must never reach a log line. */
export function redact(text: string): string {
  return text.replace(PRIVATE_KEY_BLOCK, '[REDACTED PRIVATE KEY]');
}

/** Longest string a single field value (or `msg`) keeps in a log line, in characters. */
export const MAX_LOG_FIELD_CHARS = 2048;
/** Most items of an array field a log line shows; the rest are counted. */
export const MAX_LOG_ARRAY_ITEMS = 32;
/** Longest log line, in characters; a longer line is replaced by a short one that says so. */
export const MAX_LOG_LINE_CHARS = 16 * 1024;

/**
 * Bounds one value for a log line: a string over `maxChars` keeps its head and says how much was
 * cut; an array keeps its first `maxItems` items and counts the rest. Private keys are redacted
 * before cutting, so a cut can never leave part of a key behind its header.
 */
export function boundLogValue(value: unknown, maxChars = MAX_LOG_FIELD_CHARS, maxItems = MAX_LOG_ARRAY_ITEMS): unknown {
  if (typeof value === 'string') {
    const text = redact(value);
    return text.length > maxChars ? `${text.slice(0, maxChars)}...[${text.length - maxChars} more chars]` : text;
  }
  if (Array.isArray(value) && value.length > maxItems) return [...value.slice(0, maxItems), `...[${value.length - maxItems} more items]`];
  return value;
}

export interface LoggerOptions {
  level?: LogLevel;
  format?: LogFormat;
  write?: (line: string) => void;
  now?: () => Date;
}

export function createLogger(options: LoggerOptions = {}, bound: LogFields = {}): Logger {
  const threshold = LEVELS[options.level ?? 'info'];
  const format = options.format ?? 'json';
  const write = options.write ?? ((line: string) => process.stdout.write(line + '\n'));
  const now = options.now ?? (() => new Date());

  const emit = (level: LogLevel, msg: string, fields?: LogFields): void => {
    if (LEVELS[level] < threshold) return;
    const record: LogFields = { time: now().toISOString(), level, msg, ...bound, ...fields };
    let line = redact(format === 'json' ? JSON.stringify(record, jsonReplacer) : formatText(record));
    if (line.length > MAX_LOG_LINE_CHARS) {
      // Many bounded fields can still add up: keep time, level, message and say how long it was.
      const short: LogFields = { time: record.time, level, msg: boundLogValue(msg, 512), truncatedLogLine: line.length };
      line = format === 'json' ? JSON.stringify(short) : formatText(short);
    }
    write(line);
  };

  return {
    debug: (msg, fields) => emit('debug', msg, fields),
    info: (msg, fields) => emit('info', msg, fields),
    warn: (msg, fields) => emit('warn', msg, fields),
    error: (msg, fields) => emit('error', msg, fields),
    child: (fields) => createLogger(options, { ...bound, ...fields }),
  };
}

/** A logger that drops everything (tests that do not look at logs). */
export const silentLogger: Logger = {
  debug: () => {},
  info: () => {},
  warn: () => {},
  error: () => {},
  child: () => silentLogger,
};

function jsonReplacer(_key: string, value: unknown): unknown {
  if (value instanceof Error) return { name: value.name, message: boundLogValue(value.message) };
  if (value instanceof Set) return boundLogValue([...value]);
  return boundLogValue(value);
}

function formatText(record: LogFields): string {
  const { time, level, msg, ...rest } = record;
  const extras = Object.entries(rest)
    .map(([k, v]) => `${k}=${JSON.stringify(v, jsonReplacer)}`)
    .join(' ');
  return `${String(time)} ${String(level).toUpperCase().padEnd(5)} ${String(boundLogValue(msg))}${extras ? ' ' + extras : ''}`;
}
