import type { StreamHooks } from '../xds/types.js';

export interface SecretStreamStats {
  responses: number;
  acks: number;
  nacks: number;
  lastNack?: { at: string; reason: string; node?: string };
}

/** Counts responses, ACKs and NACKs per requested secret name: the protocol side of /status. */
export class StreamStats implements StreamHooks {
  readonly bySecret = new Map<string, SecretStreamStats>();

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
      s.lastNack = { at: new Date().toISOString(), reason: info.reason, ...(info.node ? { node: info.node.id } : {}) };
    }
  }

  private stats(name: string): SecretStreamStats {
    let s = this.bySecret.get(name);
    if (!s) this.bySecret.set(name, (s = { responses: 0, acks: 0, nacks: 0 }));
    return s;
  }
}
