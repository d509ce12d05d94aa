import { createHash } from 'node:crypto';
import type { SecretValue, TrustBundleValue, TrustDomainBundle } from './secret.js';
import { parseSpiffeId, trustDomainId } from '../x509/spiffe.js';
import { createLogger, type Logger } from '../core/logger.js';

/**
 * The versioned secret store: the one place that knows which secrets exist, under which names,
 * and at which version. It knows nothing about gRPC; streams reach it through `SecretCatalog`.
 */

export type SecretKind = SecretValue['kind'];

/** One published version of a secret. Immutable: a new version is a new object. */
export interface SecretEntry {
  /** Canonical name (the name the secret was declared or published under). */
  readonly name: string;
  /** Content hash: equal content gives an equal version, even across server restarts. */
  readonly version: string;
  readonly value: SecretValue;
  readonly updatedAt: Date;
}

export type Resolution =
  | { kind: 'ready'; entry: SecretEntry }
  /** Configured (or possibly configured, while sources are still loading) but not available yet. */
  | { kind: 'pending' }
  | { kind: 'unknown' }
  /**
   * The caller may not have this secret (a per-caller catalog view says so). Streams and Fetch end
   * with PERMISSION_DENIED `SDS_ERR_PERMISSION_DENIED: <reason>`; `reason` names the rule, never
   * secret content.
   */
  | { kind: 'denied'; reason: string };

/** Called with the requested name whose resolution may have changed. */
export type NameListener = (name: string) => void;

/** The narrow view of the store that the protocol layer needs. */
export interface SecretCatalog {
  resolve(name: string): Resolution;
  /** Canonical names of every secret a wildcard subscriber may see (ready or not). */
  names(): string[];
  /** Watch one requested name (canonical or alias). Returns the unsubscribe function. */
  watch(name: string, listener: NameListener): () => void;
  /** Watch every name (wildcard subscribers). */
  watchAll(listener: NameListener): () => void;
}

export interface AliasNames {
  /** Alias of the default certificate (SPIRE `default_svid_name`, Istio `default`). */
  defaultCertificate: string;
  /** Alias of the default trust bundle (SPIRE `default_bundle_name`, Istio `ROOTCA`). */
  rootBundle: string;
  /** Name of the set of all trust bundles (SPIRE `default_all_bundles_name`). */
  allBundles: string;
}

export const DEFAULT_ALIASES: AliasNames = { defaultCertificate: 'default', rootBundle: 'ROOTCA', allBundles: 'ALL' };

export interface SecretStoreOptions {
  aliases?: Partial<AliasNames>;
  /** Canonical name the default-certificate alias points at; otherwise the first declared certificate. */
  defaultCertificate?: string;
  /** Canonical name the root-bundle alias points at; otherwise the bundle of the default certificate's trust domain, else the first declared bundle. */
  rootBundle?: string;
  now?: () => Date;
  /** Where a listener that throws is reported (with the secret name, never its content); default: a JSON logger on stdout. */
  log?: Logger;
}

interface Declared {
  kind: SecretKind;
  /** Extra names configured by the operator. */
  names: string[];
}

export class SecretStore implements SecretCatalog {
  private aliases: AliasNames;
  /** `defaultCertificate` / `rootBundle` targets chosen by the config (see SecretStoreOptions). */
  private selected: Pick<SecretStoreOptions, 'defaultCertificate' | 'rootBundle'>;
  private readonly declared = new Map<string, Declared>();
  private readonly entries = new Map<string, SecretEntry>();
  private readonly watchers = new Map<string, Set<NameListener>>();
  private readonly wildcardWatchers = new Set<NameListener>();
  private aliasTable = new Map<string, string>();
  /** Names removed (no longer configured) and not declared since, newest last; at most MAX_REMOVED_NAMES. */
  private readonly removedNames = new Set<string>();
  private allBundlesEntry: SecretEntry | undefined;
  private settled = false;
  private readonly now: () => Date;
  private listenerLog: Logger | undefined;

  constructor(private readonly options: SecretStoreOptions = {}) {
    this.aliases = { ...DEFAULT_ALIASES, ...options.aliases };
    this.selected = { ...(options.defaultCertificate !== undefined ? { defaultCertificate: options.defaultCertificate } : {}), ...(options.rootBundle !== undefined ? { rootBundle: options.rootBundle } : {}) };
    this.now = options.now ?? (() => new Date());
  }

  /** The alias names in force (config `aliases:`; changed live by `setAliases`). */
  get aliasNames(): AliasNames {
    return this.aliases;
  }

  /**
   * Changes the alias names and the `default` / `rootBundle` targets (a config reload). Watchers of
   * every alias whose target changed, and of an old and a new `allBundles` name, are told; nothing
   * else is notified.
   */
  setAliases(next: { aliases: AliasNames; defaultCertificate?: string; rootBundle?: string }): void {
    const previousAll = this.aliases.allBundles;
    this.aliases = { ...next.aliases };
    this.selected = { ...(next.defaultCertificate !== undefined ? { defaultCertificate: next.defaultCertificate } : {}), ...(next.rootBundle !== undefined ? { rootBundle: next.rootBundle } : {}) };
    const affected = new Set(this.refreshAliases());
    if (previousAll !== this.aliases.allBundles) {
      this.allBundlesEntry = undefined;
      affected.add(previousAll).add(this.aliases.allBundles);
    }
    if (affected.size > 0) this.notify(affected);
  }

  /** Declares a configured secret: requests for it wait until it is published. */
  declare(name: string, kind: SecretKind, extraNames: string[] = []): void {
    this.removedNames.delete(name);
    this.declared.set(name, { kind, names: [...extraNames] });
    this.refreshAliases();
  }

  /**
   * Publishes a new value. Returns the new entry, or undefined when the content is unchanged
   * (so several file events of one rotation cause one push).
   */
  publish(name: string, value: SecretValue): SecretEntry | undefined {
    const version = versionOf(value);
    const previous = this.entries.get(name);
    if (previous?.version === version) return undefined;
    if (!this.declared.has(name)) this.declared.set(name, { kind: value.kind, names: [] });
    // Names held only because this secret might teach them (see mayStillBeLearned).
    const held = previous ? [] : [...this.watchers.keys()].filter((n) => this.settled && this.canonicalOf(n) === undefined && this.mayStillBeLearned(n));
    const entry: SecretEntry = { name, version, value, updatedAt: this.now() };
    this.entries.set(name, entry);
    if (value.kind === 'trust-bundle') this.allBundlesEntry = undefined;
    const affected = new Set([name, ...this.refreshAliases()]);
    // A first version may settle held names: learned now (already in `affected`), or unknown for good.
    for (const n of held) if (this.resolve(n).kind === 'unknown') affected.add(n);
    for (const [alias, target] of this.aliasTable) if (target === name) affected.add(alias);
    if (value.kind === 'trust-bundle') affected.add(this.aliasNames.allBundles);
    this.notify(affected);
    return entry;
  }

  /** Removes a secret entirely (no longer configured). Subscribers are told it is gone. */
  remove(name: string): void {
    const had = this.entries.get(name);
    if (this.declared.has(name)) {
      // Told as gone (unknown) even while another certificate is still loading (see mayStillBeLearned).
      this.removedNames.add(name);
      if (this.removedNames.size > MAX_REMOVED_NAMES) this.removedNames.delete(this.removedNames.values().next().value as string);
    }
    this.declared.delete(name);
    this.entries.delete(name);
    if (had?.value.kind === 'trust-bundle') this.allBundlesEntry = undefined;
    const affected = new Set([name, ...this.refreshAliases()]);
    if (had?.value.kind === 'trust-bundle') affected.add(this.aliasNames.allBundles);
    this.notify(affected);
  }

  /**
   * Marks that every source has made its first attempt: from now on a name nobody declared or
   * learned is unknown rather than pending.
   */
  markSettled(): void {
    if (this.settled) return;
    this.settled = true;
    this.notify(new Set(this.watchers.keys()));
  }

  get isSettled(): boolean {
    return this.settled;
  }

  resolve(name: string): Resolution {
    if (name === this.aliasNames.allBundles) return this.resolveAllBundles();
    const canonical = this.canonicalOf(name);
    if (canonical !== undefined) {
      const entry = this.entries.get(canonical);
      // An expired certificate is never handed out (streams that hold it keep it until replaced):
      // the name waits for a renewed one, as if not published yet.
      if (entry && isExpired(entry, this.now())) return { kind: 'pending' };
      return entry ? { kind: 'ready', entry } : { kind: 'pending' };
    }
    if (!this.settled || this.mayStillBeLearned(name)) return { kind: 'pending' };
    return { kind: 'unknown' };
  }

  /**
   * A SPIFFE ID is learned from a certificate, a trust-domain ID from a bundle, once it is read:
   * while a declared secret of that kind has no version yet, such a name may still appear, so it
   * is held (pending) rather than refused as unknown. (Quick mode names its secrets `default`
   * and `ROOTCA` when the files are missing at start; Envoy asks by SPIFFE ID.)
   */
  private mayStillBeLearned(name: string): boolean {
    if (this.removedNames.has(name)) return false;
    const id = parseSpiffeId(name);
    if (!id) return false;
    const kind: SecretKind = id.path === '' ? 'trust-bundle' : 'tls-certificate';
    for (const [declaredName, declared] of this.declared) {
      if (declared.kind === kind && !this.entries.has(declaredName)) return true;
    }
    return false;
  }

  /** The canonical name a requested name maps to, if any. */
  canonicalOf(name: string): string | undefined {
    if (this.declared.has(name)) return name;
    return this.aliasTable.get(name);
  }

  names(): string[] {
    return [...this.declared.keys()];
  }

  /** The kind of a declared (canonical) secret, published or not. */
  kindOf(canonical: string): SecretKind | undefined {
    return this.declared.get(canonical)?.kind;
  }

  /** Every alias currently pointing at a canonical name (for status output). */
  aliasesOf(canonical: string): string[] {
    return [...this.aliasTable].filter(([, target]) => target === canonical).map(([alias]) => alias);
  }

  get(name: string): SecretEntry | undefined {
    return this.entries.get(name);
  }

  watch(name: string, listener: NameListener): () => void {
    let set = this.watchers.get(name);
    if (!set) this.watchers.set(name, (set = new Set()));
    set.add(listener);
    return () => {
      const current = this.watchers.get(name);
      if (!current) return;
      current.delete(listener);
      if (current.size === 0) this.watchers.delete(name);
    };
  }

  watchAll(listener: NameListener): () => void {
    this.wildcardWatchers.add(listener);
    return () => this.wildcardWatchers.delete(listener);
  }

  /**
   * Told of every change before any watcher (so a metric can time the fan-out from here); gets the
   * names about to be notified. Must not throw or call back into the store.
   */
  readonly changeObservers = new Set<(names: ReadonlySet<string>) => void>();

  /** Number of per-name watchers (a leak check for tests and status). */
  get watcherCount(): number {
    let n = this.wildcardWatchers.size;
    for (const set of this.watchers.values()) n += set.size;
    return n;
  }

  /**
   * Tells every watcher of each name. Each listener is isolated: one that throws is logged (with
   * the name, no secret content) and every other listener still gets the push.
   */
  private notify(names: Set<string>): void {
    for (const observe of this.changeObservers) observe(names);
    for (const name of names) {
      const set = this.watchers.get(name);
      // Copy: a listener may unsubscribe (stream ends) while we iterate.
      if (set) for (const listener of [...set]) this.call(listener, name);
      for (const listener of [...this.wildcardWatchers]) this.call(listener, name);
    }
  }

  private call(listener: NameListener, name: string): void {
    try {
      listener(name);
    } catch (err) {
      const error = err instanceof Error ? `${err.name}: ${err.message}` : String(err);
      (this.listenerLog ??= this.options.log ?? createLogger()).error('a secret listener failed; the other listeners were still notified', {
        secret: name.length > 200 ? `${name.slice(0, 200)}...` : name,
        error: error.length > 512 ? `${error.slice(0, 512)}...` : error,
      });
    }
  }

  private resolveAllBundles(): Resolution {
    // One entry per trust domain: Envoy's SPIFFE validator refuses a trust domain listed twice.
    const byDomain = new Map<string, TrustDomainBundle>();
    const anonymous: TrustDomainBundle[] = [];
    for (const [name, declared] of this.declared) {
      if (declared.kind !== 'trust-bundle') continue;
      const entry = this.entries.get(name);
      if (entry?.value.kind !== 'trust-bundle') continue;
      for (const bundle of entry.value.bundles) {
        const td = bundle.trustDomain;
        const existing = td === undefined ? undefined : byDomain.get(td);
        if (td === undefined) anonymous.push(bundle);
        else if (!existing) byDomain.set(td, bundle);
        else byDomain.set(td, mergeBundles(existing, bundle));
      }
    }
    const bundles = [...byDomain.values(), ...anonymous];
    if (bundles.length === 0) return this.settled && !this.hasDeclaredBundles() ? { kind: 'unknown' } : { kind: 'pending' };
    if (!this.allBundlesEntry) {
      const value: TrustBundleValue = { kind: 'trust-bundle', bundles };
      this.allBundlesEntry = { name: this.aliasNames.allBundles, version: versionOf(value), value, updatedAt: this.now() };
    }
    return { kind: 'ready', entry: this.allBundlesEntry };
  }

  private hasDeclaredBundles(): boolean {
    for (const d of this.declared.values()) if (d.kind === 'trust-bundle') return true;
    return false;
  }

  /**
   * Recomputes every alias from declarations and published content. Returns the aliases whose
   * target changed, so their watchers can be told.
   */
  private refreshAliases(): string[] {
    const next = new Map<string, string>();
    const add = (alias: string, target: string): void => {
      // A declared canonical name always wins over an alias; the first alias claim wins over later ones.
      if (!this.declared.has(alias) && !next.has(alias)) next.set(alias, target);
    };
    for (const [name, declared] of this.declared) for (const extra of declared.names) add(extra, name);

    // Learned names: the SPIFFE ID of a certificate, the trust-domain ID of a bundle.
    for (const [name, entry] of this.entries) {
      const value = entry.value;
      if (value.kind === 'tls-certificate' && value.leaf.spiffeId) add(value.leaf.spiffeId, name);
      if (value.kind === 'trust-bundle' && value.bundles.length === 1 && value.bundles[0]?.trustDomain) {
        add(trustDomainId(value.bundles[0].trustDomain), name);
      }
    }

    const defaultCert = this.selected.defaultCertificate ?? this.firstDeclared('tls-certificate');
    if (defaultCert !== undefined) add(this.aliasNames.defaultCertificate, defaultCert);
    const rootBundle = this.selected.rootBundle ?? this.bundleForDefault(defaultCert) ?? this.firstDeclared('trust-bundle');
    if (rootBundle !== undefined) add(this.aliasNames.rootBundle, rootBundle);

    const changed: string[] = [];
    for (const [alias, target] of next) if (this.aliasTable.get(alias) !== target) changed.push(alias);
    for (const alias of this.aliasTable.keys()) if (!next.has(alias)) changed.push(alias);
    this.aliasTable = next;
    return changed;
  }

  private firstDeclared(kind: SecretKind): string | undefined {
    for (const [name, declared] of this.declared) if (declared.kind === kind) return name;
    return undefined;
  }

  private bundleForDefault(defaultCert: string | undefined): string | undefined {
    if (defaultCert === undefined) return undefined;
    const cert = this.entries.get(defaultCert)?.value;
    const spiffeId = cert?.kind === 'tls-certificate' ? cert.leaf.spiffeId : undefined;
    if (!spiffeId) return undefined;
    const td = parseSpiffeId(spiffeId)?.trustDomain;
    for (const [name, entry] of this.entries) {
      const v = entry.value;
      if (v.kind === 'trust-bundle' && v.bundles.length === 1 && v.bundles[0]?.trustDomain === td) return name;
    }
    return undefined;
  }
}

/** How many removed names the store remembers (on-demand identities come and go with pods). */
const MAX_REMOVED_NAMES = 10_000;

/** True for a certificate entry at or past its leaf's notAfter. */
export function isExpired(entry: SecretEntry, now: Date): boolean {
  return entry.value.kind === 'tls-certificate' && now.getTime() >= entry.value.leaf.notAfter.getTime();
}

/** A short content hash: the version Envoy sees in version_info and Delta resource versions. */
export function versionOf(value: SecretValue): string {
  const hash = createHash('sha256').update(value.kind);
  if (value.kind === 'tls-certificate') {
    hash.update('\0').update(value.certificateChainPem).update('\0').update(value.privateKeyPem);
  } else {
    for (const bundle of value.bundles) {
      hash.update('\0').update(bundle.trustDomain ?? '');
      for (const root of bundle.rootsPem) hash.update('\0').update(root);
    }
  }
  return hash.digest('hex').slice(0, 16);
}

function mergeBundles(a: TrustDomainBundle, b: TrustDomainBundle): TrustDomainBundle {
  const merged: TrustDomainBundle = { ...a, rootsPem: [...a.rootsPem], roots: [...a.roots] };
  b.rootsPem.forEach((pem, i) => {
    const info = b.roots[i];
    if (merged.rootsPem.includes(pem) || !info) return;
    merged.rootsPem.push(pem);
    merged.roots.push(info);
  });
  return merged;
}
