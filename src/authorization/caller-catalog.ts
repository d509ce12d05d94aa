import type { AliasNames, NameListener, Resolution, SecretCatalog, SecretEntry, SecretKind } from '../secrets/store.js';
import type { Caller } from './caller.js';
import { parseSpiffeId } from '../x509/spiffe.js';
import { noIdentityReason, notEntitledReason, type Grant } from './entitlements.js';

/** The part of the store a caller's view reads (SecretStore implements it). */
export interface StoreView extends SecretCatalog {
  readonly aliasNames: AliasNames;
  canonicalOf(name: string): string | undefined;
  kindOf(canonical: string): SecretKind | undefined;
  get(canonical: string): SecretEntry | undefined;
}

/** Issues templated identities when first asked for and keeps them while streams want them. */
export interface OnDemandIssuer {
  /** Starts issuing `spiffeId` (declares it in the store, so it resolves `pending`) unless it exists. */
  ensure(spiffeId: string): void;
  /** `ensure`, and holds the identity until the returned release function is called. */
  acquire(spiffeId: string): () => void;
}

/** What a caller was granted and refused, for logs and /status. */
export interface CallerDecisions {
  granted(name: string): void;
  refused(name: string, reason: string): void;
  /** The stream using this view ended. */
  closed?(): void;
}

/**
 * One caller's view of the secret store (SecretCatalog, so the protocol layer is unchanged):
 * - a certificate the caller is not entitled to resolves `denied` (never its content);
 * - trust bundles (`spiffe://td`, the root-bundle alias, `ALL`, extra names) go to every caller
 *   that has at least one identity;
 * - the default-certificate alias (`default`, SPIRE's default_svid_name) is the caller's first identity;
 * - the caller's templated identity is issued on demand when asked for, and held while watched;
 * - a caller with no identity at all is refused everything (`refusal()` says why).
 */
export class CallerCatalog implements SecretCatalog {
  private identities: Set<string>;
  private currentGrant: Grant;
  /** This view's watches, so a new grant (config reload) can re-point and notify them. */
  private readonly watches = new Set<CatalogWatch>();
  private readonly wildcardListeners = new Set<NameListener>();

  constructor(
    private readonly store: StoreView,
    readonly caller: Caller,
    grant: Grant,
    private readonly onDemand?: OnDemandIssuer,
    private readonly decisions?: CallerDecisions,
  ) {
    this.currentGrant = grant;
    this.identities = new Set(grant.identities);
  }

  /** What the caller is granted now (replaced by `regrant`). */
  get grant(): Grant {
    return this.currentGrant;
  }

  /** The stream using this view ended. */
  close(): void {
    this.decisions?.closed?.();
  }

  /** Why this caller gets nothing at all, or undefined when it has at least one identity. */
  refusal(): string | undefined {
    return this.grant.identities.length === 0 ? noIdentityReason(this.caller, this.grant) : undefined;
  }

  resolve(name: string): Resolution {
    const target = this.targetOf(name);
    if (this.refusal() === undefined && target === this.grant.templated && this.store.canonicalOf(target) === undefined) this.onDemand?.ensure(target);
    const resolution = this.evaluate(name);
    if (resolution.kind === 'denied') this.decisions?.refused(name, resolution.reason);
    else if (resolution.kind === 'ready' && resolution.entry.value.kind === 'tls-certificate') this.decisions?.granted(name);
    return resolution;
  }

  /**
   * Applies a new grant (the workload rules or identity template changed in a config reload).
   * Watches are re-pointed (`default` follows the caller's first identity; a templated identity is
   * held or released), and each watched name whose answer for this caller changed is notified, so
   * its stream sends the new state or ends as the protocol rules say for a denied or unknown name.
   * A name that was already refused or unknown and still is (in either form) is not notified: its
   * stream was told then. A watch whose store name moved (the alias names changed) is notified too.
   */
  regrant(grant: Grant): void {
    const wildcardNames = this.wildcardListeners.size > 0 ? this.store.names() : [];
    const before = new Map<string, Resolution>();
    for (const w of this.watches) before.set(w.name, this.evaluate(w.name));
    for (const n of wildcardNames) if (!before.has(n)) before.set(n, this.evaluate(n));
    this.currentGrant = grant;
    this.identities = new Set(grant.identities);
    const moved = new Set<CatalogWatch>();
    for (const w of this.watches) {
      const target = w.target;
      this.attach(w);
      if (w.target !== target) moved.add(w);
    }
    const changed = (name: string): boolean => answerChanged(before.get(name), this.evaluate(name));
    for (const w of [...this.watches]) if (moved.has(w) || changed(w.name)) w.listener(w.name);
    for (const n of wildcardNames) if (changed(n)) for (const l of [...this.wildcardListeners]) l(n);
  }

  /** Certificates the caller is entitled to, and every bundle; nothing for a refused caller. */
  names(): string[] {
    if (this.refusal() !== undefined) return [];
    return this.store.names().filter((n) => this.store.kindOf(n) === 'trust-bundle' || this.entitledTo(n, n));
  }

  watch(name: string, listener: NameListener): () => void {
    const w: CatalogWatch = { name, listener };
    this.watches.add(w);
    this.attach(w);
    return () => {
      this.watches.delete(w);
      w.detach?.();
      w.detach = undefined;
    };
  }

  watchAll(listener: NameListener): () => void {
    this.wildcardListeners.add(listener);
    const unwatch = this.store.watchAll(listener);
    return () => {
      this.wildcardListeners.delete(listener);
      unwatch();
    };
  }

  /** (Re)points one watch at the store name it stands for now, holding a templated identity. */
  private attach(w: CatalogWatch): void {
    const target = this.targetOf(w.name);
    const hold = target === this.grant.templated && this.onDemand !== undefined && this.refusal() === undefined;
    if (w.detach && w.target === target && w.held === hold) return;
    const previous = w.detach;
    const release = hold ? this.onDemand?.acquire(target) : undefined;
    const unwatch = target === w.name ? this.store.watch(w.name, w.listener) : this.store.watch(target, () => w.listener(w.name));
    w.target = target;
    w.held = hold;
    w.detach = () => {
      unwatch();
      release?.();
    };
    // After the new hold is taken: releasing first could let an on-demand identity go idle.
    previous?.();
  }

  /** The store name a requested name stands for: `default` is the caller's first identity. */
  private targetOf(name: string): string {
    if (name === this.store.aliasNames.defaultCertificate) return this.grant.identities[0] ?? name;
    return name;
  }

  /** The answer for `name` under the current grant, without logging or issuing anything. */
  private evaluate(name: string): Resolution {
    const refusal = this.refusal();
    if (refusal !== undefined) return { kind: 'denied', reason: refusal };
    const target = this.targetOf(name);
    const decision = this.decide(name, target);
    return decision === 'allow' ? this.store.resolve(target) : decision;
  }

  private decide(name: string, target: string): 'allow' | Resolution {
    if (name === this.store.aliasNames.allBundles) return 'allow';
    const canonical = this.store.canonicalOf(target);
    if (canonical === undefined) {
      // A workload SPIFFE ID the caller is not granted is refused whether or not it exists (yet):
      // the answer must not depend on what other callers have asked for. Other names: the store
      // says pending or unknown.
      const id = parseSpiffeId(target);
      return id && id.path !== '' && !this.identities.has(target) ? { kind: 'denied', reason: notEntitledReason(name, this.caller) } : 'allow';
    }
    if (this.store.kindOf(canonical) === 'trust-bundle') return 'allow';
    if (this.entitledTo(target, canonical)) return 'allow';
    // A certificate not loaded yet, named differently from its SPIFFE ID: decided once it is readable.
    if (this.store.get(canonical) === undefined && !target.startsWith('spiffe://') && !canonical.startsWith('spiffe://')) return { kind: 'pending' };
    return { kind: 'denied', reason: notEntitledReason(name, this.caller) };
  }

  /** Entitled when the requested name, the canonical name or the certificate's SPIFFE ID is granted. */
  private entitledTo(requested: string, canonical: string): boolean {
    if (this.identities.has(requested) || this.identities.has(canonical)) return true;
    const value = this.store.get(canonical)?.value;
    return value?.kind === 'tls-certificate' && value.leaf.spiffeId !== undefined && this.identities.has(value.leaf.spiffeId);
  }

}

interface CatalogWatch {
  name: string;
  listener: NameListener;
  /** The store name watched for it now, whether it holds an on-demand identity, and how to stop. */
  target?: string;
  held?: boolean;
  detach?: () => void;
}

/**
 * Whether a new grant changes what a stream holding `before` must be told: another version, or a
 * change between being served (or waiting) and being refused. Refused and unknown count as one
 * answer (the stream was already told it does not get the name).
 */
function answerChanged(before: Resolution | undefined, after: Resolution): boolean {
  const gone = (r: Resolution | undefined): boolean => r?.kind === 'denied' || r?.kind === 'unknown';
  if (gone(before) && gone(after)) return false;
  if (before?.kind !== after.kind) return true;
  return before.kind === 'ready' && after.kind === 'ready' && before.entry.version !== after.entry.version;
}
