import type { StreamHooks } from '../xds/types.js';

export interface SecretStreamStats {
  responses: number;
  acks: number;
  nacks: number;
  lastNack?: { at: string; reason: string; node?: string };
  /** NACKs of the version currently served under this name (the version Envoy refused), when any. */
  nacked?: { version: string; count: number; reason: string; at: string };
}

/** Counts responses, ACKs and NACKs per requested secret name: the protocol side of /status. */
export class StreamStats implements StreamHooks {
  readonly bySecret = new Map<string, SecretStreamStats>();

  /** `versionOf(name)`: the version served under a requested name now (the one a NACK refused). */
  constructor(private readonly versionOf: (name: string) => string | undefined = () => undefined) {}

  onResponse(info: { names: readonly string[] }): void {
    for (const name of info.names) this.stats(name).responses += 1;
  }

  onAck(info: { names: readonly string[] }): void {
    for (const name of info.names) this.stats(name).acks += 1;
  }

  onNack(info: { names: readonly string[]; reason: string; node?: { id: string } | undefined }): void {
    for (const name of info.names) {
      const s = this.stats(name);
      s.nacks += 1;
      const at = new Date().toISOString();
      s.lastNack = { at, reason: info.reason, ...(info.node ? { node: info.node.id } : {}) };
      const version = this.versionOf(name);
      if (version !== undefined) {
        s.nacked = s.nacked?.version === version ? { ...s.nacked, count: s.nacked.count + 1, reason: info.reason, at } : { version, count: 1, reason: info.reason, at };
      }
    }
  }

  private stats(name: string): SecretStreamStats {
    let s = this.bySecret.get(name);
    if (!s) this.bySecret.set(name, (s = { responses: 0, acks: 0, nacks: 0 }));
    return s;
  }
}
