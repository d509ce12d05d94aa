/**
 * Live config reload (issue 13): SIGHUP, or a change of the config file under `--watch-config`.
 * The new config is read and validated, compared with the running one (`planReload`, pure), and
 * the difference is applied in one place (`applyReloadPlan`). A config that does not parse, names
 * a file that does not validate, or a CA that cannot be set up changes nothing: the running config
 * keeps serving and the reason is logged with its code and shown in `/status`.
 */
import { createHash } from 'node:crypto';
import path from 'node:path';
import { ErrorCode, SdsError, type Problem } from '../core/errors.js';
import type { Logger } from '../core/logger.js';
import type { AliasNames } from '../secrets/store.js';
import type { IssuedIdentitySpec } from '../sources/ca-source.js';
import type { DirWatchSet } from '../sources/dir-watch-set.js';
import { SerialTask } from '../sources/serial-task.js';
import type { ConfigStatus } from '../ops/status.js';
import type { ServerConfig } from './config.js';
import { planReload, type ReloadPlan } from './reload-plan.js';

/** The running parts a reload changes; the app provides them. */
export interface LiveParts {
  store: {
    remove(name: string): void;
    setAliases(next: { aliases: AliasNames; defaultCertificate?: string; rootBundle?: string }): void;
  };
  /** Stops the file source (nothing is published by it afterwards; the store keeps its secrets). */
  closeFiles(): Promise<void>;
  /**
   * Sets up a file source for `config`'s certificates and bundles and returns the function that
   * starts it (none when there are none); it declares their secrets before its first await, so
   * requests for new names wait.
   */
  prepareFiles(config: ServerConfig): Promise<() => Promise<void>>;
  /** The running CA source, if any. */
  ca():
    | {
        addConfiguredIdentity(spec: IssuedIdentitySpec): void;
        updateIdentity(spec: IssuedIdentitySpec): void;
        removeConfiguredIdentity(spiffeId: string): void;
        setBundleNames(names: string[]): void;
      }
    | undefined;
  /**
   * Sets up the CA `config` names (creates its backend; throws an SdsError when it cannot) and
   * returns the function that starts it (declaring its secrets before its first await).
   */
  prepareCa(config: ServerConfig): Promise<() => Promise<void>>;
  /** Stops the CA source; returns every name it had in the store. */
  stopCa(): Promise<string[]>;
  /**
   * Replaces the workload entries and identity template (authorization on). `trustDomain`: the
   * new config's CA trust domain (`{trustDomain}` in the template), which a reload that starts the
   * CA may have changed since start-up.
   */
  setPolicy(authorization: NonNullable<ReloadPlan['authorization']>, trustDomain: string): void;
}

/**
 * Applies a plan. First everything that can fail (added and changed files are read and validated,
 * a CA to start is set up): on failure an SdsError is thrown and nothing has changed. Then, in one
 * synchronous step so no request sees half of it: removals (their subscribers are told the name is
 * gone, as the protocol rules of src/xds say for a name the store no longer has), changes, the new
 * workload rules, and additions (declared, so streams asking for them wait until they are served).
 */
export async function applyReloadPlan(plan: ReloadPlan, parts: LiveParts, now: Date = new Date()): Promise<void> {
  if (plan.empty) return;
  await checkPlanFiles(plan, now);
  const startCa = plan.ca === 'start' ? await parts.prepareCa(plan.config) : undefined;
  const filesChanged = plan.files.add.length + plan.files.remove.length + plan.files.change.length > 0;
  const startFiles = filesChanged ? await parts.prepareFiles(plan.config) : undefined;
  if (filesChanged) await parts.closeFiles();
  const caNames = plan.ca === 'stop' ? await parts.stopCa() : [];

  // One synchronous step from here to the additions.
  for (const name of plan.removedFileSecrets) parts.store.remove(name);
  for (const name of caNames) parts.store.remove(name);
  const ca = plan.ca === 'keep' ? parts.ca() : undefined;
  for (const spiffeId of plan.identities.remove) ca?.removeConfiguredIdentity(spiffeId);
  for (const spec of plan.identities.change) ca?.updateIdentity(spec);
  if (plan.caBundleNames) ca?.setBundleNames(plan.caBundleNames);
  if (plan.aliases) parts.store.setAliases(plan.aliases);
  // After removals: a stream of a removed identity was told "gone" and is not told again. Renamed
  // aliases re-point the callers' views too (`default` is per caller).
  const { workloads, identityTemplate } = plan.config.authorization;
  if (plan.authorization || plan.aliases || plan.ca === 'start') parts.setPolicy(plan.authorization ?? { workloads, ...(identityTemplate !== undefined ? { identityTemplate } : {}) }, plan.config.ca.trustDomain);
  for (const spec of plan.identities.add) ca?.addConfiguredIdentity(spec);
  const started: Promise<void>[] = [];
  if (startFiles) started.push(startFiles());
  if (startCa) started.push(startCa());
  await Promise.all(started);
}

/** Reads and validates the files of added and changed file secrets; throws naming every problem. */
async function checkPlanFiles(plan: ReloadPlan, now: Date): Promise<void> {
  if (plan.files.add.length + plan.files.change.length === 0) return;
  const { checkBundleFiles, checkCertificateFiles } = await import('./check-command.js');
  const problems: Problem[] = [];
  for (const group of [...plan.files.add, ...plan.files.change]) {
    for (const c of group.certificates) {
      const r = await checkCertificateFiles(c, now);
      if (!r.ok) problems.push(...r.problems);
    }
    for (const b of group.bundles) {
      const r = await checkBundleFiles(b, now);
      if (!r.ok) problems.push(...r.problems);
    }
  }
  const first = problems[0];
  if (first) throw new SdsError(first.code, problems.map((p) => `${p.code}: ${p.message}`).join('; '));
}

/** Content hash of a config (16 hex digits of SHA-256): equal configs, equal hashes. */
export function configHash(config: ServerConfig): string {
  return createHash('sha256').update(JSON.stringify(config)).digest('hex').slice(0, 16);
}

export type ReloadOutcome =
  | { outcome: 'applied'; generation: number; restartRequired: string[] }
  | { outcome: 'unchanged'; generation: number; restartRequired: string[] }
  | { outcome: 'refused'; error: Problem };

export interface ConfigReloaderOptions {
  /** The config the server started with. */
  config: ServerConfig;
  /** Reads the config again (file and command line); throws an SdsError when it is invalid. */
  load: () => ServerConfig | Promise<ServerConfig>;
  parts: LiveParts;
  log: Logger;
  /** The config file, for status and `--watch-config`. */
  file?: string;
  /** Told the outcome of every reload (metrics). */
  onReload?: (outcome: ReloadOutcome) => void;
  now?: () => Date;
}

/**
 * Holds the running config and its version, and serialises reloads (a reload asked for while one
 * runs is done once more after it, with the newest file).
 */
export class ConfigReloader {
  private running: ServerConfig;
  private generation = 1;
  private hash: string;
  private loadedAt: Date;
  private restartRequired: string[] = [];
  private lastReload: ConfigStatus['lastReload'];
  private lastError: ConfigStatus['lastReloadError'];
  private trigger = 'start';
  private outcome: ReloadOutcome | undefined;
  private readonly task = new SerialTask(() => this.reloadNow());
  private watch: { set: DirWatchSet; timer?: NodeJS.Timeout } | undefined;
  private readonly now: () => Date;

  constructor(private readonly opts: ConfigReloaderOptions) {
    this.now = opts.now ?? (() => new Date());
    this.running = opts.config;
    this.hash = configHash(opts.config);
    this.loadedAt = this.now();
  }

  /** The config running now (restart-only settings at their start-up values). */
  get config(): ServerConfig {
    return this.running;
  }

  /** Re-reads the config and applies the difference. Never rejects: the outcome says what happened. */
  async reload(trigger: string): Promise<ReloadOutcome> {
    this.trigger = trigger;
    await this.task.run();
    return this.outcome ?? { outcome: 'unchanged', generation: this.generation, restartRequired: this.restartRequired };
  }

  status(): ConfigStatus {
    return {
      generation: this.generation,
      hash: this.hash,
      loadedAt: this.loadedAt.toISOString(),
      ...(this.opts.file ? { file: path.resolve(this.opts.file) } : {}),
      watching: this.watch !== undefined,
      restartRequired: [...this.restartRequired],
      ...(this.lastReload ? { lastReload: { ...this.lastReload } } : {}),
      ...(this.lastError ? { lastReloadError: { ...this.lastError } } : {}),
    };
  }

  /**
   * `--watch-config`: reloads when the config file changes (its directory is watched, so editors'
   * rename-over and Kubernetes' ConfigMap `..data` swap are seen), after `debounceMs` of quiet.
   */
  async watchFile(debounceMs: number): Promise<void> {
    const file = this.opts.file;
    if (!file || this.watch) return;
    // Loaded only with --watch-config (start-up time: not needed otherwise).
    const { DirWatchSet } = await import('../sources/dir-watch-set.js');
    const watch: { set: DirWatchSet; timer?: NodeJS.Timeout } = {
      set: new DirWatchSet(() => {
        clearTimeout(watch.timer);
        watch.timer = setTimeout(() => {
          void this.reload('config file changed').then(() => this.syncWatch());
        }, debounceMs);
      }, this.opts.log),
    };
    this.watch = watch;
    await this.syncWatch();
  }

  async close(): Promise<void> {
    const watch = this.watch;
    this.watch = undefined;
    if (watch) {
      clearTimeout(watch.timer);
      await watch.set.close();
    }
    await this.task.idle();
  }

  private async syncWatch(): Promise<void> {
    const file = this.opts.file;
    if (!this.watch || !file) return;
    const { watchPointOf } = await import('../sources/dir-watch-set.js');
    const { dir, name } = await watchPointOf(file);
    await this.watch.set.sync(new Map([[dir, new Set([name])]]));
  }

  private async reloadNow(): Promise<void> {
    await this.apply();
    if (this.outcome) this.opts.onReload?.(this.outcome);
  }

  private async apply(): Promise<void> {
    const trigger = this.trigger;
    const at = this.now();
    const started = performance.now();
    const log = this.opts.log;
    try {
      let next: ServerConfig;
      try {
        next = await this.opts.load();
      } catch (err) {
        throw err instanceof SdsError ? err : new SdsError(ErrorCode.ConfigInvalid, `config reload: ${(err as Error).message}`);
      }
      const plan = planReload(this.running, next);
      await applyReloadPlan(plan, this.opts.parts, at);
      const hash = configHash(plan.config);
      const changed = hash !== this.hash;
      this.running = plan.config;
      this.restartRequired = plan.restartRequired;
      this.lastError = undefined;
      if (changed) {
        this.generation += 1;
        this.hash = hash;
        this.loadedAt = at;
      }
      this.lastReload = { at: at.toISOString(), trigger, outcome: changed ? 'applied' : 'unchanged' };
      this.outcome = { outcome: changed ? 'applied' : 'unchanged', generation: this.generation, restartRequired: plan.restartRequired };
      const summary = {
        trigger,
        generation: this.generation,
        hash: this.hash,
        ...summarise(plan),
        durationMs: Math.round(performance.now() - started),
      };
      log.info(changed ? 'config reloaded' : 'config reloaded: nothing changed', summary);
      if (plan.restartRequired.length > 0) {
        log.warn('config reload: some settings cannot change while running; they keep their running value until restart', {
          code: ErrorCode.ConfigNeedsRestart,
          settings: plan.restartRequired,
        });
      }
    } catch (err) {
      const problem: Problem = err instanceof SdsError ? { code: err.code, message: err.message } : { code: ErrorCode.ConfigInvalid, message: String(err) };
      this.lastError = { ...problem, at: at.toISOString() };
      this.lastReload = { at: at.toISOString(), trigger, outcome: 'refused' };
      this.outcome = { outcome: 'refused', error: problem };
      log.error('config reload refused; still serving the running config', { trigger, code: problem.code, error: problem.message, generation: this.generation });
    }
  }
}

/** What a plan does, for the log: names only. */
function summarise(plan: ReloadPlan): Record<string, unknown> {
  const names = (list: Array<{ key: string }>): string[] => list.map((g) => g.key);
  const out: Record<string, unknown> = {};
  const put = (key: string, list: string[]): void => {
    if (list.length > 0) out[key] = list;
  };
  put('filesAdded', names(plan.files.add));
  put('filesChanged', names(plan.files.change));
  put('filesRemoved', plan.files.remove);
  put('identitiesAdded', plan.identities.add.map((i) => i.spiffeId));
  put('identitiesChanged', plan.identities.change.map((i) => i.spiffeId));
  put('identitiesRemoved', plan.identities.remove);
  if (plan.ca !== 'keep') out.ca = plan.ca;
  if (plan.aliases) out.aliases = plan.aliases;
  if (plan.authorization) out.workloads = plan.authorization.workloads.length;
  if (plan.authorization?.identityTemplate !== undefined) out.identityTemplate = plan.authorization.identityTemplate;
  return out;
}
