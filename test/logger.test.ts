import { generateKeyPairSync } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { createLogger, type LogFormat, type LogLevel } from '../src/core/logger.js';

function capture(format: LogFormat = 'json', level: LogLevel = 'debug'): { lines: string[]; log: ReturnType<typeof createLogger> } {
  const lines: string[] = [];
  return { lines, log: createLogger({ format, level, write: (l) => lines.push(l), now: () => new Date('2026-01-02T03:04:05.678Z') }) };
}

const KEY_PEM = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ format: 'pem', type: 'pkcs8' }).toString();
const RSA_KEY_PEM = generateKeyPairSync('rsa', { modulusLength: 1024 }).privateKey.export({ format: 'pem', type: 'pkcs1' }).toString();
/** A line of the key's base64 body: what would leak if only the header were cut away. */
const KEY_BODY = KEY_PEM.split('\n')[1]!;

describe('logger (pino)', () => {
  it('writes one JSON object per line: level label, ISO time, msg, fields', () => {
    const { lines, log } = capture();
    log.info('listening', { socket: '/run/sds.sock', streams: 3 });
    expect(lines).toHaveLength(1);
    expect(JSON.parse(lines[0]!)).toEqual({ level: 'info', time: '2026-01-02T03:04:05.678Z', msg: 'listening', socket: '/run/sds.sock', streams: 3 });
  });

  it('drops lines below the level and keeps those at or above it', () => {
    const { lines, log } = capture('json', 'warn');
    log.debug('d');
    log.info('i');
    log.warn('w');
    log.error('e');
    expect(lines.map((l) => (JSON.parse(l) as { level: string }).level)).toEqual(['warn', 'error']);
  });

  it('a child carries its fields on every line, and a grandchild adds to them', () => {
    const { lines, log } = capture();
    const child = log.child({ component: 'file-source' });
    child.info('read', { file: 'a.pem' });
    child.child({ secret: 'default' }).warn('stale');
    log.info('parent');
    expect(JSON.parse(lines[0]!)).toMatchObject({ component: 'file-source', file: 'a.pem', msg: 'read' });
    expect(JSON.parse(lines[1]!)).toMatchObject({ component: 'file-source', secret: 'default', msg: 'stale' });
    expect(JSON.parse(lines[2]!)).not.toHaveProperty('component');
  });

  it('an Error field shows its name, message and code, not its stack', () => {
    const { lines, log } = capture();
    const err = Object.assign(new Error('boom'), { code: 'SDS_ERR_FILE_MISSING' });
    log.error('failed', { error: err });
    expect(JSON.parse(lines[0]!)).toMatchObject({ error: { name: 'Error', message: 'boom', code: 'SDS_ERR_FILE_MISSING' } });
    expect(lines[0]).not.toContain('at ');
  });

  it('text format is pino-pretty on one line: time, level, message, fields', () => {
    const { lines, log } = capture('text');
    log.warn('unknown secret', { secret: 'spiffe://example.org/x', streams: 2 });
    // pino-pretty's convention: a `name` field is shown in parentheses after the level.
    log.info('read', { name: 'default' });
    expect(lines).toEqual([
      '[2026-01-02T03:04:05.678Z] WARN: unknown secret {"secret":"spiffe://example.org/x","streams":2}',
      '[2026-01-02T03:04:05.678Z] INFO (default): read',
    ]);
  });

  // Private keys never reach a log line, whichever way they are handed to the logger.
  const leaks: Array<[string, (log: ReturnType<typeof createLogger>) => void]> = [
    ['a field value', (log) => log.warn('read', { content: KEY_PEM })],
    ['the message', (log) => log.warn(`read ${KEY_PEM}`)],
    ['a nested field', (log) => log.warn('read', { file: { parsed: { blocks: [{ pem: KEY_PEM }] } } })],
    ['an array inside an object', (log) => log.warn('read', { files: [{ names: ['a', KEY_PEM] }] })],
    ['an Error message', (log) => log.error('parse failed', { error: new Error(`cannot parse ${KEY_PEM}`) })],
    ['an Error inside a nested field', (log) => log.error('parse failed', { cause: { error: new Error(KEY_PEM) } })],
    ['a child binding', (log) => log.child({ input: KEY_PEM }).info('hello')],
    ['a field name', (log) => log.info('odd', { [KEY_PEM]: 1 })],
    ['a nested field name with no END line', (log) => log.info('odd', { outer: { [KEY_PEM.slice(0, 120)]: 'x'.repeat(20_000) } })],
    ['a Set', (log) => log.info('names', { names: new Set([KEY_PEM]) })],
    ['a PKCS#1 RSA key', (log) => log.warn('read', { content: RSA_KEY_PEM })],
    ['a key cut off before its END line', (log) => log.warn('read', { content: KEY_PEM.slice(0, 100) })],
    ['a Buffer holding a key', (log) => log.warn('read', { bytes: Buffer.from(KEY_PEM) })],
  ];
  for (const format of ['json', 'text'] as const) {
    for (const [where, leak] of leaks) {
      it(`a PEM private key in ${where} is redacted (${format})`, () => {
        const { lines, log } = capture(format);
        leak(log);
        expect(lines).toHaveLength(1);
        expect(lines[0]).not.toContain('PRIVATE KEY-----');
        expect(lines[0]).not.toContain(KEY_BODY);
        expect(lines[0]).not.toContain(RSA_KEY_PEM.split('\n')[1]!);
        if (format === 'json') expect(() => JSON.parse(lines[0]!)).not.toThrow();
      });
    }
  }

  it('redacts a private key whatever the case of its PEM lines (`BEGIN private KEY`), in a field and in the message', () => {
    const { lines, log } = capture();
    const oddCase = KEY_PEM.replace('BEGIN PRIVATE KEY', 'BEGIN private KEY').replace('END PRIVATE KEY', 'end Private Key');
    log.warn(`bad answer: ${oddCase}`, { body: oddCase, cutOff: oddCase.slice(0, 120) });
    expect(lines).toHaveLength(1);
    expect(lines[0]).not.toContain(KEY_BODY);
    expect(lines[0]!.toLowerCase()).not.toContain('private key-----');
    expect(JSON.parse(lines[0]!)).toMatchObject({ msg: 'bad answer: [REDACTED PRIVATE KEY]\n', body: '[REDACTED PRIVATE KEY]\n', cutOff: '[REDACTED PRIVATE KEY]' });
  });

  it('a field whose getter throws (or an Error whose message getter throws) does not make the log call throw; the other fields are logged', () => {
    const { lines, log } = capture();
    const error = new Error('hidden');
    Object.defineProperty(error, 'message', { get: () => { throw new Error('no'); } });
    const fields = {
      ok: 1,
      error,
      get broken(): string {
        throw new TypeError('no');
      },
      nested: {
        get deeper(): string {
          throw new Error('no');
        },
      },
    };
    expect(() => log.error('still logged', fields)).not.toThrow();
    expect(() => log.child(fields).info('child too')).not.toThrow();
    expect(lines).toHaveLength(2);
    expect(JSON.parse(lines[0]!)).toMatchObject({ msg: 'still logged', ok: 1, broken: '[unreadable: TypeError]', nested: { deeper: '[unreadable: Error]' }, error: { name: 'Error', message: '[unreadable: Error]' } });
    expect(JSON.parse(lines[1]!)).toMatchObject({ msg: 'child too', ok: 1, broken: '[unreadable: TypeError]' });
  });
});
