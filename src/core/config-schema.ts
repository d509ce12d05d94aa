/**
 * The pieces every configuration schema is built from (valibot), so each field is declared once
 * with its type, default and description, and every message reads the same way.
 *
 * Why valibot rather than zod: importing zod 4 costs a `node` process about 120-160 ms here, about
 * as much as grpc-js itself; valibot costs under 20 ms (issue 14 wants start-up within 1.3x of a
 * bare grpc-js server). See the commit that introduced this file for the figures.
 *
 * Messages never quote what the operator wrote: a config field may hold a pasted private key, so a
 * value is shown by type and size (`describe`), and the file and field path say where it is.
 */
import * as v from 'valibot';

/** What a schema needs from the file it reads: relative paths are resolved against its folder. */
export interface ConfigContext {
  resolvePath(p: string): string;
}

/** For documentation and defaults: paths are left as written. */
export const AS_WRITTEN: ConfigContext = { resolvePath: (p) => p };

/** A schema of any kind (the building blocks below return these). */
export type Schema = v.GenericSchema;

/** Documentation-only facts about a field, read by the docs generator (scripts/gen-config-docs.ts). */
export interface FieldDoc {
  /** The type as the reference shows it, e.g. `duration`, `integer >= 0`, `path`. */
  type?: string;
  /** A default applied elsewhere (shown in the reference; the schema leaves the field absent). */
  default?: unknown;
}

const doc = <T>(d: FieldDoc) => v.metadata<T, Record<string, unknown>>({ ...d });

/**
 * A value as shown in a config error: by type and size, never by content. A config field may hold
 * a pasted private key, and `--config` may point at a key file (whose text parses as one YAML
 * string), so no message quotes what the operator wrote; the file and field name say where it is.
 */
export function describe(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return `a list of ${value.length} item${value.length === 1 ? '' : 's'}`;
  if (typeof value === 'string') return `a string of ${value.length} character${value.length === 1 ? '' : 's'}`;
  if (typeof value === 'number' || typeof value === 'boolean') return `${typeof value} ${String(value)}`;
  if (typeof value === 'object') return `a mapping of ${Object.keys(value).length} key${Object.keys(value).length === 1 ? '' : 's'}`;
  return typeof value;
}

/** A mapping key as shown in messages: a plain identifier as written, anything else by length. */
export function describeKey(key: string): string {
  return /^[A-Za-z0-9_.-]{1,64}$/.test(key) ? key : `(a key of ${key.length} characters)`;
}

/**
 * Why a string cannot be a config value: file content pasted in place of a path or name. A PEM
 * header or a line break never belongs in a path, name, URL or setting.
 */
export function pastedContentProblem(value: string): string | undefined {
  if (/-----BEGIN [^-]*-----|-----END [^-]*-----/.test(value)) return 'contains a PEM block; give the path of the file, not its content';
  if (/[\r\n]/.test(value)) return 'contains a line break; expected a single line (a path, not file content)';
  if (looksLikeBase64Content(value)) return 'looks like base64-encoded content (a key or certificate pasted in place of a path?); give the path of the file';
  return undefined;
}

/**
 * A key pasted as one line: base64 of a PEM file (the Kubernetes Secret form, `LS0tLS1CRUdJTi...`)
 * or a PEM body with its line breaks removed (`MIGHAgEA...`). It would otherwise be taken as a
 * missing file's path and echoed in logs and /status. Recognised as a run of at least 64
 * base64 characters with a segment (between slashes) of at least 40 and upper case, lower case and
 * digits mixed as in random base64; real paths, SPIFFE IDs and hex digests do not look like that.
 */
function looksLikeBase64Content(value: string): boolean {
  for (const run of value.match(/[A-Za-z0-9+/=]{64,}/g) ?? []) {
    const longestSegment = Math.max(...run.split('/').map((s) => s.length));
    const count = (re: RegExp): number => run.match(re)?.length ?? 0;
    if (longestSegment >= 40 && count(/[A-Z]/g) >= 8 && count(/[a-z]/g) >= 8 && count(/[0-9]/g) >= 4) return true;
  }
  return false;
}

/**
 * A value as a message may quote it: JSON-quoted when it cannot be pasted secret content (a short,
 * single-line string that is not PEM or base64; such content is reported apart), else `describe`d.
 */
export function quoted(value: unknown): string {
  return typeof value === 'string' && pastedContentProblem(value) === undefined && value.length <= 256 ? JSON.stringify(value) : describe(value);
}

/**
 * Largest millisecond delay a Node timer honours (2^31 - 1 ms, about 24.8 days): setTimeout and
 * setInterval turn a longer delay into 1 ms, so a setting above it would re-run its timer
 * continuously (Node's timers documentation).
 */
export const MAX_TIMER_MS = 2 ** 31 - 1;

/** Longest duration accepted: 10 years, in seconds (longer than any certificate lifetime in use). */
export const MAX_DURATION_SECONDS = 10 * 365 * 86_400;

/**
 * Parses `90`, `90s`, `15m`, `1h`, `2d` into seconds, at most MAX_DURATION_SECONDS (so never
 * Infinity); undefined for anything else.
 */
export function parseDurationSeconds(value: unknown): number | undefined {
  if (typeof value === 'number') return Number.isInteger(value) && value > 0 && value <= MAX_DURATION_SECONDS ? value : undefined;
  if (typeof value !== 'string') return undefined;
  const match = /^(\d+)\s*(s|m|h|d)?$/.exec(value.trim());
  if (!match) return undefined;
  const n = Number(match[1]);
  const unit = { s: 1, m: 60, h: 3600, d: 86400 }[(match[2] as 's' | 'm' | 'h' | 'd' | undefined) ?? 's'];
  const seconds = n * unit;
  return seconds > 0 && seconds <= MAX_DURATION_SECONDS ? seconds : undefined;
}

const got = (issue: v.BaseIssue<unknown>): string => `got ${describe(issue.input)}`;

// ---- leaves -------------------------------------------------------------------------------------

const nonEmpty = (issue: v.BaseIssue<unknown>): string => `expected a non-empty string, ${got(issue)}`;

/** A non-empty, single-line string that is not pasted file content (a name, URL or setting). */
export function text() {
  return v.pipe(
    v.string(nonEmpty),
    v.check((s) => s !== '', nonEmpty),
    v.check(
      (s) => pastedContentProblem(s) === undefined,
      (issue) => `${pastedContentProblem(issue.input as string) ?? 'is not valid'} (${got(issue)})`,
    ),
  );
}

/**
 * `text()` with one more rule, checked only on a value `text()` accepts (so a pasted key gets one
 * message, not two). `message` must not quote the value either.
 */
export function textWith(rule: (s: string) => boolean, message: string | ((issue: v.BaseIssue<unknown>) => string)) {
  return v.pipe(text(), v.check((s) => s === '' || pastedContentProblem(s) !== undefined || rule(s), message));
}

/** What a path names: a file the server reads, a directory, or a socket it creates. */
export type PathKind = 'file' | 'directory' | 'socket';

/**
 * A path, resolved against the config file's folder. `kind` is documented (`file path`, ...) and
 * tells `sds-server check` which paths must be readable files.
 */
export function filePath(ctx: ConfigContext, kind: PathKind = 'file') {
  return v.pipe(text(), v.transform((p: string) => ctx.resolvePath(p)), doc<string>({ type: `${kind} path` }));
}

/** A string that must match `re`; `what` says in the message what was expected. */
export function matching(re: RegExp, what: string) {
  return textWith((s) => re.test(s), (issue) => `expected ${what}, ${got(issue)}`);
}

/** An integer >= `min` and, when given, <= `max`. */
export function integer(min: number, max?: number) {
  const range = max === undefined ? `>= ${min}` : `>= ${min} and <= ${max}`;
  const message = (issue: v.BaseIssue<unknown>): string => `expected an integer ${range}, ${got(issue)}`;
  return v.pipe(
    v.number(message),
    v.check((n) => Number.isInteger(n) && n >= min && (max === undefined || n <= max), message),
    doc<number>({ type: `integer ${range}` }),
  );
}

/** Milliseconds for a timer: an integer from `min` to MAX_TIMER_MS (Node's timer limit). */
export function milliseconds(min: number) {
  return integer(min, MAX_TIMER_MS);
}

/** A number in the open interval (0, max). */
export function fraction(max: number) {
  const message = (issue: v.BaseIssue<unknown>): string => `expected a number between 0 and ${max}, ${got(issue)}`;
  return v.pipe(v.number(message), v.check((n) => n > 0 && n < max, message), doc<number>({ type: `number in (0, ${max})` }));
}

export function boolean() {
  return v.boolean((issue) => `expected true or false, ${got(issue)}`);
}

/** One of a fixed list of strings. */
export function oneOf<const T extends readonly [string, ...string[]]>(options: T) {
  return v.picklist(options, (issue) => `expected one of ${options.join(', ')}, ${got(issue)}`);
}

/** A duration (`90`, `"90s"`, `"15m"`, `"1h"`, `"2d"`), read as seconds. */
export function durationSeconds() {
  return v.pipe(
    v.custom<string | number>((x) => parseDurationSeconds(x) !== undefined, (issue) => `expected a duration such as 3600, "90s", "15m" or "1h", at most ${MAX_DURATION_SECONDS / 86_400}d, ${got(issue)}`),
    v.transform((x) => parseDurationSeconds(x) as number),
    doc<number>({ type: 'duration' }),
  );
}

/**
 * A string or a list of them (`ca: a.pem` or `ca: [a.pem, b.pem]`), read as a list; each item is
 * checked by `item` and named by its index (`bundles[0].ca[1]`).
 */
export function stringList<T extends v.GenericSchema<unknown, string>>(item: T) {
  return v.pipe(
    v.custom<string | unknown[]>((x) => typeof x === 'string' || Array.isArray(x), (issue) => `expected a string or a list of strings, ${got(issue)}`),
    v.transform((x): unknown[] => (typeof x === 'string' ? [x] : x)),
    v.array(item),
    doc<Array<v.InferOutput<T>>>({ type: 'string or list of strings' }),
  );
}

// ---- structure ----------------------------------------------------------------------------------

/**
 * A mapping with exactly these fields: a missing required field reads `is required`, an unknown
 * one `unknown field (expected one of ...)`, anything else `expected a mapping`.
 */
export function mapping<const E extends v.ObjectEntries>(entries: E) {
  const known = Object.keys(entries).join(', ');
  return v.strictObject(entries, (issue) => {
    if (issue.expected === 'never') return `unknown field (expected one of ${known})`;
    if (issue.input === undefined && issue.path) return 'is required';
    return `expected a mapping, ${got(issue)}`;
  });
}

/** A list of `item`s; `what` says what a list item is, for the message when the value is no list. */
export function list<T extends Schema>(item: T, what = 'a list') {
  return v.array(item, (issue) => `expected ${what}, ${got(issue)}`);
}

/** A required field, with its description. */
export function required<T extends Schema>(schema: T, description: string) {
  return v.pipe(schema, v.description<v.InferOutput<T>, string>(description));
}

/** YAML writes an empty value (`key:`) as null: read it as absent. */
const nullAsAbsent = <T>(x: T | null | undefined): T | undefined => x ?? undefined;

/** `schema`, or absent (an empty YAML value reads as absent too). */
export function maybe<T extends Schema>(schema: T) {
  return v.pipe(v.nullish(schema), v.transform(nullAsAbsent<v.InferOutput<T>>));
}

/** An optional field: absent (or an empty YAML value) stays absent. */
export function optional<T extends Schema>(schema: T, description: string) {
  return maybe(v.pipe(schema, v.description<v.InferOutput<T>, string>(description)));
}

/**
 * An optional field with a default: absent (or an empty YAML value) reads as `dflt`. The default
 * is run through `schema`, so it is written in the same form the file would give it.
 */
export function withDefault<T extends Schema, const D extends v.InferInput<T>>(schema: T, description: string, dflt: D) {
  return v.nullish(v.pipe(schema, v.description<v.InferOutput<T>, string>(description)), dflt);
}

/** An optional field whose default is applied elsewhere (`shownDefault` is only documented). */
export function optionalDefaultedElsewhere<T extends Schema>(schema: T, description: string, shownDefault: unknown) {
  return v.pipe(v.nullish(v.pipe(schema, v.description<v.InferOutput<T>, string>(description), doc<v.InferOutput<T>>({ default: shownDefault }))), v.transform(nullAsAbsent<v.InferOutput<T>>));
}

/** A section of settings: a mapping that may be left out (then every field takes its default). */
export function section<T extends Schema>(schema: T, description: string) {
  return withDefault(schema, description, {} as v.InferInput<T>);
}

// ---- reading issues -----------------------------------------------------------------------------

/** A field path as the messages write it: `ca.cfssl.url`, `certificates[2].key`. */
export function issuePath(issue: v.BaseIssue<unknown>): string {
  let out = '';
  for (const item of issue.path ?? []) {
    if (item.type === 'array') out += `[${String(item.key)}]`;
    else out += out === '' ? describeKey(String(item.key)) : `.${describeKey(String(item.key))}`;
  }
  return out;
}

/** The keys of an issue's path, in order. */
export function issueKeys(issue: v.BaseIssue<unknown>): Array<string | number> {
  return (issue.path ?? []).map((item) => (item.type === 'array' ? Number(item.key) : String(item.key)));
}

/** The schema inside `nullish`, `optional` and pipes (where a field's type, entries or items are). */
export function unwrap(schema: Schema): { base: Schema; description?: string; doc: FieldDoc; default?: unknown } {
  let s: Schema = schema;
  let description: string | undefined;
  let d: FieldDoc = {};
  let dflt: unknown;
  for (;;) {
    const anyS = s as Schema & { wrapped?: Schema; default?: unknown; pipe?: ReadonlyArray<{ type: string; kind: string; description?: string; metadata?: FieldDoc }> };
    if (anyS.pipe) {
      for (const item of anyS.pipe.slice(1)) {
        if (item.type === 'description' && description === undefined) description = item.description;
        if (item.type === 'metadata' && item.metadata) d = { ...item.metadata, ...d };
      }
      // A schema later in the pipe (the list inside `stringList`) holds the structure; else the first.
      const inner = anyS.pipe[0] as unknown as Schema;
      const nested = anyS.pipe.slice(1).find((i) => i.kind === 'schema') as unknown as Schema | undefined;
      s = nested ?? inner;
      if (s === anyS) break;
      continue;
    }
    if ((anyS.type === 'nullish' || anyS.type === 'optional' || anyS.type === 'nullable') && anyS.wrapped) {
      if (anyS.default !== undefined && dflt === undefined) dflt = anyS.default;
      s = anyS.wrapped;
      continue;
    }
    break;
  }
  return { base: s, ...(description !== undefined ? { description } : {}), doc: d, ...(dflt !== undefined ? { default: dflt } : {}) };
}

/** The schema of the field at `keys` below `schema` (list indices step into the item schema). */
export function schemaAt(schema: Schema, keys: ReadonlyArray<string | number>): Schema | undefined {
  let s: Schema | undefined = schema;
  for (const key of keys) {
    if (!s) return undefined;
    const { base } = unwrap(s);
    const b = base as Schema & { entries?: Record<string, Schema>; item?: Schema };
    s = typeof key === 'number' ? b.item : b.entries?.[key];
  }
  return s;
}

/**
 * Every unknown key in `doc`, as `[field path, message]`. valibot's strict mapping reports only the
 * first unknown key of each mapping; this finds them all, so every typo is named at once.
 */
export function unknownFields(doc: unknown, schema: Schema, at = ''): Array<{ field: string; message: string }> {
  const { base } = unwrap(schema);
  const b = base as Schema & { entries?: v.ObjectEntries; item?: Schema };
  if (Array.isArray(doc) && b.item) return doc.flatMap((item, i) => unknownFields(item, b.item as Schema, `${at}[${i}]`));
  if (!doc || typeof doc !== 'object' || Array.isArray(doc) || !b.entries) return [];
  const entries = b.entries;
  const known = Object.keys(entries).join(', ');
  return Object.entries(doc).flatMap(([key, value]) => {
    const field = at === '' ? describeKey(key) : `${at}.${describeKey(key)}`;
    const entry = entries[key];
    return entry ? unknownFields(value, entry, field) : [{ field, message: `unknown field (expected one of ${known})` }];
  });
}
