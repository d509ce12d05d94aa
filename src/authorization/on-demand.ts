import type { Logger } from '../core/logger.js';
import type { OnDemandIssuer } from './caller-catalog.js';

/** Where on-demand identities are issued and dropped (CaSource implements it). */
export interface IdentityIssuer {
  /** Declares the identity in the store and issues it; it is renewed like configured identities. */
  addIdentity(spiffeId: string): void;
  /** Stops renewing it and removes it from the store. */
  removeIdentity(spiffeId: string): void;
}

export interface OnDemandStatus {
  spiffeId: string;
  /** Streams currently holding it. */
  streams: number;
  /** When the last stream for it went away (undefined while held). */
  idleSince?: string;
  dropAt?: string;
}

interface Held {
  streams: number;
  idleSince?: number;
  timer?: NodeJS.Timeout;
}

/**
 * Identities from the identity template, issued the first time an attested caller asks, held while
 * at least one stream watches them, dropped `idleMs` after the last such stream is gone (a caller
 * that only fetches holds it for `idleMs` after each fetch).
 */
export class OnDemandIdentities implements OnDemandIssuer {
  private readonly held = new Map<string, Held>();
  private closed = false;

  constructor(
    private readonly opts: {
      issuer: IdentityIssuer;
      /** Time after the last stream for an identity is gone before it is dropped (ms). */
      idleMs: number;
      log: Logger;
    },
  ) {}

  ensure(spiffeId: string): void {
    if (this.closed || this.held.has(spiffeId)) return;
    const held: Held = { streams: 0 };
    this.held.set(spiffeId, held);
    this.opts.log.info('issuing identity on demand', { secret: spiffeId });
    this.opts.issuer.addIdentity(spiffeId);
    this.idle(spiffeId, held);
  }

  acquire(spiffeId: string): () => void {
    this.ensure(spiffeId);
    const held = this.held.get(spiffeId);
    if (!held) return () => undefined;
    held.streams += 1;
    if (held.timer) clearTimeout(held.timer);
    held.timer = undefined;
    delete held.idleSince;
    let released = false;
    return () => {
      if (released) return;
      released = true;
      held.streams -= 1;
      if (held.streams === 0 && this.held.get(spiffeId) === held) this.idle(spiffeId, held);
    };
  }

  status(): OnDemandStatus[] {
    return [...this.held].map(([spiffeId, h]) => ({
      spiffeId,
      streams: h.streams,
      ...(h.idleSince !== undefined ? { idleSince: new Date(h.idleSince).toISOString(), dropAt: new Date(h.idleSince + this.opts.idleMs).toISOString() } : {}),
    }));
  }

  close(): void {
    this.closed = true;
    for (const h of this.held.values()) if (h.timer) clearTimeout(h.timer);
  }

  private idle(spiffeId: string, held: Held): void {
    if (this.closed) return;
    held.idleSince = Date.now();
    if (held.timer) clearTimeout(held.timer);
    held.timer = setTimeout(() => {
      if (held.streams > 0 || this.held.get(spiffeId) !== held) return;
      this.held.delete(spiffeId);
      this.opts.log.info('dropping on-demand identity: no stream has wanted it', { secret: spiffeId, idleMs: this.opts.idleMs });
      this.opts.issuer.removeIdentity(spiffeId);
    }, this.opts.idleMs);
    held.timer.unref();
  }
}
