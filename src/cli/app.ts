import { ErrorCode, SdsError } from '../core/errors.js';
import { createLogger, type Logger } from '../core/logger.js';
import { SecretStore } from '../secrets/store.js';
import { SdsServer } from '../server/sds-server.js';
import { resolveGroup, resolveSocketPath } from '../server/unix-socket.js';
import type { FileSource } from '../sources/file-source.js';
import type { CaSource } from '../sources/ca-source.js';
import type { SecretSource } from '../sources/source.js';
import { StreamStats } from '../ops/stream-stats.js';
import { buildStatus, buildStreamsReport, type StatusReport, type StreamsReport } from '../ops/status.js';
import type { AdminServer } from '../ops/admin-server.js';
import { ExpiryWatch } from '../ops/expiry-watch.js';
import { SdsMetrics, combineHooks } from '../ops/metrics.js';
import { ClientTracker, type ClientsReport } from '../ops/clients.js';
import type { ServerConfig } from './config.js';
import { Authorization, AUTHORIZATION_OFF } from '../authorization/authorization.js';
import { IdentityTemplate, type AuthorizationPolicy } from '../authorization/entitlements.js';
import { needsCa } from './reload-plan.js';
import { OnDemandIdentities, type IdentityIssuer } from '../authorization/on-demand.js';
import type { CallerAttestation } from '../attestation/index.js';
import { ConfigReloader, type LiveParts, type ReloadOutcome } from './reload.js';

export interface RunningApp {
  socketPath: string;
  adminAddress?: string;
  store: SecretStore;
  status(): StatusReport;
  /** Open streams with the names each asked for and was sent (admin `/streams`). */
  streams(): StreamsReport;
  /** Who holds what: per open stream its node, versions sent and ACKed, last NACK (admin `/clients`). */
  clients(): ClientsReport;
  /** Prometheus metrics (admin `/metrics`). */
  metrics: SdsMetrics;
  /** Re-reads every secret file now (SIGHUP; also after a config reload). */
  reload(): Promise<void>;
  /**
   * Re-reads the config (`StartOptions.load`) and applies the difference live (issue 13); never
   * rejects: an invalid config keeps the running one, and the outcome and `/status` say why.
   */
  reloadConfig(trigger?: string): Promise<ReloadOutcome>;
  /** Rolls the CA root (embedded CA) and re-issues every CA-issued identity; rejects without a CA. */
  rolloverCaRoot(): Promise<void>;
  /** Renews every CA-issued identity now (failures keep the current one and retry with backoff). */
  renewCaIdentities(): Promise<void>;
  stop(): Promise<void>;
}

export interface StartOptions {
  /** Reads the config again for `reloadConfig` (the config file and the command line); throws (or rejects with) an SdsError when invalid. */
  load?: () => ServerConfig | Promise<ServerConfig>;
  /** The config file (shown in `/status`; watched with `watchConfig`). */
  configFile?: string;
  /** `--watch-config`: reload when the config file changes. */
  watchConfig?: boolean;
}

/**
 * Wires a configuration into a running server: store, sources, gRPC socket, admin endpoint.
 * The socket is bound before sources load, so Envoys that start first connect and wait.
 */
export async function startApp(config: ServerConfig, log: Logger = createLogger(config.log), opts: StartOptions = {}): Promise<RunningApp> {
  const socketPath = resolveSocketPath(config.socket.path);
  const store = new SecretStore({
    aliases: config.aliases,
    ...(config.defaultCertificate ? { defaultCertificate: config.defaultCertificate } : {}),
    ...(config.rootBundle ? { rootBundle: config.rootBundle } : {}),
    log,
  });
  // NACK bookkeeping per served version: the version a name resolves to now is the one refused.
  const stats = new StreamStats((name) => {
    const r = store.resolve(name);
    return r.kind === 'ready' ? r.entry.version : undefined;
  });
  // Replaced by config reloads: the file source as a whole, the CA source when first or last needed.
  let files: FileSource | undefined;
  let ca: CaSource | undefined;
  const sources = (): SecretSource[] => [...(files ? [files] : []), ...(ca ? [ca] : [])];
  // Start loading what this configuration uses now, so it overlaps binding the socket; the
  // `await import` where each is used then finds it loaded (start-up time, BENCHMARKS.md).
  if (config.certificates.length > 0 || config.bundles.length > 0) void import('../sources/file-source.js').catch(() => undefined);
  if (needsCa(config)) void Promise.all([import('../sources/ca-source.js'), import('../ca/create-backend.js')]).catch(() => undefined);
  const adminModules = config.admin ? Promise.all([import('../ops/admin-server.js'), import('../ops/certificates-view.js')]) : undefined;
  adminModules?.catch(() => undefined); // awaited (and reported) where the admin endpoint starts
  const { authorization, onDemand, issuer } = buildAuthorization(config, store, log);
  if (!authorization) log.warn(AUTHORIZATION_OFF);
  const group = config.socket.group !== undefined ? await resolveGroup(config.socket.group) : undefined;
  const server = new SdsServer({
    socketPath,
    socketMode: config.socket.mode,
    ...(config.socket.limits ? { limits: config.socket.limits } : {}),
    ...(config.socket.allowSharedDirectory ? { allowSharedSocketDirectory: true } : {}),
    ...(group !== undefined ? { socketGroup: group } : {}),
    catalog: store,
    // Authorization needs to know who is calling: every connection is attested (SO_PEERCRED, selectors).
    ...(authorization ? { catalogFor: authorization.catalogFor.bind(authorization), attestation: await callerAttestation(config, log) } : {}),
    log,
    bundleFormat: config.bundleFormat,
    hooks: { onResponse: (i) => hooks.onResponse?.(i), onAck: (i) => hooks.onAck?.(i), onNack: (i) => hooks.onNack?.(i) },
    onAttestation: (result) => metrics.attestationResult(result),
  });
  const metrics = new SdsMetrics({
    store,
    streams: server.streams,
    sources: () => sources().flatMap((s) => s.status()),
    connections: () => server.connectionStats()?.open ?? 0,
    configGeneration: () => reloader.status().generation,
  });
  const clients = new ClientTracker(server.streams, log, (stream) => server.peerCredentialsOf(stream.peer()));
  const hooks = combineHooks(stats, clients, metrics);
  server.streams.observers.add({ opened: (s) => metrics.streamOpened(s.api, s.kind), closed: (s) => clients.closed(s) });
  metrics.start();

  // Sources and CA backends are imported only when a config uses them (start-up time).
  const makeFileSource = async (c: ServerConfig): Promise<FileSource | undefined> =>
    c.certificates.length > 0 || c.bundles.length > 0
      ? new (await import('../sources/file-source.js')).FileSource({
          tls: c.certificates.map((x) => ({ name: x.name, certFile: x.cert, keyFile: x.key, names: x.names, ...(x.name.startsWith('spiffe://') ? { expectedSpiffeId: x.name } : {}) })),
          bundles: c.bundles.map((b) => ({
            name: b.name,
            caFiles: b.ca,
            names: b.names,
            ...(b.trustDomain ? { trustDomain: b.trustDomain } : {}),
            ...(b.trustDomainFromCertificate ? { trustDomainFromCertificate: b.trustDomainFromCertificate } : {}),
          })),
          publisher: store,
          log,
          // Watch settings are fixed at start (a reload keeps them; see reload-plan.ts).
          debounceMs: config.watch.debounceMs,
          pollIntervalMs: config.watch.pollIntervalMs,
        })
      : undefined;
  files = await makeFileSource(config);
  // The CA's settings are fixed once it runs; a reload that first needs a CA creates it from its config.
  const makeCaSource = async (c: ServerConfig): Promise<CaSource> => {
    const settings = c.ca;
    const [{ CaSource }, { createCaBackend }] = await Promise.all([import('../sources/ca-source.js'), import('../ca/create-backend.js')]);
    const source = new CaSource({
      backend: metrics.instrumentBackend(await createCaBackend(settings, log)),
      trustDomain: settings.trustDomain,
      identities: c.identities,
      bundleNames: settings.bundleNames,
      publisher: store,
      log,
      renewFraction: settings.renewFraction,
      jitterFraction: settings.jitterFraction,
      timeoutMs: settings.timeoutMs,
      backoff: settings.backoff,
      bundleRefreshMs: settings.bundleRefreshMs,
      bundlePropagationMs: settings.bundlePropagationMs,
      onDemand: { keyType: 'ec-p256', lifetimeSeconds: c.authorization.onDemandLifetimeSeconds },
    });
    issuer.attach(source);
    return source;
  };
  // Bind first: Envoys that start before the secrets are ready connect and wait.
  await server.start();
  let admin: AdminServer | undefined;
  let adminAddress: string | undefined;
  const expiry = new ExpiryWatch(store, log, config.expiryWarningMs);
  expiry.start();
  const status = (): StatusReport => {
    const report = buildStatus({ socketPath, store, sources: sources().flatMap((s) => s.status()), streams: server.streams, stats, expiryWarningMs: config.expiryWarningMs });
    const auth = authorization?.status() ?? { enabled: false, summary: AUTHORIZATION_OFF };
    // Readiness is about the configured secrets: an on-demand identity being issued for a new caller
    // must not flip the server to not-ready.
    const onDemandNames = new Set((auth.onDemand ?? []).map((o) => o.spiffeId));
    const ready = report.secrets.every((s) => onDemandNames.has(s.name) || (s.version !== undefined && s.state !== 'expired'));
    return { ...report, ready, config: reloader.status(), authorization: auth };
  };
  const parts: LiveParts = {
    store,
    closeFiles: async () => {
      const old = files;
      files = undefined;
      await old?.close();
    },
    prepareFiles: async (c) => {
      const source = await makeFileSource(c);
      return () => {
        files = source;
        return source?.start() ?? Promise.resolve();
      };
    },
    ca: () => ca,
    prepareCa: async (c) => {
      const source = await makeCaSource(c);
      return () => {
        ca = source;
        return source.start();
      };
    },
    stopCa: async () => {
      const old = ca;
      ca = undefined;
      if (!old) return [];
      await old.close();
      return old.declaredNames();
    },
    setPolicy: (a, trustDomain) => {
      if (!authorization) return;
      authorization.setPolicy(authorizationPolicy({ ...config.authorization, ...a, identityTemplate: a.identityTemplate }, trustDomain));
    },
  };
  const reloader = new ConfigReloader({
    config,
    load: opts.load ?? (() => config),
    parts,
    log,
    onReload: (outcome) => metrics.configReloaded(outcome.outcome),
    ...(opts.configFile ? { file: opts.configFile } : {}),
  });
  try {
    if (needsCa(config)) ca = await makeCaSource(config);
    await Promise.all(sources().map((s) => s.start()));
    store.markSettled();
    if (opts.watchConfig) await reloader.watchFile(config.watch.debounceMs);
    if (config.admin && adminModules) {
      const [{ AdminServer }, { buildCertificatesView }] = await adminModules;
      admin = new AdminServer({
        ...config.admin,
        status,
        streams: () => buildStreamsReport(server.streams),
        clients: () => clients.report(),
        certificates: () => buildCertificatesView(store, sources().flatMap((s) => s.status()).map((s) => s.name)),
        metrics,
        log,
      });
      adminAddress = await admin.start();
    }
  } catch (err) {
    await reloader.close();
    expiry.stop();
    metrics.stop();
    clients.stop();
    for (const s of sources()) await s.close();
    await server.stop(0);
    throw err;
  }
  const report = status();
  // Warn, not info, when a secret is in error (e.g. a directory where a file is expected): the
  // server would otherwise wait with nothing above info level saying why.
  const inError = report.secrets.some((s) => s.state === 'error');
  log[inError ? 'warn' : 'info'](report.ready ? 'all secrets ready' : 'serving; some secrets are not available yet', {
    secrets: report.secrets.map((s) => ({ name: s.name, aliases: s.aliases, state: s.state, ...(s.lastError ? { error: s.lastError.message } : {}) })),
  });

  return {
    socketPath,
    ...(adminAddress ? { adminAddress } : {}),
    store,
    status,
    streams: () => buildStreamsReport(server.streams),
    clients: () => clients.report(),
    metrics,
    rolloverCaRoot: async () => {
      if (!ca) throw new SdsError(ErrorCode.ConfigInvalid, 'no CA is configured');
      await ca.rolloverRoot();
    },
    renewCaIdentities: async () => {
      await ca?.renewAll();
    },
    reload: async () => {
      for (const s of sources()) await s.reloadAll?.();
    },
    reloadConfig: (trigger = 'reload') => reloader.reload(trigger),
    stop: async () => {
      await reloader.close();
      onDemand?.close();
      await admin?.stop();
      expiry.stop();
      metrics.stop();
      clients.stop();
      for (const s of sources()) await s.close();
      await server.stop();
    },
  };
}

/**
 * The authorization of a config with `workloads` or `identityTemplate`; none (authorization off)
 * otherwise. On-demand identities go to the CA source once it exists (requests that arrive while
 * the server is still starting are queued).
 */
function buildAuthorization(
  config: ServerConfig,
  store: SecretStore,
  log: Logger,
): { authorization?: Authorization; onDemand?: OnDemandIdentities; issuer: LateIssuer } {
  const issuer = new LateIssuer();
  const auth = config.authorization;
  if (!auth.enabled) return { issuer };
  // Always there while authorization is on: a reload may add an identity template.
  const onDemand = new OnDemandIdentities({ issuer, idleMs: auth.onDemandIdleSeconds * 1000, log });
  const authorization = new Authorization({ store, policy: authorizationPolicy(auth, config.ca.trustDomain), onDemand, log });
  log.info('authorization is on: each caller gets only the identities granted to its selectors', {
    workloads: auth.workloads.length,
    ...(auth.identityTemplate ? { identityTemplate: auth.identityTemplate, onDemandIdleSeconds: auth.onDemandIdleSeconds } : {}),
  });
  return { authorization, onDemand, issuer };
}

/** The policy of the `workloads` / `identityTemplate` settings (validated when the config was read). */
function authorizationPolicy(auth: Pick<ServerConfig['authorization'], 'workloads' | 'identityTemplate'>, trustDomain: string): AuthorizationPolicy {
  let template: IdentityTemplate | undefined;
  if (auth.identityTemplate !== undefined) {
    const parsed = IdentityTemplate.parse(auth.identityTemplate, trustDomain);
    if ('problem' in parsed) throw new SdsError(ErrorCode.ConfigInvalid, `identityTemplate: ${parsed.problem}`);
    template = parsed;
  }
  return { workloads: auth.workloads, trustDomain, ...(template ? { template } : {}) };
}

/** An IdentityIssuer whose CA source is created after the socket is bound: earlier requests wait here. */
class LateIssuer implements IdentityIssuer {
  private target: IdentityIssuer | undefined;
  private readonly queued = new Set<string>();

  attach(target: IdentityIssuer): void {
    this.target = target;
    for (const id of this.queued) target.addIdentity(id);
    this.queued.clear();
  }

  addIdentity(spiffeId: string): void {
    if (this.target) this.target.addIdentity(spiffeId);
    else this.queued.add(spiffeId);
  }

  removeIdentity(spiffeId: string): void {
    if (this.target) this.target.removeIdentity(spiffeId);
    else this.queued.delete(spiffeId);
  }
}

/** The unix attestor always; the Kubernetes attestor when `attestation.kubernetes` is configured. */
async function callerAttestation(config: ServerConfig, log: Logger): Promise<CallerAttestation> {
  const k = config.authorization.kubernetes;
  const { createCallerAttestation } = await import('../attestation/index.js');
  return createCallerAttestation({
    log,
    ...(k
      ? {
          k8s: {
            ...(k.kubeletUrl ? { url: k.kubeletUrl } : {}),
            ...(k.tokenFile ? { tokenFile: k.tokenFile } : {}),
            ...(k.caFile ? { caFile: k.caFile } : {}),
            ...(k.skipKubeletVerification ? { skipVerification: true } : {}),
            // Only where cgroups are read; the pid-reuse guard always reads the real /proc.
            ...(k.procRoot ? { procRoot: k.procRoot } : {}),
          },
        }
      : {}),
  });
}
