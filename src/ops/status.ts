import type { SecretStore } from '../secrets/store.js';
import type { CertificateInfo } from '../secrets/secret.js';
import { DEFAULT_EXPIRY_WARNING_MS, expiryState, type ExpiryState } from '../secrets/expiry.js';
import { ErrorCode, type Problem } from '../core/errors.js';
import type { SecretSourceStatus } from '../sources/source.js';
import type { StreamRecord, StreamRegistry } from '../server/sds-service.js';
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
  /** The running config's version and the last reload (issue 13); filled in by the app. */
  config?: ConfigStatus;
  /** Who may receive what (issue 11); filled in by the app. */
  authorization?: AuthorizationReport;
  secrets: Array<{
    name: string;
    kind: string;
    aliases: string[];
    /**
     * `ok`; `pending` (nothing loaded yet); `error` (nothing to serve); `serving-last-good` (the last
     * update was refused, see `refusedUpdate`, and the previous version is still served); `nacked`
     * (the served version was refused by at least one Envoy, see `nacked`); `expired` (the served
     * certificate is past notAfter and no longer handed to new streams).
     */
    state: SecretSourceStatus['state'] | 'expired' | 'serving-last-good' | 'nacked';
    /** Why the last update was refused while the last good version is still served. */
    refusedUpdate?: { code: string; message: string };
    /** The served version was NACKed by an Envoy: how many times, and the last reason. */
    nacked?: { version: string; count: number; reason: string; at: string };
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

/** The running config: its version, when it was loaded, and the last reload (admin `/status`). */
export interface ConfigStatus {
  /** 1 at start, one more for each reload that changed the running config. */
  generation: number;
  /** Content hash of the running config (16 hex digits of SHA-256). */
  hash: string;
  /** When the running config was loaded (start, or the last reload that changed it). */
  loadedAt: string;
  /** The config file, when there is one. */
  file?: string;
  /** `--watch-config`: the file is watched and reloaded when it changes. */
  watching: boolean;
  /** Settings changed in the config that keep their running value until restart. */
  restartRequired: string[];
  lastReload?: { at: string; trigger: string; outcome: 'applied' | 'unchanged' | 'refused' };
  /** Why the last reload was refused (cleared by the next one that succeeds). */
  lastReloadError?: { code: string; message: string; at: string };
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

function expiryProblem(leaf: CertificateInfo, state: ExpiryState, now: Date): Problem {
  const when = `notAfter ${leaf.notAfter.toISOString()}, now ${now.toISOString()}`;
  const what = `certificate ${leaf.serialNumber}${leaf.spiffeId ? ` (${leaf.spiffeId})` : ''}`;
  return state === 'expired'
    ? { code: ErrorCode.CertExpired, message: `${what} has expired (${when}); no longer handed to new streams until a renewed one is loaded` }
    : { code: ErrorCode.CertExpiringSoon, message: `${what} expires in ${Math.round((leaf.notAfter.getTime() - now.getTime()) / 1000)} s (${when}); renew it` };
}

export function buildStatus(deps: {
  socketPath: string;
  store: SecretStore;
  sources: SecretSourceStatus[];
  streams: StreamRegistry;
  stats: StreamStats;
  now?: Date;
  /** Expiry warning setting (config `expiryWarning`); see src/secrets/expiry.ts. */
  expiryWarningMs?: number;
}): StatusReport {
  const expiryWarningMs = deps.expiryWarningMs ?? DEFAULT_EXPIRY_WARNING_MS;
  const now = deps.now ?? new Date();
  const byApi: Record<string, number> = {};
  for (const s of deps.streams.open.values()) byApi[`${s.api}-${s.kind}`] = (byApi[`${s.api}-${s.kind}`] ?? 0) + 1;
  const secrets = deps.sources.map((source) => {
    const entry = deps.store.get(source.name);
    const aliases = deps.store.aliasesOf(source.name);
    const protocol = sumStats([source.name, ...aliases].map((n) => deps.stats.bySecret.get(n)));
    const value = entry?.value;
    const expiry = value?.kind === 'tls-certificate' ? expiryState(value.leaf, now, expiryWarningMs) : 'valid';
    const expiryWarnings = value?.kind === 'tls-certificate' && expiry !== 'valid' ? [expiryProblem(value.leaf, expiry, now)] : [];
    // NACKs of the version served now, under its name or an alias.
    const nackedNow = [source.name, ...aliases]
      .map((n) => deps.stats.bySecret.get(n)?.nacked)
      .filter((n): n is NonNullable<SecretStreamStats['nacked']> => n !== undefined && entry !== undefined && n.version === entry.version);
    const nacked = nackedNow.length
      ? { version: nackedNow[0]!.version, count: nackedNow.reduce((c, n) => c + n.count, 0), ...[...nackedNow].sort((a, b) => (a.at < b.at ? 1 : -1)).map((n) => ({ reason: n.reason, at: n.at }))[0]! }
      : undefined;
    const servingLastGood = source.state === 'error' && entry !== undefined;
    const state =
      expiry === 'expired' ? ('expired' as const) : servingLastGood ? ('serving-last-good' as const) : nacked && source.state === 'ok' ? ('nacked' as const) : source.state;
    return {
      name: source.name,
      kind: source.kind,
      aliases,
      state,
      ...(servingLastGood && source.lastError ? { refusedUpdate: { code: source.lastError.code, message: source.lastError.message } } : {}),
      ...(nacked ? { nacked } : {}),
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
      warnings: [...expiryWarnings, ...source.warnings].map((w) => ({ code: w.code, message: w.message })),
      ...(source.lastChangeAt ? { lastChangeAt: source.lastChangeAt.toISOString() } : {}),
      ...(source.nextRenewalAt ? { nextRenewalAt: source.nextRenewalAt.toISOString() } : {}),
      ...(protocol ? { protocol } : {}),
    };
  });
  return {
    // Ready when every configured secret has a servable version (errors after that keep the last
    // good one), and no served certificate has expired.
    ready: secrets.every((s) => s.version !== undefined && s.state !== 'expired'),
    socket: deps.socketPath,
    streams: { open: deps.streams.open.size, byApi },
    secrets,
  };
}

/** One open stream in /streams: who it is and the names it asked for and was sent. No key material. */
export interface StreamReportEntry extends StreamRecord {
  id: number;
  api: string;
  kind: 'sotw' | 'delta';
  openedAt: string;
  node?: string;
}

/** The /streams report: streams opened since start, each open stream's names, and the last ones that ended. */
export interface StreamsReport {
  openedTotal: number;
  open: StreamReportEntry[];
  recentlyClosed: Array<StreamReportEntry & { closedAt: string }>;
}

/**
 * Per-stream names of the open streams (in stream-id order) and of the last streams that ended: what each client named (SotW
 * `resource_names`, Delta subscribe/unsubscribe) and which secret names it was sent. Shows at a
 * glance whether a stream got a secret it never named (xDS spec: only a wildcard stream may).
 */
export function buildStreamsReport(streams: StreamRegistry): StreamsReport {
  const open = [...streams.open.values()]
    .sort((a, b) => a.id - b.id)
    .map((s) => {
      const node = s.node()?.id;
      return { id: s.id, api: s.api, kind: s.kind, openedAt: s.openedAt.toISOString(), ...(node !== undefined ? { node } : {}), ...s.record() };
    });
  const recentlyClosed = streams.recentlyClosed.map((s) => ({ ...s, openedAt: s.openedAt.toISOString(), closedAt: s.closedAt.toISOString() }));
  return { openedTotal: streams.openedTotal, open, recentlyClosed };
}
