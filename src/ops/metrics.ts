import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { SecretStore } from '../secrets/store.js';
import type { CaBackend } from '../ca/ca-backend.js';
import type { SecretSourceStatus } from '../sources/source.js';
import type { StreamRegistry } from '../server/sds-service.js';
import type { StreamHooks } from '../xds/types.js';

/**
 * Prometheus metrics (prom-client) for the admin `/metrics` endpoint. Every family is documented
 * in docs/metrics.md (a test checks that). Label values are secret names, API versions, stream
 * kinds, error codes and backend kinds: never certificate or key content, never a per-stream value
 * (a label set per stream would grow without bound under churn).
 *
 * Protocol counters attach as {@link StreamHooks} (the go-control-plane Callbacks pattern), so the
 * xDS state machines know nothing of metrics. The hot push path costs one counter increment per
 * secret name of a response (the child counter is cached per name).
 */
export interface MetricsDeps {
  store: SecretStore;
  streams: StreamRegistry;
  /** Per-secret source states (for the error-by-code gauge), read at scrape. */
  sources: () => SecretSourceStatus[];
  /** Open connections on the SDS socket, read at scrape, when the server counts them. */
  connections?: () => number;
  /** The running config's generation (`sds_config_generation`), read at scrape. */
  configGeneration?: () => number;
  /** How long after a store publish the fan-out is measured (ms); default 2000. */
  fanOutWindowMs?: number;
  now?: () => number;
}

/** Stable metric name prefix. */
const P = 'sds_';

/** One publish being timed: when (monotonic ms, and wall ms to tell older streams apart), and the last write since. */
interface PendingFanOut {
  publishedAt: number;
  publishedWallMs: number;
  lastWriteAt: number | undefined;
  timer: NodeJS.Timeout;
}

/** Resolution of the `nodejs_eventloop_lag_*` metrics (ms). */
export const EVENT_LOOP_SAMPLE_MS = 100;

export class SdsMetrics implements StreamHooks {
  readonly registry = new Registry();
  private readonly responses: Counter<'secret'>;
  private readonly acks: Counter<'secret'>;
  private readonly nacks: Counter<'secret'>;
  private readonly issuance: Histogram<'backend' | 'result'>;
  private readonly fanOut: Histogram<never>;
  private readonly attestation: Counter<'result'>;
  private readonly streamsOpened: Counter<'api' | 'kind'>;
  private readonly configReloads: Counter<'outcome'>;
  private readonly now: () => number;
  /** Secret names whose publish is being timed: publish time and the last write of that name since. */
  private readonly pendingFanOut = new Map<string, PendingFanOut>();
  private unwatch: (() => void) | undefined;
  /** Child counters per secret name: prom-client hashes the label set on every labelled inc(). */
  private readonly responseChildren = new Map<string, { inc(): void }>();

  constructor(private readonly deps: MetricsDeps) {
    this.now = deps.now ?? (() => performance.now());
    const registers = [this.registry];
    // prom-client samples event-loop delay with a 10 ms timer by default: 100 wake-ups a second,
    // most of this process's idle CPU (issue 14). A block shorter than the resolution can fall
    // between two samples; the longer ones the lag metrics exist for are still seen.
    collectDefaultMetrics({ register: this.registry, eventLoopMonitoringPrecision: EVENT_LOOP_SAMPLE_MS });

    new Gauge({
      name: `${P}streams_open`,
      help: 'Open SDS streams by API version (v2, v3) and kind (sotw, delta).',
      labelNames: ['api', 'kind'] as const,
      registers,
      collect() {
        this.reset();
        for (const s of deps.streams.open.values()) this.inc({ api: s.api, kind: s.kind });
      },
    });
    this.streamsOpened = new Counter({
      name: `${P}streams_opened_total`,
      help: 'SDS streams opened since start, by API version and kind.',
      labelNames: ['api', 'kind'] as const,
      registers,
    });
    if (deps.connections) {
      const connections = deps.connections;
      new Gauge({
        name: `${P}connections_open`,
        help: 'Open connections (HTTP/2 sessions) on the SDS socket.',
        registers,
        collect() {
          this.set(connections());
        },
      });
    }
    this.responses = new Counter({ name: `${P}responses_total`, help: 'Responses written, per secret name requested.', labelNames: ['secret'] as const, registers });
    this.acks = new Counter({ name: `${P}acks_total`, help: 'ACKs received, per secret name.', labelNames: ['secret'] as const, registers });
    this.nacks = new Counter({ name: `${P}nacks_total`, help: 'NACKs received (Envoy refused a response), per secret name.', labelNames: ['secret'] as const, registers });

    const store = deps.store;
    new Gauge({
      name: `${P}certificate_expiry_seconds`,
      help: 'Seconds until the served certificate of each secret expires (negative once expired), computed at scrape.',
      labelNames: ['secret', 'serial'] as const,
      registers,
      collect() {
        this.reset();
        const nowMs = Date.now();
        for (const source of deps.sources()) {
          const value = store.get(source.name)?.value;
          if (value?.kind !== 'tls-certificate') continue;
          this.set({ secret: source.name, serial: value.leaf.serialNumber }, (value.leaf.notAfter.getTime() - nowMs) / 1000);
        }
      },
    });
    new Gauge({
      name: `${P}source_errors`,
      help: 'Secrets whose last load or issuance failed, by error code (SDS_ERR_*), computed at scrape.',
      labelNames: ['code'] as const,
      registers,
      collect() {
        this.reset();
        for (const s of deps.sources()) if (s.lastError) this.inc({ code: s.lastError.code });
      },
    });
    this.issuance = new Histogram({
      name: `${P}issuance_duration_seconds`,
      help: 'Time a CA backend took to sign one certificate request, by backend kind and result (ok, error).',
      labelNames: ['backend', 'result'] as const,
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
      registers,
    });
    this.fanOut = new Histogram({
      name: `${P}push_fanout_seconds`,
      help: 'Seconds from a store publish of a secret to the last write of it to a stream that was open at the publish (measured over 2 s after the publish).',
      buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2],
      registers,
    });
    this.attestation = new Counter({
      name: `${P}attestation_total`,
      help: 'Caller attestations on the SDS socket by result (granted, refused).',
      labelNames: ['result'] as const,
      registers,
    });
    this.configReloads = new Counter({
      name: `${P}config_reloads_total`,
      help: 'Config reloads (SIGHUP, --watch-config) by outcome: applied, unchanged, refused (the running config kept).',
      labelNames: ['outcome'] as const,
      registers,
    });
    if (deps.configGeneration) {
      const generation = deps.configGeneration;
      new Gauge({
        name: `${P}config_generation`,
        help: 'Generation of the running config: 1 at start, one more for each reload that changed it.',
        registers,
        collect() {
          this.set(generation());
        },
      });
    }
  }

  /** Starts timing fan-outs: every store change of a name (seen before any stream is told) starts a measuring window for it. */
  start(): void {
    const observe = (names: ReadonlySet<string>): void => {
      for (const name of names) this.published(name);
    };
    this.deps.store.changeObservers.add(observe);
    this.unwatch = () => this.deps.store.changeObservers.delete(observe);
  }

  stop(): void {
    this.unwatch?.();
    this.unwatch = undefined;
    for (const p of this.pendingFanOut.values()) clearTimeout(p.timer);
    this.pendingFanOut.clear();
  }

  /** The Prometheus text exposition (content type {@link SdsMetrics.contentType}). */
  async scrape(): Promise<string> {
    return this.registry.metrics();
  }

  get contentType(): string {
    return this.registry.contentType;
  }

  onResponse(info: { streamId: number; names: readonly string[] }): void {
    const pending = this.pendingFanOut.size > 0;
    for (const name of info.names) {
      let child = this.responseChildren.get(name);
      if (!child) this.responseChildren.set(name, (child = this.responses.labels({ secret: name })));
      child.inc();
      if (pending) {
        const p = this.pendingFanOut.get(name);
        // Only streams that were open at the publish are part of its fan-out (a stream that opens
        // later gets the version as its first answer, which is not a push).
        const openedAt = p && this.deps.streams.open.get(info.streamId)?.openedAt.getTime();
        if (p && openedAt !== undefined && openedAt <= p.publishedWallMs) p.lastWriteAt = this.now();
      }
    }
  }

  onAck(info: { names: readonly string[] }): void {
    for (const name of info.names) this.acks.inc({ secret: this.secretLabel(name) });
  }

  onNack(info: { names: readonly string[] }): void {
    for (const name of info.names) this.nacks.inc({ secret: this.secretLabel(name) });
  }

  /**
   * ACK/NACK names come from the client's request and may name anything (Delta keeps unknown names
   * subscribed): a name the store does not know counts under `(unknown)`, so a client cannot grow
   * the number of series. Responses only carry names that resolved, so they need no check.
   */
  private secretLabel(name: string): string {
    return this.deps.store.resolve(name).kind === 'unknown' ? '(unknown)' : name;
  }

  /** A stream opened (called by the app from the stream registry). */
  streamOpened(api: string, kind: string): void {
    this.streamsOpened.inc({ api, kind });
  }

  /** Attestation hook: called once per attested caller with the outcome. */
  attestationResult(result: 'granted' | 'refused'): void {
    this.attestation.inc({ result });
  }

  /** Counts one config reload by its outcome (`sds_config_reloads_total`). */
  configReloaded(outcome: 'applied' | 'unchanged' | 'refused'): void {
    this.configReloads.inc({ outcome });
  }

  /** Wraps a CA backend so every `sign` is timed into `sds_issuance_duration_seconds`. */
  instrumentBackend(backend: CaBackend): CaBackend {
    const histogram = this.issuance;
    const timed = async <T>(call: () => Promise<T>): Promise<T> => {
      const end = histogram.startTimer({ backend: backend.kind });
      try {
        const signed = await call();
        end({ result: 'ok' });
        return signed;
      } catch (err) {
        end({ result: 'error' });
        throw err;
      }
    };
    // Delegating wrapper (not Object.create): backends may keep #private fields.
    const wrapped: CaBackend & { rotateRoot?: () => Promise<void> } = {
      kind: backend.kind,
      sign: (request, signal) => timed(() => backend.sign(request, signal)),
      trustBundle: (signal) => backend.trustBundle(signal),
      close: () => backend.close(),
    };
    const signPublicKey = backend.signPublicKey;
    if (signPublicKey) wrapped.signPublicKey = (request, signal) => timed(() => signPublicKey.call(backend, request, signal));
    const rotate = (backend as { rotateRoot?: () => Promise<void> }).rotateRoot;
    if (rotate) wrapped.rotateRoot = () => rotate.call(backend);
    return wrapped;
  }

  private published(name: string): void {
    const previous = this.pendingFanOut.get(name);
    if (previous) this.finishFanOut(name, previous);
    const entry: PendingFanOut = { publishedAt: this.now(), publishedWallMs: Date.now(), lastWriteAt: undefined, timer: setTimeout(() => this.finishFanOut(name, entry), this.deps.fanOutWindowMs ?? 2000) };
    entry.timer.unref();
    this.pendingFanOut.set(name, entry);
  }

  private finishFanOut(name: string, p: PendingFanOut): void {
    clearTimeout(p.timer);
    if (this.pendingFanOut.get(name) === p) this.pendingFanOut.delete(name);
    if (p.lastWriteAt !== undefined) this.fanOut.observe((p.lastWriteAt - p.publishedAt) / 1000);
  }
}

/** Calls every hook set in turn (the SDS service takes one). */
export function combineHooks(...all: StreamHooks[]): StreamHooks {
  return {
    onResponse: (info) => {
      for (const h of all) h.onResponse?.(info);
    },
    onAck: (info) => {
      for (const h of all) h.onAck?.(info);
    },
    onNack: (info) => {
      for (const h of all) h.onNack?.(info);
    },
  };
}
