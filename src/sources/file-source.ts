/**
 * Serves secrets from PEM files on disk and keeps them current as the files rotate.
 *
 * Every directory holding a secret file is watched; any event there re-reads the secrets living in
 * it at once (no fixed debounce): events that arrive while a read is in flight coalesce into one
 * more read, so a rotation is published as soon as its files form a consistent set. A periodic
 * re-read catches anything the watcher missed. A read that does not validate (half-written file,
 * key not rotated yet, expired certificate...) is never published: the last good version keeps
 * being served and the problem shows in status at once, and in the log once it has outlived a
 * short grace (a rotation in progress is not an error). The store drops unchanged content, so the
 * several events of one rotation give one push.
 */
import path from 'node:path';
import { ErrorCode, SdsError, fail, ok, type Problem, type Result } from '../core/errors.js';
import { parseSpiffeId } from '../x509/spiffe.js';
import type { Logger } from '../core/logger.js';
import type { SecretValue } from '../secrets/secret.js';
import { versionOf, type SecretEntry, type SecretKind } from '../secrets/store.js';
import { validateTlsCertificate, type ParsedKeyCache } from '../secrets/validate-tls-certificate.js';
import { validateTrustBundle } from '../secrets/validate-trust-bundle.js';
import { checkLeafInBundle, type NamedBundle } from '../secrets/validate-leaf-in-bundle.js';
import { DirWatchSet, watchPointsOf, type WatchTargets } from './dir-watch-set.js';
import { readSecretFileSync } from '../core/read-secret-file.js';
import type { SecretSource, SecretSourceStatus } from './source.js';
import { SerialTask } from './serial-task.js';

export interface FileTlsSecretSpec {
  name: string;
  /** Leaf first, then intermediates. */
  certFile: string;
  keyFile: string;
  /** Extra names the secret is also served under. */
  names?: string[];
  /** Refuse a certificate whose SPIFFE ID differs. */
  expectedSpiffeId?: string;
}

export interface FileBundleSpec {
  name: string;
  caFiles: string[];
  /** Trust domain name without scheme, e.g. `example.org`. */
  trustDomain?: string;
  /**
   * Without `trustDomain`: the name of a certificate of this source whose SPIFFE ID gives the trust
   * domain. The bundle is not published before that certificate has loaded (quick mode).
   */
  trustDomainFromCertificate?: string;
  names?: string[];
}

/** The part of the store a source writes to. */
export interface SecretPublisher {
  declare(name: string, kind: SecretKind, extraNames?: string[]): void;
  /** Returns the new entry, or undefined when the content is unchanged. */
  publish(name: string, value: SecretValue): SecretEntry | undefined;
}

export type { SecretSourceStatus } from './source.js';

export interface FileSourceOptions {
  tls: FileTlsSecretSpec[];
  bundles: FileBundleSpec[];
  publisher: SecretPublisher;
  log: Logger;
  /**
   * Quiet time after the last file event before re-reading (ms). Default 0: read on every event,
   * which publishes a rotation as soon as its files are consistent. Kept for operators who set it.
   */
  debounceMs?: number;
  /**
   * How long a refused update may persist before it is logged at warn level (ms, default
   * {@link REFUSAL_LOG_GRACE_MS}); the secret is re-read when it ends.
   */
  refusalGraceMs?: number;
  /** Re-read everything this often as a safety net for missed events (default 10 s, 0 = off). */
  pollIntervalMs?: number;
  now?: () => Date;
}

type Spec = { kind: 'tls-certificate'; spec: FileTlsSecretSpec } | { kind: 'trust-bundle'; spec: FileBundleSpec };

/** Mutable per-secret state. */
interface Tracked {
  source: Spec;
  name: string;
  files: string[];
  status: SecretSourceStatus;
  /** Serialises reads of this secret. */
  task: SerialTask;
  debounce?: NodeJS.Timeout;
  /** code + message of the last refusal logged at warn level, to not repeat it on every poll. */
  lastLoggedProblem?: string;
  /** performance.now() of the first refusal since the last accepted read. */
  refusedSince?: number;
  /** Re-reads once the refusal grace ends, to log the refusal if it persists. */
  graceTimer?: NodeJS.Timeout;
  /** The next read was asked for by reloadAll (poll, SIGHUP): a refusal is logged at once. */
  reloadRequested?: boolean;
  /** The last private key parsed for this secret (a rotation re-reads it). */
  keyCache: ParsedKeyCache;
  /** Inputs and verdict of the last read that failed validation. */
  refused?: { inputs: string[]; problem: Problem };
  /** Inputs of the value last accepted, and when (performance.now()) they were validated. */
  accepted?: { inputs: string[]; at: number };
  /** The value last accepted (published or unchanged). */
  value?: SecretValue;
  /** Certificates: the leaf does not chain to its trust domain's bundle (served anyway). */
  bundleWarning?: Problem;
}

const DEFAULT_POLL_INTERVAL_MS = 10_000;
/**
 * Default time a refused update may last before it is logged as a warning (ms). Writers that
 * replace the certificate and the key one after the other leave a mismatched pair on disk for a
 * moment; that is a rotation in progress, not a broken secret.
 */
export const REFUSAL_LOG_GRACE_MS = 250;
/** Unchanged files are validated again at least this often (ms): checks that depend on the time. */
const REVALIDATE_UNCHANGED_MS = 60_000;

export class FileSource implements SecretSource {
  private readonly tracked: Tracked[];
  private readonly publisher: SecretPublisher;
  private readonly log: Logger;
  private readonly debounceMs: number;
  private readonly refusalGraceMs: number;
  private readonly pollIntervalMs: number;
  private readonly now: () => Date;
  private readonly watches: DirWatchSet;
  private readonly watchSync = new SerialTask(() => this.syncWatches());
  /** Directory -> secrets with a file in (or below) it. */
  private secretsByDir = new Map<string, Tracked[]>();
  private pollTimer: NodeJS.Timeout | undefined;
  private started = false;
  /** The first watcher sync, started once the first read is done. */
  private firstWatch: Promise<void> = Promise.resolve();
  /** Set once the first read of every secret is done. */
  private loaded = false;
  private closed = false;

  constructor(opts: FileSourceOptions) {
    this.publisher = opts.publisher;
    this.log = opts.log;
    this.debounceMs = opts.debounceMs ?? 0;
    this.refusalGraceMs = opts.refusalGraceMs ?? REFUSAL_LOG_GRACE_MS;
    this.pollIntervalMs = opts.pollIntervalMs ?? DEFAULT_POLL_INTERVAL_MS;
    this.now = opts.now ?? (() => new Date());
    const specs: Spec[] = [
      ...opts.tls.map((spec) => ({ kind: 'tls-certificate' as const, spec })),
      ...opts.bundles.map((spec) => ({ kind: 'trust-bundle' as const, spec })),
    ];
    this.tracked = specs.map((source) => this.track(source));
    assertUniqueNames(this.tracked);
    this.watches = new DirWatchSet((dir) => this.onDirEvent(dir), this.log);
  }

  /**
   * Declares every secret and makes the first read of every secret, then starts the watchers in
   * the background (see {@link watching}). Resolves after that read even when files are missing or
   * bad (their status says why).
   *
   * Read first, watch second: the first response does not wait for the watchers. Once they are
   * ready every secret is read again, so a change made between the read and the watch is not lost.
   */
  async start(): Promise<void> {
    if (this.started) throw new SdsError(ErrorCode.Internal, 'FileSource.start() called twice');
    this.started = true;
    for (const t of this.tracked) this.publisher.declare(t.name, t.source.kind, t.source.spec.names ?? []);
    await Promise.all(this.tracked.map((t) => t.task.run()));
    this.loaded = true;
    this.firstWatch = this.watchSync.run();
    this.schedulePoll();
  }

  /**
   * Resolves once the watchers started by {@link start} are in place and the re-read that follows
   * them is done (tests, and callers that need "watched" rather than "served"). Never rejects.
   */
  async watching(): Promise<void> {
    await this.firstWatch;
  }

  /** Stops watchers and timers; resolves once no read is in flight. Nothing is published afterwards. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    clearTimeout(this.pollTimer);
    for (const t of this.tracked) {
      clearTimeout(t.debounce);
      clearTimeout(t.graceTimer);
    }
    await this.watches.close();
    await Promise.all([this.watchSync.idle(), ...this.tracked.map((t) => t.task.idle())]);
  }

  status(): SecretSourceStatus[] {
    return this.tracked.map((t) => ({
      ...t.status,
      files: [...t.status.files],
      warnings: [...(t.bundleWarning ? [t.bundleWarning] : []), ...t.status.warnings],
      ...(t.status.lastError ? { lastError: { ...t.status.lastError } } : {}),
    }));
  }

  /** Re-reads every secret now (SIGHUP, and the periodic poll). */
  async reloadAll(): Promise<void> {
    if (this.closed) return;
    for (const t of this.tracked) t.reloadRequested = true;
    await Promise.all(this.tracked.map((t) => t.task.run()));
    await this.watchSync.run();
  }

  /** Directories currently watched (diagnostics and tests). */
  watchedDirs(): string[] {
    return this.watches.dirs();
  }

  private track(source: Spec): Tracked {
    const files =
      source.kind === 'tls-certificate'
        ? [source.spec.certFile, source.spec.keyFile].map((f) => path.resolve(f))
        : source.spec.caFiles.map((f) => path.resolve(f));
    const tracked: Tracked = {
      source,
      name: source.spec.name,
      files,
      status: { name: source.spec.name, kind: source.kind, files, state: 'pending', warnings: [] },
      task: new SerialTask(() => this.load(tracked)),
      keyCache: {},
    };
    return tracked;
  }

  // ---- events and timers: nothing below may throw into a watcher callback or a timer ----

  private onDirEvent(dir: string): void {
    if (this.closed) return;
    for (const t of this.secretsByDir.get(dir) ?? []) this.scheduleReload(t);
  }

  /**
   * Reads now; SerialTask keeps at most one read in flight and one queued per secret, so a burst
   * of events costs at most one extra read. With `debounceMs` set: a trailing debounce instead.
   */
  private scheduleReload(t: Tracked): void {
    if (this.closed) return;
    if (this.debounceMs <= 0) {
      this.reloadThenSyncWatches(t);
      return;
    }
    clearTimeout(t.debounce);
    t.debounce = setTimeout(() => {
      t.debounce = undefined;
      this.reloadThenSyncWatches(t);
    }, this.debounceMs);
  }

  private reloadThenSyncWatches(t: Tracked): void {
    // After the read: a directory that was missing may exist now and need its own watcher.
    void t.task.run().then(() => this.watchSync.run());
  }

  private schedulePoll(): void {
    if (this.pollIntervalMs <= 0 || this.closed) return;
    this.pollTimer = setTimeout(() => {
      void this.reloadAll().finally(() => this.schedulePoll());
    }, this.pollIntervalMs);
    // The poll alone should not keep a process alive that is otherwise done.
    this.pollTimer.unref();
  }

  /**
   * Points the watchers at the directory of every file (or its nearest existing ancestor while the
   * directory is missing) and of every symlink on the way to it, and re-reads the secrets under a
   * newly watched directory: a file written there before that watch was armed gave no event.
   */
  private async syncWatches(): Promise<void> {
    if (this.closed) return;
    try {
      const targets: WatchTargets = new Map();
      const byDir = new Map<string, Tracked[]>();
      for (const t of this.tracked) {
        for (const file of t.files) {
          for (const { dir, name } of await watchPointsOf(file)) {
            addTo(targets, dir, name);
            const list = byDir.get(dir) ?? [];
            if (!list.includes(t)) list.push(t);
            byDir.set(dir, list);
          }
        }
      }
      this.secretsByDir = byDir;
      const added = await this.watches.sync(targets);
      // A file written before its watcher was ready gave no event: read now, not after a debounce.
      const catchUp = new Set<Tracked>();
      for (const dir of added) for (const t of byDir.get(dir) ?? []) catchUp.add(t);
      await Promise.all([...catchUp].map((t) => t.task.run()));
    } catch (err) {
      this.log.error('updating file watchers failed; relying on the periodic re-read', { error: err });
    }
  }

  // ---- reading, validating, publishing ----

  private async load(t: Tracked): Promise<void> {
    if (this.closed) return;
    const requested = t.reloadRequested === true;
    t.reloadRequested = false;
    try {
      const now = this.now();
      const read = this.readInputs(t);
      if (!read.ok) {
        this.refuse(t, read.problem, requested);
        return;
      }
      if (this.unchangedSinceAccepted(t, read.value, now)) return;
      // The same files as the last refused read (the watcher reports one rename several times):
      // same verdict, without validating again. A poll or SIGHUP validates afresh (time-dependent
      // checks such as "not valid yet").
      if (!requested && t.refused && sameInputs(t.refused.inputs, read.value)) {
        this.refuse(t, t.refused.problem, requested);
        return;
      }
      const result = this.validate(t, read.value, now);
      t.refused = undefined;
      if (result.ok) {
        t.accepted = { inputs: read.value, at: performance.now() };
        this.accept(t, result.value, result.warnings);
      } else {
        t.refused = { inputs: read.value, problem: result.problem };
        this.refuse(t, result.problem, requested);
      }
    } catch (err) {
      // Validators return problems rather than throw; this is a bug or a throwing store listener.
      this.log.error('loading secret failed unexpectedly', { name: t.name, files: t.files, error: err });
    }
  }

  /**
   * Everything a validation of `t` depends on besides the time: the text of each file, in order
   * (certificate then key, or the bundle files), and for a bundle the trust domain it is checked
   * against. Read synchronously (see readSecretFileSync): a re-read then runs from the file event
   * to the publish without yielding, and the files are read back to back, as close together in
   * time as a reader can get them.
   */
  private readInputs(t: Tracked): Result<string[]> {
    const texts: string[] = [];
    const problems: Problem[] = [];
    for (const file of t.files) {
      const read = readSecretFileSync(file);
      if (read.ok) texts.push(read.value);
      else problems.push(read.problem);
    }
    const [problem] = problems;
    if (problem) return fail(problem.code, problem.message);
    if (t.source.kind === 'trust-bundle') {
      const trustDomain = this.bundleTrustDomain(t.source.spec);
      if (!trustDomain.ok) return trustDomain;
      texts.push(`trust domain: ${trustDomain.value ?? '(none)'}`);
    }
    return ok(texts);
  }

  /**
   * True when the inputs are those of the value served now, which is still inside its validity
   * window and was fully validated less than {@link REVALIDATE_UNCHANGED_MS} ago. The events of a
   * rotation that do not change the files yet (Kubernetes creates the new timestamped directory
   * and a `..data_tmp` link before the swap) and the idle periodic re-read then cost two small
   * reads, not a validation that would delay the read that matters.
   */
  private unchangedSinceAccepted(t: Tracked, inputs: string[], now: Date): boolean {
    const last = t.accepted;
    if (!last || t.status.state !== 'ok' || performance.now() - last.at >= REVALIDATE_UNCHANGED_MS) return false;
    if (!sameInputs(last.inputs, inputs)) return false;
    const leaf = t.value?.kind === 'tls-certificate' ? t.value.leaf : undefined;
    return !leaf || (now.getTime() >= leaf.notBefore.getTime() && now.getTime() <= leaf.notAfter.getTime());
  }

  private validate(t: Tracked, inputs: string[], now: Date): Result<SecretValue> {
    const source = t.source;
    if (source.kind === 'tls-certificate') {
      return validateTlsCertificate({
        certificateChainPem: inputs[0] ?? '',
        privateKeyPem: inputs[1] ?? '',
        certFile: path.resolve(source.spec.certFile),
        keyFile: path.resolve(source.spec.keyFile),
        now,
        keyCache: t.keyCache,
        ...(source.spec.expectedSpiffeId !== undefined ? { expectedSpiffeId: source.spec.expectedSpiffeId } : {}),
      });
    }
    const trustDomain = this.bundleTrustDomain(source.spec);
    if (!trustDomain.ok) return trustDomain;
    const files = source.spec.caFiles.map((f, i) => ({ file: path.resolve(f), text: inputs[i] ?? '' }));
    return validateTrustBundle({ files, now, ...(trustDomain.value !== undefined ? { trustDomain: trustDomain.value } : {}) });
  }

  /** The trust domain a bundle is checked against: configured, taken from a certificate, or none. */
  private bundleTrustDomain(spec: FileBundleSpec): Result<string | undefined> {
    const from = spec.trustDomainFromCertificate;
    if (spec.trustDomain !== undefined || from === undefined) return ok(spec.trustDomain);
    const cert = this.tracked.find((t) => t.name === from);
    const trustDomain = trustDomainOf(cert?.value);
    if (trustDomain === undefined) {
      const files = cert?.files.join(', ') ?? from;
      return fail(ErrorCode.FileMissing, `bundle waits for the certificate (${files}) to load: its SPIFFE ID gives the bundle's trust domain`);
    }
    return ok(trustDomain);
  }

  /**
   * Compares every served leaf with the bundles of its trust domain (after any certificate or
   * bundle is accepted); a new mismatch is logged at warn level once, and shown in its status.
   */
  private checkLeavesInBundles(): void {
    const bundles: NamedBundle[] = [];
    for (const b of this.tracked) if (b.value?.kind === 'trust-bundle') bundles.push({ name: b.name, value: b.value });
    for (const t of this.tracked) {
      if (t.value?.kind !== 'tls-certificate') continue;
      const found = checkLeafInBundle(t.value, t.files[0] ?? t.name, bundles);
      const problem = found && bounded(found);
      if (problem && problem.message !== t.bundleWarning?.message) {
        this.log.warn('certificate does not chain to the bundle of its trust domain; serving it anyway', { name: t.name, code: problem.code, message: problem.message, files: t.files });
      }
      t.bundleWarning = problem;
    }
  }

  /** Re-reads bundles that take their trust domain from `t` when that trust domain changed. */
  private refreshDependentBundles(t: Tracked, previous: SecretValue | undefined): void {
    if (trustDomainOf(previous) === trustDomainOf(t.value)) return;
    for (const b of this.tracked) {
      if (b.source.kind === 'trust-bundle' && b.source.spec.trustDomainFromCertificate === t.name) void b.task.run();
    }
  }

  private accept(t: Tracked, value: SecretValue, warnings: Problem[]): void {
    const previous = t.value;
    t.value = value;
    this.refreshDependentBundles(t, previous);
    const entry = this.publisher.publish(t.name, value);
    const status = t.status;
    const recovered = status.state !== 'ok';
    status.state = 'ok';
    status.version = entry?.version ?? versionOf(value);
    status.lastError = undefined;
    status.warnings = warnings.map(bounded);
    t.lastLoggedProblem = undefined;
    t.refusedSince = undefined;
    clearTimeout(t.graceTimer);
    t.graceTimer = undefined;
    if (entry || status.lastChangeAt === undefined) status.lastChangeAt = entry?.updatedAt ?? this.now();
    this.checkLeavesInBundles();
    if (!entry && !recovered) return; // an ordinary re-read of unchanged files
    const fields = { name: t.name, version: status.version, files: t.files, ...describeValue(value) };
    if (entry) this.log.info('secret updated', fields);
    else this.log.info('secret files valid again; serving unchanged content', fields);
    for (const w of status.warnings) this.log.warn('secret warning', { name: t.name, code: w.code, message: w.message, files: t.files });
  }

  /** `requested`: the read came from reloadAll (poll, SIGHUP), not from a file event. */
  private refuse(t: Tracked, unbounded: Problem, requested: boolean): void {
    const problem = bounded(unbounded);
    const status = t.status;
    // Waiting for files that were never there is expected at startup (e.g. an agent not done yet).
    status.state = status.version === undefined && problem.code === ErrorCode.FileMissing ? 'pending' : 'error';
    status.lastError = problem;
    const key = `${problem.code} ${problem.message}`;
    const fields = {
      name: t.name,
      code: problem.code,
      message: problem.message,
      files: t.files,
      serving: status.version ?? null,
    };
    const msg = status.version === undefined ? 'secret not loaded' : 'secret update refused; keeping last good version';
    const now = performance.now();
    t.refusedSince ??= now;
    // While the files may still be converging (the certificate renamed in, the key not yet), the
    // refusal is only a debug line; a re-read at the end of the grace logs it if it persists. At
    // start-up there is nothing to converge from, and a poll or SIGHUP asks for the verdict now.
    const converging = this.loaded && !requested && now - t.refusedSince < this.refusalGraceMs;
    if (converging) {
      this.log.debug(`${msg} (files may still be changing; checking again)`, fields);
      t.graceTimer ??= setTimeout(() => {
        t.graceTimer = undefined;
        void t.task.run();
      }, t.refusedSince + this.refusalGraceMs - now);
      return;
    }
    // The same refusal is logged once at warn level, not on every poll.
    if (key === t.lastLoggedProblem) this.log.debug(msg, fields);
    else this.log.warn(msg, fields);
    t.lastLoggedProblem = key;
  }
}

/** Log fields describing what is served: serials and dates, never key material. */
function describeValue(value: SecretValue): Record<string, unknown> {
  if (value.kind === 'tls-certificate') {
    const leaf = value.leaf;
    return { serial: leaf.serialNumber, notAfter: leaf.notAfter.toISOString(), spiffeId: leaf.spiffeId ?? null };
  }
  const roots = value.bundles.flatMap((b) => b.roots);
  return {
    trustDomain: value.bundles[0]?.trustDomain ?? null,
    roots: roots.length,
    serials: roots.map((r) => r.serialNumber),
    notAfter: roots.map((r) => r.notAfter.toISOString()),
  };
}

/**
 * Longest problem message kept in status and logs (characters). Messages quote certificate
 * subjects and PEM problems from files of up to 1 MiB; this keeps every log line and /status small.
 */
export const MAX_PROBLEM_MESSAGE = 2000;

function bounded(problem: Problem): Problem {
  if (problem.message.length <= MAX_PROBLEM_MESSAGE) return problem;
  const cut = problem.message.length - MAX_PROBLEM_MESSAGE;
  return { code: problem.code, message: `${problem.message.slice(0, MAX_PROBLEM_MESSAGE)}... (${cut} more characters)` };
}

/** Trust domain of a certificate value's SPIFFE ID. */
function trustDomainOf(value: SecretValue | undefined): string | undefined {
  const id = value?.kind === 'tls-certificate' ? value.leaf.spiffeId : undefined;
  return id === undefined ? undefined : parseSpiffeId(id)?.trustDomain;
}

function sameInputs(a: string[], b: string[]): boolean {
  return a.length === b.length && a.every((text, i) => text === b[i]);
}

function addTo(targets: WatchTargets, dir: string, name: string): void {
  const names = targets.get(dir) ?? new Set<string>();
  names.add(name);
  targets.set(dir, names);
}

function assertUniqueNames(tracked: Tracked[]): void {
  const seen = new Set<string>();
  for (const t of tracked) {
    if (seen.has(t.name)) throw new SdsError(ErrorCode.ConfigInvalid, `secret "${t.name}" is configured more than once`);
    seen.add(t.name);
  }
}
