import { createLogger, type Logger } from '../core/logger.js';
import { SecretStore } from '../secrets/store.js';
import { SdsServer } from '../server/sds-server.js';
import { resolveGroup, resolveSocketPath } from '../server/unix-socket.js';
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
import { IdentityTemplate } from '../authorization/entitlements.js';
import { OnDemandIdentities, type IdentityIssuer } from '../authorization/on-demand.js';
import type { CallerAttestation } from '../attestation/index.js';

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
  reload(): Promise<void>;
  /** Rolls the CA root (embedded CA) and re-issues every CA-issued identity; rejects without a CA. */
  rolloverCaRoot(): Promise<void>;
  /** Renews every CA-issued identity now (failures keep the current one and retry with backoff). */
  renewCaIdentities(): Promise<void>;
  stop(): Promise<void>;
}

/**
 * Wires a configuration into a running server: store, sources, gRPC socket, admin endpoint.
 * The socket is bound before sources load, so Envoys that start first connect and wait.
 * What a configuration does not use (file watching, the CA backends and their SDKs, attestation,
 * the admin endpoint) is imported only when configured: start-up time (BENCHMARKS.md).
 */
export async function startApp(config: ServerConfig, log: Logger = createLogger(config.log)): Promise<RunningApp> {
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
  const sources: SecretSource[] = [];
  let ca: CaSource | undefined;
  const { authorization, onDemand, issuer } = buildAuthorization(config, store, log);
  if (!authorization) log.warn(AUTHORIZATION_OFF);
  const files = config.certificates.length > 0 || config.bundles.length > 0;
  const issuing = config.identities.length > 0 || config.authorization.identityTemplate !== undefined;
  // Started now, awaited where used: loading overlaps binding the socket.
  const modules = {
    files: files ? import('../sources/file-source.js') : undefined,
    ca: issuing ? Promise.all([import('../sources/ca-source.js'), import('../ca/create-backend.js')]) : undefined,
    admin: config.admin ? Promise.all([import('../ops/admin-server.js'), import('../ops/certificates-view.js')]) : undefined,
  };
  for (const m of Object.values(modules)) m?.catch(() => undefined); // awaited (and reported) below
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
    sources: () => sources.flatMap((s) => s.status()),
    connections: () => server.connectionStats()?.open ?? 0,
  });
  const clients = new ClientTracker(server.streams, log, (stream) => server.peerCredentialsOf(stream.peer()));
  const hooks = combineHooks(stats, clients, metrics);
  server.streams.observers.add({ opened: (s) => metrics.streamOpened(s.api, s.kind), closed: (s) => clients.closed(s) });
  metrics.start();

  if (modules.files) {
    const { FileSource } = await modules.files;
    sources.push(
      new FileSource({
        tls: config.certificates.map((c) => ({ name: c.name, certFile: c.cert, keyFile: c.key, names: c.names, ...(c.name.startsWith('spiffe://') ? { expectedSpiffeId: c.name } : {}) })),
        bundles: config.bundles.map((b) => ({
          name: b.name,
          caFiles: b.ca,
          names: b.names,
          ...(b.trustDomain ? { trustDomain: b.trustDomain } : {}),
          ...(b.trustDomainFromCertificate ? { trustDomainFromCertificate: b.trustDomainFromCertificate } : {}),
        })),
        publisher: store,
        log,
        debounceMs: config.watch.debounceMs,
        pollIntervalMs: config.watch.pollIntervalMs,
      }),
    );
  }
  // Bind first: Envoys that start before the secrets are ready connect and wait.
  await server.start();
  let admin: AdminServer | undefined;
  let adminAddress: string | undefined;
  const expiry = new ExpiryWatch(store, log, config.expiryWarningMs);
  expiry.start();
  const status = (): StatusReport => {
    const report = buildStatus({ socketPath, store, sources: sources.flatMap((s) => s.status()), streams: server.streams, stats, expiryWarningMs: config.expiryWarningMs });
    const auth = authorization?.status() ?? { enabled: false, summary: AUTHORIZATION_OFF };
    // Readiness is about the configured secrets: an on-demand identity being issued for a new caller
    // must not flip the server to not-ready.
    const onDemandNames = new Set((auth.onDemand ?? []).map((o) => o.spiffeId));
    const ready = report.secrets.every((s) => onDemandNames.has(s.name) || (s.version !== undefined && s.state !== 'expired'));
    return { ...report, ready, authorization: auth };
  };
  try {
    if (modules.ca) {
      const [{ CaSource }, { createCaBackend }] = await modules.ca;
      const c = config.ca;
      ca = new CaSource({
        backend: metrics.instrumentBackend(await createCaBackend(c, log)),
        trustDomain: c.trustDomain,
        identities: config.identities,
        bundleNames: c.bundleNames,
        publisher: store,
        log,
        renewFraction: c.renewFraction,
        jitterFraction: c.jitterFraction,
        timeoutMs: c.timeoutMs,
        backoff: c.backoff,
        bundleRefreshMs: c.bundleRefreshMs,
        bundlePropagationMs: c.bundlePropagationMs,
        onDemand: { keyType: 'ec-p256', lifetimeSeconds: config.authorization.onDemandLifetimeSeconds },
      });
      sources.push(ca);
      issuer.attach(ca);
    }
    await Promise.all(sources.map((s) => s.start()));
    store.markSettled();
    if (config.admin && modules.admin) {
      const [{ AdminServer }, { buildCertificatesView }] = await modules.admin;
      admin = new AdminServer({
        ...config.admin,
        status,
        streams: () => buildStreamsReport(server.streams),
        clients: () => clients.report(),
        certificates: () => buildCertificatesView(store, sources.flatMap((s) => s.status()).map((s) => s.name)),
        metrics,
        log,
      });
      adminAddress = await admin.start();
    }
  } catch (err) {
    expiry.stop();
    metrics.stop();
    clients.stop();
    for (const s of sources) await s.close();
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
      if (!ca) throw new Error('no CA is configured');
      await ca.rolloverRoot();
    },
    renewCaIdentities: async () => {
      await ca?.renewAll();
    },
    reload: async () => {
      for (const s of sources) await s.reloadAll?.();
    },
    stop: async () => {
      onDemand?.close();
      await admin?.stop();
      expiry.stop();
      metrics.stop();
      clients.stop();
      for (const s of sources) await s.close();
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
  let template: IdentityTemplate | undefined;
  if (auth.identityTemplate !== undefined) {
    const parsed = IdentityTemplate.parse(auth.identityTemplate, config.ca.trustDomain);
    if ('problem' in parsed) throw new Error(`identityTemplate: ${parsed.problem}`);
    template = parsed;
  }
  const onDemand = template ? new OnDemandIdentities({ issuer, idleMs: auth.onDemandIdleSeconds * 1000, log }) : undefined;
  const authorization = new Authorization({
    store,
    policy: { workloads: auth.workloads, trustDomain: config.ca.trustDomain, ...(template ? { template } : {}) },
    ...(onDemand ? { onDemand } : {}),
    log,
  });
  log.info('authorization is on: each caller gets only the identities granted to its selectors', {
    workloads: auth.workloads.length,
    ...(auth.identityTemplate ? { identityTemplate: auth.identityTemplate, onDemandIdleSeconds: auth.onDemandIdleSeconds } : {}),
  });
  return { authorization, ...(onDemand ? { onDemand } : {}), issuer };
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
