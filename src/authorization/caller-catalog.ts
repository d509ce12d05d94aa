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
  private readonly identities: Set<string>;

  constructor(
    private readonly store: StoreView,
    readonly caller: Caller,
    readonly grant: Grant,
    private readonly onDemand?: OnDemandIssuer,
    private readonly decisions?: CallerDecisions,
  ) {
    this.identities = new Set(grant.identities);
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
    const refusal = this.refusal();
    if (refusal !== undefined) return this.deny(name, refusal);
    const target = this.targetOf(name);
    if (target === this.grant.templated && this.store.canonicalOf(target) === undefined) this.onDemand?.ensure(target);
    const decision = this.decide(name, target);
    if (decision !== 'allow') return decision;
    const resolution = this.store.resolve(target);
    if (resolution.kind === 'ready' && resolution.entry.value.kind === 'tls-certificate') this.decisions?.granted(name);
    return resolution;
  }

  /** Certificates the caller is entitled to, and every bundle; nothing for a refused caller. */
  names(): string[] {
    if (this.refusal() !== undefined) return [];
    return this.store.names().filter((n) => this.store.kindOf(n) === 'trust-bundle' || this.entitledTo(n, n));
  }

  watch(name: string, listener: NameListener): () => void {
    const target = this.targetOf(name);
    const release = target === this.grant.templated && this.onDemand && this.refusal() === undefined ? this.onDemand.acquire(target) : undefined;
    const unwatch = target === name ? this.store.watch(name, listener) : this.store.watch(target, () => listener(name));
    return () => {
      unwatch();
      release?.();
    };
  }

  watchAll(listener: NameListener): () => void {
    return this.store.watchAll(listener);
  }

  /** The store name a requested name stands for: `default` is the caller's first identity. */
  private targetOf(name: string): string {
    if (name === this.store.aliasNames.defaultCertificate) return this.grant.identities[0] ?? name;
    return name;
  }

  private decide(name: string, target: string): 'allow' | Resolution {
    if (name === this.store.aliasNames.allBundles) return 'allow';
    const canonical = this.store.canonicalOf(target);
    if (canonical === undefined) {
      // A workload SPIFFE ID the caller is not granted is refused whether or not it exists (yet):
      // the answer must not depend on what other callers have asked for. Other names: the store
      // says pending or unknown.
      const id = parseSpiffeId(target);
      return id && id.path !== '' && !this.identities.has(target) ? this.deny(name, notEntitledReason(name, this.caller)) : 'allow';
    }
    if (this.store.kindOf(canonical) === 'trust-bundle') return 'allow';
    if (this.entitledTo(target, canonical)) return 'allow';
    // A certificate not loaded yet, named differently from its SPIFFE ID: decided once it is readable.
    if (this.store.get(canonical) === undefined && !target.startsWith('spiffe://') && !canonical.startsWith('spiffe://')) return { kind: 'pending' };
    return this.deny(name, notEntitledReason(name, this.caller));
  }

  /** Entitled when the requested name, the canonical name or the certificate's SPIFFE ID is granted. */
  private entitledTo(requested: string, canonical: string): boolean {
    if (this.identities.has(requested) || this.identities.has(canonical)) return true;
    const value = this.store.get(canonical)?.value;
    return value?.kind === 'tls-certificate' && value.leaf.spiffeId !== undefined && this.identities.has(value.leaf.spiffeId);
  }

  private deny(name: string, reason: string): Resolution {
    this.decisions?.refused(name, reason);
    return { kind: 'denied', reason };
  }
}
