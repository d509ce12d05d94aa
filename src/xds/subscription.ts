/**
 * Which secrets one stream is subscribed to: the xDS subscription rules, written once for the
 * state-of-the-world and the incremental (Delta) protocol, as go-control-plane keeps them in its
 * `pkg/server/stream/v3/subscription.go` apart from its two servers.
 *
 * Rules (xDS protocol, "How the client specifies what resources to return"):
 * - Legacy wildcard: the FIRST request of a stream naming nothing subscribes to every resource.
 *   Later requests that still name nothing keep it; the first request that names something ends
 *   the legacy mode for good.
 * - Explicit wildcard: the name `*`.
 * - SotW: every request carries the full list. After the stream has named resources, an empty
 *   list means "no longer interested in any resource" (only LDS/CDS keep the legacy meaning, and
 *   SDS is neither): the subscription is then empty, never a wildcard. Envoy sends such an ACK when
 *   the last listener using a secret goes away; treating it as a wildcard would hand the stream
 *   every private key the server holds.
 * - Delta: `resource_names_subscribe` / `resource_names_unsubscribe` add and remove names (`*`
 *   included). A legacy-wildcard stream that subscribes names stays wildcard until it unsubscribes
 *   `*` (the spec's example, as go-control-plane reads it).
 *
 * The state machines decide what to send; this type only answers "is this stream interested".
 */

/** The explicit wildcard name. */
export const WILDCARD = '*';

/** What a request changed; `undefined` from the update methods means "nothing". */
export interface SubscriptionChange {
  /** Names subscribed by this request that were not subscribed before. */
  readonly added: readonly string[];
  /** Names no longer subscribed. */
  readonly removed: readonly string[];
  /** The wildcard state flipped. */
  readonly wildcardChanged: boolean;
}

const NONE: readonly string[] = Object.freeze([]);

export class Subscription {
  private requested = false;
  private legacyWildcardAllowed = true;
  private wildcardOn = false;
  private readonly explicit = new Set<string>();
  /** The explicit names as an array (request order), rebuilt only when they change. */
  private list: readonly string[] = NONE;

  /** Every resource of the type (legacy or explicit wildcard). */
  get wildcard(): boolean {
    return this.wildcardOn;
  }

  /** The explicitly subscribed names (never `*`), in the order first requested. */
  get names(): readonly string[] {
    return this.list;
  }

  /** Subscribed to nothing at all: the stream holds nothing and is sent nothing. */
  get isEmpty(): boolean {
    return !this.wildcardOn && this.explicit.size === 0;
  }

  /** Whether `name` is explicitly subscribed (a wildcard covers names the catalog lists). */
  has(name: string): boolean {
    return this.explicit.has(name);
  }

  /**
   * State of the world: applies the full name list of one request (ACK, NACK or request alike).
   * Returns what changed, or undefined when the subscription is the same (the hot path: Envoy
   * repeats the same one-name list in every ACK; no allocation then).
   */
  setSotw(requested: readonly string[]): SubscriptionChange | undefined {
    const first = !this.requested;
    this.requested = true;
    if (this.legacyWildcardAllowed) {
      if (requested.length === 0) {
        if (!first) return undefined; // still the legacy wildcard
        this.wildcardOn = true;
        return { added: NONE, removed: NONE, wildcardChanged: true };
      }
      this.legacyWildcardAllowed = false;
    }
    const wildcard = requested.includes(WILDCARD);
    if (wildcard === this.wildcardOn && this.sameExplicit(requested)) return undefined;
    const wildcardChanged = wildcard !== this.wildcardOn;
    this.wildcardOn = wildcard;
    const next = new Set<string>();
    for (const name of requested) if (name !== WILDCARD) next.add(name);
    const added: string[] = [];
    const removed: string[] = [];
    for (const name of next) if (!this.explicit.has(name)) added.push(name);
    for (const name of this.explicit) if (!next.has(name)) removed.push(name);
    this.explicit.clear();
    for (const name of next) this.explicit.add(name);
    this.list = [...next];
    return { added, removed, wildcardChanged };
  }

  /**
   * Delta: applies one request's subscribe and unsubscribe lists (subscriptions first, as
   * go-control-plane does). Returns what changed, or undefined when nothing did. `added` lists
   * only names that were not subscribed; a re-subscription of a held name is the caller's to
   * answer (the protocol answers every subscribe).
   */
  updateDelta(subscribe: readonly string[], unsubscribe: readonly string[]): SubscriptionChange | undefined {
    const first = !this.requested;
    this.requested = true;
    const wasWildcard = this.wildcardOn;
    if (this.legacyWildcardAllowed) {
      if (subscribe.length === 0) {
        if (first) this.wildcardOn = true;
      } else {
        this.legacyWildcardAllowed = false;
      }
    }
    let added: string[] | undefined;
    let removed: string[] | undefined;
    for (const name of subscribe) {
      if (name === WILDCARD) this.wildcardOn = true;
      else if (!this.explicit.has(name)) {
        this.explicit.add(name);
        (added ??= []).push(name);
      }
    }
    for (const name of unsubscribe) {
      if (name === WILDCARD) this.wildcardOn = false;
      else if (this.explicit.delete(name)) (removed ??= []).push(name);
    }
    const wildcardChanged = wasWildcard !== this.wildcardOn;
    if (!added && !removed && !wildcardChanged) return undefined;
    if (added || removed) this.list = [...this.explicit];
    return { added: added ?? NONE, removed: removed ?? NONE, wildcardChanged };
  }

  /** Same explicit set as `requested` (ignoring `*` and duplicates), without allocating for short lists. */
  private sameExplicit(requested: readonly string[]): boolean {
    const list = this.list;
    // Fast path: the same list in the same order (what Envoy sends).
    if (requested.length === list.length) {
      let same = true;
      for (let i = 0; i < list.length; i++) {
        if (requested[i] !== list[i]) {
          same = false;
          break;
        }
      }
      if (same) return true;
    }
    for (const name of requested) if (name !== WILDCARD && !this.explicit.has(name)) return false;
    if (requested.length <= 16) {
      for (const name of list) if (!requested.includes(name)) return false;
      return true;
    }
    const set = new Set(requested);
    for (const name of list) if (!set.has(name)) return false;
    return true;
  }
}
