import type { SecretStore } from '../secrets/store.js';
import type { SecretSourceStatus } from '../sources/source.js';
import type { StreamRegistry } from '../server/sds-service.js';
import type { SecretStreamStats, StreamStats } from './stream-stats.js';
import type { AuthorizationReport } from '../authorization/authorization.js';

/**
 * The operator's view of the server, served at /status: per secret its names, version, the
 * certificate serial and expiry, source state and last error, and NACKs seen. No key material.
 */
export interface StatusReport {
  ready: boolean;
  socket: string;
  streams: { open: number; byApi: Record<string, number> };
  /** Who may receive what (issue 11); filled in by the app. */
  authorization?: AuthorizationReport;
  secrets: Array<{
    name: string;
    kind: string;
    aliases: string[];
    state: SecretSourceStatus['state'];
    files: string[];
    version?: string;
    certificate?: { serialNumber: string; spiffeId?: string; dnsNames: string[]; notBefore: string; notAfter: string; expiresInSeconds: number };
    bundle?: Array<{ trustDomain?: string; roots: Array<{ serialNumber: string; subject: string; notAfter: string }> }>;
    lastError?: { code: string; message: string };
    warnings: Array<{ code: string; message: string }>;
    lastChangeAt?: string;
    nextRenewalAt?: string;
    protocol?: SecretStreamStats;
  }>;
}

/** Adds up the protocol counters of a secret's canonical name and aliases (Envoy may use either). */
function sumStats(all: Array<SecretStreamStats | undefined>): SecretStreamStats | undefined {
  const present = all.filter((s): s is SecretStreamStats => s !== undefined);
  if (present.length === 0) return undefined;
  const lastNack = present
    .map((s) => s.lastNack)
    .filter((n) => n !== undefined)
    .sort((a, b) => (a.at < b.at ? 1 : -1))[0];
  return {
    responses: present.reduce((n, s) => n + s.responses, 0),
    acks: present.reduce((n, s) => n + s.acks, 0),
    nacks: present.reduce((n, s) => n + s.nacks, 0),
    ...(lastNack ? { lastNack } : {}),
  };
}

export function buildStatus(deps: {
  socketPath: string;
  store: SecretStore;
  sources: SecretSourceStatus[];
  streams: StreamRegistry;
  stats: StreamStats;
  now?: Date;
}): StatusReport {
  const now = deps.now ?? new Date();
  const byApi: Record<string, number> = {};
  for (const s of deps.streams.open.values()) byApi[`${s.api}-${s.kind}`] = (byApi[`${s.api}-${s.kind}`] ?? 0) + 1;
  const secrets = deps.sources.map((source) => {
    const entry = deps.store.get(source.name);
    const aliases = deps.store.aliasesOf(source.name);
    const protocol = sumStats([source.name, ...aliases].map((n) => deps.stats.bySecret.get(n)));
    const value = entry?.value;
    return {
      name: source.name,
      kind: source.kind,
      aliases,
      state: source.state,
      files: source.files,
      ...(entry ? { version: entry.version } : {}),
      ...(value?.kind === 'tls-certificate'
        ? {
            certificate: {
              serialNumber: value.leaf.serialNumber,
              ...(value.leaf.spiffeId ? { spiffeId: value.leaf.spiffeId } : {}),
              dnsNames: value.leaf.dnsNames,
              notBefore: value.leaf.notBefore.toISOString(),
              notAfter: value.leaf.notAfter.toISOString(),
              expiresInSeconds: Math.round((value.leaf.notAfter.getTime() - now.getTime()) / 1000),
            },
          }
        : {}),
      ...(value?.kind === 'trust-bundle'
        ? {
            bundle: value.bundles.map((b) => ({
              ...(b.trustDomain ? { trustDomain: b.trustDomain } : {}),
              roots: b.roots.map((r) => ({ serialNumber: r.serialNumber, subject: r.subject, notAfter: r.notAfter.toISOString() })),
            })),
          }
        : {}),
      ...(source.lastError ? { lastError: { code: source.lastError.code, message: source.lastError.message } } : {}),
      warnings: source.warnings.map((w) => ({ code: w.code, message: w.message })),
      ...(source.lastChangeAt ? { lastChangeAt: source.lastChangeAt.toISOString() } : {}),
      ...(source.nextRenewalAt ? { nextRenewalAt: source.nextRenewalAt.toISOString() } : {}),
      ...(protocol ? { protocol } : {}),
    };
  });
  return {
    // Ready when every configured secret has a servable version (errors after that keep the last good one).
    ready: secrets.every((s) => s.version !== undefined),
    socket: deps.socketPath,
    streams: { open: deps.streams.open.size, byApi },
    secrets,
  };
}
