/**
 * Structured logging through pino: one JSON object per line (default), or pino-pretty's one-line
 * text form. Callers pass fields, never secret material; every value is still bounded and stripped
 * of PEM private keys here (`boundLogValue`), and each finished line is redacted again, so a key can
 * reach no log line by any path (a field, a nested field, an Error's message, a child's bindings).
 *
 * Why pino: it is what Node operators expect (its JSON shape, its pretty printer, its transports),
 * and it writes a line with less work than our own logger did. The `Logger` interface below stays
 * the project's: call sites do not depend on pino.
 */
import { createRequire } from 'node:module';
import { pino, type DestinationStream, type Logger as PinoLogger } from 'pino';

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

// Case-insensitive: OpenSSL and most parsers accept `BEGIN private KEY` too, so a hand-edited or
// odd-cased key is still a key.
const PRIVATE_KEY_BLOCK = /-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?(-----END [A-Z ]*PRIVATE KEY-----|$)/gi;
/** The same block as it appears inside a JSON string, where line breaks are the two characters `\n`. */
const PRIVATE_KEY_HEADER = /-----BEGIN [A-Z ]*PRIVATE KEY-----/i;

/** Replaces any PEM private key block in a string; keys must never reach a log line. */
export function redact(text: string): string {
  return PRIVATE_KEY_HEADER.test(text) ? text.replace(PRIVATE_KEY_BLOCK, '[REDACTED PRIVATE KEY]') : text;
}

/** Longest string a single field value (or `msg`) keeps in a log line, in characters. */
export const MAX_LOG_FIELD_CHARS = 2048;
/** Most items of an array field a log line shows; the rest are counted. */
export const MAX_LOG_ARRAY_ITEMS = 32;
/** Longest log line, in characters; a longer line is replaced by a short one that says so. */
export const MAX_LOG_LINE_CHARS = 16 * 1024;
/** Deepest nesting of objects a log line shows; deeper values become `[nested too deep]`. */
const MAX_LOG_DEPTH = 8;

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

/**
 * A bounded copy of a field value, recursively: strings and arrays as `boundLogValue`, an Error as
 * `{ name, message, code? }` (never its stack unless passed as a field), a Set or Map as an array,
 * a Buffer by its length (bytes may be key material), objects to `MAX_LOG_DEPTH` levels.
 */
function boundDeep(value: unknown, depth: number): unknown {
  if (value === null || typeof value !== 'object') {
    if (typeof value === 'bigint') return value.toString();
    return boundLogValue(value);
  }
  if (depth >= MAX_LOG_DEPTH) return '[nested too deep]';
  if (value instanceof Error) {
    const code = read(value, 'code');
    return { name: boundLogValue(read(value, 'name')), message: boundLogValue(read(value, 'message')), ...(typeof code === 'string' ? { code } : {}) };
  }
  if (Buffer.isBuffer(value) || value instanceof Uint8Array) return `[${value.byteLength} bytes]`;
  if (value instanceof Date) return value.toISOString();
  const items = value instanceof Map ? [...value.entries()] : value instanceof Set ? [...value] : value;
  if (Array.isArray(items)) return (boundLogValue(items) as unknown[]).map((v) => boundDeep(v, depth + 1));
  return boundFields(items as LogFields, depth + 1);
}

function boundFields(fields: LogFields, depth = 1): LogFields {
  const out: LogFields = {};
  let keys: string[];
  try {
    keys = Object.keys(fields);
  } catch {
    return { '[unreadable]': true }; // a Proxy whose ownKeys trap throws
  }
  for (const key of keys) out[boundKey(key)] = boundDeep(read(fields, key), depth);
  return out;
}

/** One property; a getter (or Proxy trap) that throws must not make the log call throw. */
function read(holder: object, key: string): unknown {
  try {
    return (holder as Record<string, unknown>)[key];
  } catch (err) {
    return `[unreadable: ${err instanceof Error ? err.name : typeof err}]`;
  }
}

/** A field name is bounded and redacted like a value (a key pasted as a name is still a key). */
function boundKey(key: string): string {
  return boundLogValue(key, 256) as string;
}

export interface LoggerOptions {
  level?: LogLevel;
  format?: LogFormat;
  /** Where finished lines go (without the trailing newline); default: stdout, written synchronously. */
  write?: (line: string) => void;
  now?: () => Date;
}

/**
 * The pino destination: redacts the whole line once more, replaces an over-long line by a short
 * one, renders the text format, then writes. Synchronous, so a line logged just before
 * `process.exit` is never lost.
 */
function sink(format: LogFormat, write: (line: string) => void): DestinationStream {
  const pretty = format === 'text' ? loadPrettyPrinter() : undefined;
  return {
    write(chunk: string): void {
      let line = redact(chunk.endsWith('\n') ? chunk.slice(0, -1) : chunk);
      if (line.length > MAX_LOG_LINE_CHARS) {
        // Many bounded fields can still add up: keep time, level, message and say how long it was.
        let record: LogFields = {};
        try {
          record = JSON.parse(line) as LogFields;
        } catch {
          // Not reachable with pino's output and the bounds above; never let a log call throw.
        }
        line = JSON.stringify({ level: record.level, time: record.time, msg: boundLogValue(record.msg, 512), truncatedLogLine: line.length });
      }
      if (pretty) {
        line = pretty(line).replace(/\n$/, '');
        if (line.length > MAX_LOG_LINE_CHARS) line = `${line.slice(0, MAX_LOG_LINE_CHARS - 40)}...[truncatedLogLine ${line.length}]`;
      }
      write(line);
    },
  };
}

/** pino-pretty, loaded only when the text format is chosen (it costs start-up time otherwise). */
function loadPrettyPrinter(): (line: string) => string {
  const require = createRequire(import.meta.url);
  const { prettyFactory } = require('pino-pretty') as typeof import('pino-pretty');
  return prettyFactory({ singleLine: true, colorize: false, translateTime: "UTC:yyyy-mm-dd'T'HH:MM:ss.l'Z'" });
}

let stdoutWrite: ((line: string) => void) | undefined;
/** stdout through a synchronous SonicBoom (pino's own destination), shared by every logger. */
function defaultWrite(): (line: string) => void {
  if (!stdoutWrite) {
    const out = pino.destination({ fd: 1, sync: true });
    stdoutWrite = (line) => void out.write(line + '\n');
  }
  return stdoutWrite;
}

/**
 * A logger writing one line per call at `options.level` (default `info`) and above, in
 * `options.format` (default `json`: `{"level":"info","time":"<ISO 8601>","msg":...,...fields}`).
 */
export function createLogger(options: LoggerOptions = {}, bound: LogFields = {}): Logger {
  const now = options.now;
  const root = pino(
    {
      level: options.level ?? 'info',
      base: undefined, // no pid/hostname: the line shape stays what it was before pino
      timestamp: now ? () => `,"time":"${now().toISOString()}"` : pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
    },
    sink(options.format ?? 'json', options.write ?? defaultWrite()),
  );
  return wrap(Object.keys(bound).length > 0 ? root.child(boundFields(bound)) : root);
}

function wrap(p: PinoLogger): Logger {
  const emit =
    (level: LogLevel) =>
    (msg: string, fields?: LogFields): void => {
      if (!p.isLevelEnabled(level)) return;
      const text = boundLogValue(msg) as string;
      if (fields) p[level](boundFields(fields), text);
      else p[level](text);
    };
  return {
    debug: emit('debug'),
    info: emit('info'),
    warn: emit('warn'),
    error: emit('error'),
    child: (fields) => wrap(p.child(boundFields(fields))),
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
