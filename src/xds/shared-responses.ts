import type { SecretEntry } from '../secrets/store.js';
import type { NonceSource } from './nonce.js';
import type { BundleFormat, ResourceEncoder } from './types.js';

/** One encoded single-resource DiscoveryResponse. */
export interface SharedResponse {
  readonly entry: SecretEntry;
  readonly versionInfo: string;
  readonly nonce: string;
  readonly bytes: Buffer;
}

/**
 * Encode once, write the same bytes: every stream that answers with the same content in the same
 * event-loop turn (all subscribers of a secret when it changes; the streams of a connect storm
 * whose requests arrive together) sends the same DiscoveryResponse (resource, version_info and
 * nonce), encoded once per (secret version, requested name, bundle form). Writing a push to N
 * streams then costs N writes of one Buffer instead of N encodings: less CPU, and no N transient
 * 3 KB copies that the allocator keeps as resident memory after a storm.
 *
 * Entries are dropped at the end of the turn (setImmediate), so a response in a later turn (the
 * next change, a reconnect, a changed name set) gets a freshly minted nonce. Nonces are
 * per-stream in xDS, so two streams sharing one is harmless; a stream never sends the same nonce
 * twice in a row (it encodes its own response if the shared nonce is the one it sent last).
 */
export class SharedResponses {
  private readonly current = new Map<string, SharedResponse>();
  private clearScheduled = false;

  constructor(
    private readonly encoder: ResourceEncoder,
    private readonly nonces: NonceSource,
  ) {}

  /** The response carrying exactly `entry` under `name` in `format` (version_info = entry.version). */
  get(entry: SecretEntry, name: string, format: BundleFormat): SharedResponse {
    const key = `${format}\0${name}`;
    const cached = this.current.get(key);
    if (cached && cached.entry === entry) return cached;
    const nonce = this.nonces.next();
    const bytes = this.encoder.encodeSotwResponse({ versionInfo: entry.version, resources: [this.encoder.encodeResource(entry, name, format)], nonce });
    const response: SharedResponse = { entry, versionInfo: entry.version, nonce, bytes };
    this.current.set(key, response);
    if (!this.clearScheduled) {
      this.clearScheduled = true;
      setImmediate(() => {
        this.clearScheduled = false;
        this.current.clear();
      });
    }
    return response;
  }
}
