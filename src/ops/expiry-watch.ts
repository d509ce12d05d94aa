/**
 * Logs, once per certificate version, when a served certificate enters its expiry warning window
 * and when it expires (from then on the store no longer hands it to new streams). Listens to the
 * store's change notifications; knows nothing about where certificates come from.
 */
import { ErrorCode } from '../core/errors.js';
import type { Logger } from '../core/logger.js';
import { expiryWarningStartsAt } from '../secrets/expiry.js';
import type { SecretStore } from '../secrets/store.js';

/** setTimeout's largest delay; longer waits are done in steps. */
const MAX_TIMER_MS = 2 ** 31 - 1;

export class ExpiryWatch {
  private readonly timers = new Map<string, NodeJS.Timeout>();
  private unwatch: (() => void) | undefined;

  constructor(
    private readonly store: SecretStore,
    private readonly log: Logger,
    private readonly expiryWarningMs: number,
    private readonly now: () => Date = () => new Date(),
  ) {}

  start(): void {
    this.unwatch = this.store.watchAll((name) => this.schedule(name));
    for (const name of this.store.names()) this.schedule(name);
  }

  stop(): void {
    this.unwatch?.();
    for (const t of this.timers.values()) clearTimeout(t);
    this.timers.clear();
  }

  /** (Re)arms the timer of canonical secret `name` for its current version. */
  private schedule(name: string): void {
    const entry = this.store.get(name);
    if (!entry && !this.timers.has(name)) return; // an alias, or nothing published yet
    clearTimeout(this.timers.get(name));
    this.timers.delete(name);
    if (entry?.value.kind !== 'tls-certificate') return;
    const leaf = entry.value.leaf;
    const version = entry.version;
    const fields = { name, version, serial: leaf.serialNumber, spiffeId: leaf.spiffeId ?? null, notAfter: leaf.notAfter.toISOString() };
    const warnAt = expiryWarningStartsAt(leaf, this.expiryWarningMs);
    let warned = false;
    const step = (): void => {
      if (this.store.get(name)?.version !== version) return; // replaced meanwhile
      const now = this.now().getTime();
      if (!warned && now >= warnAt && now < leaf.notAfter.getTime()) {
        warned = true;
        this.log.warn('certificate expires soon', { ...fields, code: ErrorCode.CertExpiringSoon, expiresInSeconds: Math.round((leaf.notAfter.getTime() - now) / 1000) });
      }
      if (now >= leaf.notAfter.getTime()) {
        this.timers.delete(name);
        this.log.error('certificate expired; no longer served to new streams', { ...fields, code: ErrorCode.CertExpired });
        return;
      }
      const next = warned ? leaf.notAfter.getTime() : warnAt;
      const timer = setTimeout(step, Math.min(MAX_TIMER_MS, Math.max(0, next - now)));
      timer.unref();
      this.timers.set(name, timer);
    };
    step();
  }
}
