import { beforeAll, describe, expect, it } from 'vitest';
import * as grpc from '@grpc/grpc-js';
import { SecretStore, type Resolution, type SecretCatalog, type NameListener } from '../src/secrets/store.js';
import type { SecretValue } from '../src/secrets/secret.js';
import { SecretEncoder } from '../src/api/secret-encoder.js';
import { V3 } from '../src/api/api-version.js';
import { NonceSource } from '../src/xds/nonce.js';
import { SharedResponses } from '../src/xds/shared-responses.js';
import { SotwStream } from '../src/xds/sotw-stream.js';
import { DeltaStream } from '../src/xds/delta-stream.js';
import { fetchSecrets } from '../src/xds/fetch.js';
import { Subscription } from '../src/xds/subscription.js';
import type { StreamContext } from '../src/xds/stream-core.js';
import type { DeltaRequest, SotwRequest, StreamFailure, StreamSink } from '../src/xds/types.js';
import { createLogger, type Logger } from '../src/core/logger.js';
import { upstreamType } from './helpers/upstream-protos.js';
import { decodeAs } from '../src/api/proto-root.js';
import type { DiscoveryResponse__Output } from '../src/api/generated/envoy/service/discovery/v3/DiscoveryResponse.js';
import type { DeltaDiscoveryResponse__Output } from '../src/api/generated/envoy/service/discovery/v3/DeltaDiscoveryResponse.js';
import type { Secret__Output } from '../src/api/generated/envoy/extensions/transport_sockets/tls/v3/Secret.js';
import { bundleValue, rootCa, tlsValue } from './helpers/identities.js';
import type { CertificateAuthority } from '../src/x509/issue.js';

/**
 * The SDS state machines, rule by rule, in the style of SPIRE's sdsv3 handler_test.go: each row is
 * a sequence of requests and store changes, each step lists the exact responses the stream must
 * write (secret names, version_info / per-resource versions, removed names), or none, or the
 * status it must end with. The store is the real SecretStore; the transport is FakeSink (a test
 * double recording writes, able to refuse them). Everything is synchronous inside the state
 * machines, so steps need no waiting; between steps the runner yields one event-loop turn (as
 * separate network reads would) so shared encodings expire as they do in the server.
 */

const TYPE_URL = V3.secretTypeUrl;
const FRONT = 'spiffe://example.org/front';
const BACK = 'spiffe://example.org/back';
const TD = 'spiffe://example.org';
const LATE = 'spiffe://example.org/late';
const GONE = 'spiffe://example.org/gone';

/** Test double for the gRPC transport: records writes and failures; can refuse writes (back-pressure). */
class FakeSink implements StreamSink {
  readonly writes: Buffer[] = [];
  readonly failures: StreamFailure[] = [];
  accepting = true;
  private drains: Array<() => void> = [];

  write(message: Buffer): boolean {
    this.writes.push(message);
    return this.accepting;
  }

  onDrain(callback: () => void): void {
    this.drains.push(callback);
  }

  fail(status: StreamFailure): void {
    this.failures.push(status);
  }

  drain(): void {
    this.accepting = true;
    const callbacks = this.drains;
    this.drains = [];
    for (const cb of callbacks) cb();
  }
}

/** Test double for a per-caller catalog view: the real store, with some names denied. */
class DenyingCatalog implements SecretCatalog {
  constructor(
    private readonly store: SecretStore,
    private readonly denied: ReadonlySet<string>,
  ) {}
  resolve(name: string): Resolution {
    if (this.denied.has(name)) return { kind: 'denied', reason: `caller uid 1000 is not entitled to ${name}` };
    return this.store.resolve(name);
  }
  names(): string[] {
    return this.store.names().filter((n) => !this.denied.has(n));
  }
  watch(name: string, listener: NameListener): () => void {
    return this.store.watch(name, listener);
  }
  watchAll(listener: NameListener): () => void {
    return this.store.watchAll(listener);
  }
}

const decodeSotw = (b: Buffer): DiscoveryResponse__Output => decodeAs(upstreamType('envoy.service.discovery.v3.DiscoveryResponse'), b);
const decodeDelta = (b: Buffer): DeltaDiscoveryResponse__Output => decodeAs(upstreamType('envoy.service.discovery.v3.DeltaDiscoveryResponse'), b);
const secretName = (value: Buffer): string => decodeAs<Secret__Output>(upstreamType('envoy.extensions.transport_sockets.tls.v3.Secret'), value).name;

/** `last` = the nonce of the stream's last response; `stale` = the one before; `foreign` = from another stream. */
type NonceRef = 'none' | 'last' | 'stale' | 'foreign';

type Step = (
  | { sotw: { names?: string[]; nonce?: NonceRef; nack?: string; typeUrl?: string } }
  | { delta: { subscribe?: string[]; unsubscribe?: string[]; initial?: Record<string, 'current' | 'old'>; nonce?: NonceRef; nack?: string } }
  | { rotate: string }
  | { remove: string }
  | { declare: string }
  | { block: true }
  | { drain: true }
  /** Registers a store listener on this name that throws (another stream's bug). */
  | { throwingListener: string }
) & {
  /** Responses written by this step, in order; omitted = none. SotW: sorted secret names. */
  sent?: Array<string[] | { add: string[]; removed?: string[] }>;
  /** The stream must end with this status during this step (else: never). */
  fails?: { code: number; contains: string };
  /** store.watcherCount after the step, minus the count before the stream opened. */
  watches?: number;
};

interface Row {
  name: string;
  kind: 'sotw' | 'delta';
  steps: Step[];
  /** Names the caller's catalog view denies (DenyingCatalog). */
  deny?: string[];
  /** Use SharedResponses (the server's one-secret fast path); default true. */
  shared?: boolean;
}

let ca: CertificateAuthority;
const pool = new Map<string, SecretValue[]>();
/** The value each row's store starts with (the same in every row: stores are per row). */
const initialValue = new Map<string, SecretValue>();

/** A fresh value for `name` (certificates issued ahead, so steps stay synchronous). */
function nextValue(name: string): SecretValue {
  const values = pool.get(name);
  const value = values?.shift();
  if (!value) throw new Error(`test pool for ${name} is exhausted`);
  return value;
}

/** Values issued per name: one initial value plus at least the rotations the rows make (counted by hand, with room). */
const POOL_SIZE: Record<string, number> = { [FRONT]: 30, [BACK]: 16, [LATE]: 12, [GONE]: 4 };

beforeAll(async () => {
  ca = await rootCa('example.org');
  for (const name of [FRONT, BACK, LATE, GONE]) {
    const values = await Promise.all(Array.from({ length: POOL_SIZE[name]! }, async () => (await tlsValue(ca, name)).value));
    initialValue.set(name, values.shift()!);
    pool.set(name, values);
  }
  const cas = await Promise.all(Array.from({ length: 4 }, () => rootCa('example.org')));
  initialValue.set(TD, bundleValue('example.org', ca));
  pool.set(TD, cas.map((extra) => bundleValue('example.org', ca, extra)));
}, 120_000);

function freshStore(log?: Logger): SecretStore {
  const store = new SecretStore(log ? { log } : {});
  store.declare(FRONT, 'tls-certificate');
  store.declare(BACK, 'tls-certificate');
  store.declare(TD, 'trust-bundle');
  for (const name of [FRONT, BACK, TD]) store.publish(name, initialValue.get(name)!);
  store.markSettled();
  return store;
}

function version(store: SecretStore, name: string): string {
  const r = store.resolve(name);
  if (r.kind !== 'ready') throw new Error(`${name} is not ready`);
  return r.entry.version;
}

const ROWS: Row[] = [
  // ---- SotW: first request, ACK, wildcard ----
  {
    name: 'SotW: the first request is answered with exactly the named secret; its ACK gets nothing',
    kind: 'sotw',
    steps: [
      { sotw: { names: [FRONT] }, sent: [[FRONT]], watches: 1 },
      { sotw: { names: [FRONT], nonce: 'last' } },
      { rotate: FRONT, sent: [[FRONT]] },
      { rotate: BACK },
    ],
  },
  {
    name: 'SotW: legacy wildcard = first request with no names: every secret, kept by empty ACKs, new secrets pushed',
    kind: 'sotw',
    steps: [
      { sotw: { names: [] }, sent: [[BACK, FRONT, TD]] },
      { sotw: { names: [], nonce: 'last' } },
      { declare: LATE },
      { rotate: LATE, sent: [[BACK, FRONT, LATE, TD]] },
    ],
  },
  {
    name: 'SotW: explicit * is a wildcard; an empty list after it holds nothing',
    kind: 'sotw',
    steps: [
      { sotw: { names: ['*'] }, sent: [[BACK, FRONT, TD]] },
      { sotw: { names: [], nonce: 'last' }, watches: 0 },
      { rotate: FRONT },
    ],
  },
  {
    name: 'SotW (fault 1): an empty-names ACK after a named request holds nothing: no response, nothing on later rotations, stream open',
    kind: 'sotw',
    steps: [
      { sotw: { names: [FRONT] }, sent: [[FRONT]] },
      { sotw: { names: [], nonce: 'last' }, watches: 0 },
      { rotate: FRONT },
      { rotate: BACK },
      { rotate: TD },
      { declare: LATE },
      { rotate: LATE },
      { sotw: { names: [], nonce: 'last' } },
      // Named again later: answered with exactly that name.
      { sotw: { names: [BACK], nonce: 'last' }, sent: [[BACK]], watches: 1 },
    ],
  },
  {
    name: 'SotW: a legacy wildcard ends once names are requested; an empty list after that holds nothing',
    kind: 'sotw',
    steps: [
      { sotw: { names: [] }, sent: [[BACK, FRONT, TD]] },
      { sotw: { names: [FRONT], nonce: 'last' }, sent: [[FRONT]], watches: 1 },
      { rotate: BACK },
      { sotw: { names: [], nonce: 'last' }, watches: 0 },
      { rotate: FRONT },
      { rotate: BACK },
    ],
  },
  // ---- SotW: nonces ----
  {
    name: 'SotW (fault 2): a first request carrying a nonce from an earlier stream is answered',
    kind: 'sotw',
    steps: [{ sotw: { names: [FRONT], nonce: 'foreign' }, sent: [[FRONT]] }],
  },
  {
    name: 'SotW: while nothing has been sent (secret pending), no nonce is stale; answered once published',
    kind: 'sotw',
    steps: [
      { declare: LATE },
      { sotw: { names: [LATE] } },
      { sotw: { names: [LATE], nonce: 'foreign' } },
      { rotate: LATE, sent: [[LATE]] },
    ],
  },
  {
    name: 'SotW: a stale nonce is ignored, names included; the current nonce with new names is answered',
    kind: 'sotw',
    steps: [
      { sotw: { names: [FRONT] }, sent: [[FRONT]] },
      { rotate: FRONT, sent: [[FRONT]] },
      { sotw: { names: [TD], nonce: 'stale' } },
      { sotw: { names: [], nonce: 'stale' }, watches: 1 },
      { sotw: { names: [TD], nonce: 'last' }, sent: [[TD]] },
    ],
  },
  // ---- SotW: NACKs and name changes ----
  {
    name: 'SotW: a NACK with the same names is not answered; the next real change is',
    kind: 'sotw',
    steps: [
      { sotw: { names: [FRONT] }, sent: [[FRONT]] },
      { sotw: { names: [FRONT], nonce: 'last', nack: 'bad key' } },
      { rotate: FRONT, sent: [[FRONT]] },
    ],
  },
  {
    name: 'SotW (fault 4): a NACK that changes the names applies the change',
    kind: 'sotw',
    steps: [
      { sotw: { names: [FRONT] }, sent: [[FRONT]] },
      { sotw: { names: [FRONT, TD], nonce: 'last', nack: 'bad key' }, sent: [[FRONT, TD]], watches: 2 },
      { sotw: { names: [TD], nonce: 'last', nack: 'still bad' }, sent: [[TD]], watches: 1 },
      { rotate: FRONT },
    ],
  },
  {
    name: 'SotW: an ACK that changes the names is answered with exactly the new set',
    kind: 'sotw',
    steps: [
      { sotw: { names: [FRONT] }, sent: [[FRONT]] },
      { sotw: { names: [FRONT, BACK], nonce: 'last' }, sent: [[BACK, FRONT]] },
      { sotw: { names: [BACK, FRONT], nonce: 'last' } },
      { rotate: BACK, sent: [[BACK, FRONT]] },
    ],
  },
  // ---- SotW: what is never sent ----
  {
    name: 'SotW: a configured secret not available yet gets nothing (never zero resources) until published',
    kind: 'sotw',
    steps: [
      { declare: LATE },
      { sotw: { names: [LATE] } },
      { rotate: LATE, sent: [[LATE]] },
    ],
  },
  {
    name: 'SotW: an unknown name ends the stream with INVALID_ARGUMENT naming it',
    kind: 'sotw',
    steps: [{ sotw: { names: [FRONT, 'spiffe://example.org/nobody'] }, fails: { code: grpc.status.INVALID_ARGUMENT, contains: 'SDS_ERR_UNKNOWN_SECRET: secret "spiffe://example.org/nobody"' }, watches: 0 }],
  },
  {
    name: 'SotW: a name longer than 2048 characters ends the stream with INVALID_ARGUMENT, even on an ACK',
    kind: 'sotw',
    steps: [
      { sotw: { names: [FRONT] }, sent: [[FRONT]] },
      { sotw: { names: [FRONT, 'x'.repeat(2049)], nonce: 'last' }, fails: { code: grpc.status.INVALID_ARGUMENT, contains: 'SDS_ERR_BAD_REQUEST: resource name of 2049 characters' }, watches: 0 },
    ],
  },
  {
    name: 'SotW: a secret removed from the store ends the stream that names it',
    kind: 'sotw',
    steps: [
      { sotw: { names: [FRONT] }, sent: [[FRONT]] },
      { remove: FRONT, fails: { code: grpc.status.INVALID_ARGUMENT, contains: FRONT } },
    ],
  },
  {
    name: 'SotW: a denied name ends the stream with PERMISSION_DENIED (DenyingCatalog test double)',
    kind: 'sotw',
    deny: [BACK],
    steps: [
      { sotw: { names: [FRONT] }, sent: [[FRONT]] },
      { sotw: { names: [FRONT, BACK], nonce: 'last' }, fails: { code: grpc.status.PERMISSION_DENIED, contains: 'SDS_ERR_PERMISSION_DENIED: caller uid 1000 is not entitled to' }, watches: 0 },
    ],
  },
  {
    name: 'SotW: a wildcard never includes a denied secret (DenyingCatalog test double)',
    kind: 'sotw',
    deny: [BACK],
    steps: [
      { sotw: { names: [] }, sent: [[FRONT, TD]] },
      { rotate: BACK },
    ],
  },
  {
    name: 'SotW: another resource type ends the stream with INVALID_ARGUMENT',
    kind: 'sotw',
    steps: [{ sotw: { names: [FRONT], typeUrl: 'type.googleapis.com/envoy.config.cluster.v3.Cluster' }, fails: { code: grpc.status.INVALID_ARGUMENT, contains: 'SDS_ERR_WRONG_TYPE_URL' } }],
  },
  {
    name: 'SotW back-pressure: while the sink refuses writes, rotations wait; on drain only the newest is written',
    kind: 'sotw',
    steps: [
      { sotw: { names: [FRONT] }, sent: [[FRONT]] },
      { block: true },
      // The write that hits the full buffer still goes out; everything after it waits.
      { rotate: FRONT, sent: [[FRONT]] },
      { rotate: FRONT },
      { rotate: FRONT },
      { drain: true, sent: [[FRONT]] },
      { drain: true },
    ],
  },
  {
    name: 'SotW back-pressure without shared encodings (multi-name path): only the newest state on drain',
    kind: 'sotw',
    shared: false,
    steps: [
      { sotw: { names: [FRONT, BACK] }, sent: [[BACK, FRONT]] },
      { block: true },
      { rotate: FRONT, sent: [[BACK, FRONT]] },
      { rotate: BACK },
      { rotate: FRONT },
      { drain: true, sent: [[BACK, FRONT]] },
    ],
  },

  {
    name: 'SotW (fault 4): a store listener that throws, registered before this stream, does not stop its push',
    kind: 'sotw',
    steps: [
      { throwingListener: FRONT },
      { sotw: { names: [FRONT] }, sent: [[FRONT]] },
      { sotw: { names: [FRONT], nonce: 'last' } },
      { rotate: FRONT, sent: [[FRONT]] },
    ],
  },

  // ---- Delta ----
  {
    name: 'Delta: subscribed secrets with per-resource versions; the ACK gets nothing; a rotation sends only that secret',
    kind: 'delta',
    steps: [
      { delta: { subscribe: [FRONT, TD] }, sent: [{ add: [FRONT, TD] }], watches: 2 },
      { delta: { nonce: 'last' } },
      { rotate: FRONT, sent: [{ add: [FRONT] }] },
      { rotate: BACK },
    ],
  },
  {
    name: 'Delta: a reconnect with initial_resource_versions gets only what changed',
    kind: 'delta',
    steps: [{ delta: { subscribe: [FRONT, TD], initial: { FRONT: 'old', TD: 'current' } }, sent: [{ add: [FRONT] }] }],
  },
  {
    name: 'Delta (for fault 5, Envoy back-off): a reconnect where the client holds every current version gets one empty response, then nothing until a change',
    kind: 'delta',
    steps: [
      { delta: { subscribe: [FRONT, TD], initial: { FRONT: 'current', TD: 'current' } }, sent: [{ add: [], removed: [] }] },
      { delta: { nonce: 'last' } },
      { rotate: TD, sent: [{ add: [TD] }] },
    ],
  },
  {
    name: 'Delta: a first request naming only a pending secret gets nothing until it is published',
    kind: 'delta',
    steps: [
      { declare: LATE },
      { delta: { subscribe: [LATE] } },
      { delta: { subscribe: [LATE], nonce: 'foreign' } },
      { rotate: LATE, sent: [{ add: [LATE] }] },
    ],
  },
  {
    name: 'Delta (fault 3): [front, gone] with initial versions: removed [gone], then the ACK and a NACK keep the stream open',
    kind: 'delta',
    steps: [
      { delta: { subscribe: [FRONT, GONE], initial: { FRONT: 'current', GONE: 'old' } }, sent: [{ add: [], removed: [GONE] }] },
      { delta: { nonce: 'last' } },
      { delta: { nonce: 'last', nack: 'whatever' } },
      { rotate: FRONT, sent: [{ add: [FRONT] }] },
      { delta: { nonce: 'last' } },
      // Configured later: the still-subscribed name is sent.
      { declare: GONE },
      { rotate: GONE, sent: [{ add: [GONE] }] },
    ],
  },
  {
    name: 'Delta: an unknown name is answered with removed_resources once, the stream stays open and serves later subscriptions',
    kind: 'delta',
    steps: [
      { delta: { subscribe: ['nope'] }, sent: [{ add: [], removed: ['nope'] }] },
      { delta: { nonce: 'last' } },
      { delta: { nonce: 'last', subscribe: [FRONT] }, sent: [{ add: [FRONT] }] },
      { delta: { nonce: 'last', subscribe: ['nope'] }, sent: [{ add: [], removed: ['nope'] }] },
    ],
  },
  {
    name: 'Delta: subscribing a name longer than 2048 characters ends the stream with INVALID_ARGUMENT',
    kind: 'delta',
    steps: [
      { delta: { subscribe: [FRONT] }, sent: [{ add: [FRONT] }] },
      { delta: { nonce: 'last', subscribe: ['x'.repeat(2049)] }, fails: { code: grpc.status.INVALID_ARGUMENT, contains: 'SDS_ERR_BAD_REQUEST' }, watches: 0 },
    ],
  },
  {
    name: 'Delta: a secret removed from the store is sent as removed_resources; the stream stays open',
    kind: 'delta',
    steps: [
      { delta: { subscribe: [FRONT, TD] }, sent: [{ add: [FRONT, TD] }] },
      { delta: { nonce: 'last' } },
      { remove: TD, sent: [{ add: [], removed: [TD] }] },
      { delta: { nonce: 'last' } },
      { rotate: FRONT, sent: [{ add: [FRONT] }] },
    ],
  },
  {
    name: 'Delta: unsubscribe stops pushes; unsubscribing every name holds nothing',
    kind: 'delta',
    steps: [
      { delta: { subscribe: [FRONT, BACK] }, sent: [{ add: [BACK, FRONT] }] },
      { delta: { nonce: 'last', unsubscribe: [FRONT] }, watches: 1 },
      { rotate: FRONT },
      { rotate: BACK, sent: [{ add: [BACK] }] },
      { delta: { nonce: 'last', unsubscribe: [BACK] }, watches: 0 },
      { rotate: BACK },
      { declare: LATE },
      { rotate: LATE },
    ],
  },
  {
    name: 'Delta: a NACK that also subscribes applies the subscription',
    kind: 'delta',
    steps: [
      { delta: { subscribe: [FRONT] }, sent: [{ add: [FRONT] }] },
      { delta: { nonce: 'last', nack: 'bad key', subscribe: [TD] }, sent: [{ add: [TD] }] },
    ],
  },
  {
    name: 'Delta: legacy wildcard on the first request only; a named first request never becomes a wildcard',
    kind: 'delta',
    steps: [
      { delta: { subscribe: [FRONT] }, sent: [{ add: [FRONT] }] },
      { delta: { nonce: 'last' } },
      { declare: LATE },
      { rotate: LATE },
      { rotate: BACK },
    ],
  },
  {
    name: 'Delta: legacy wildcard (first request names nothing): every secret, new ones pushed; unsubscribing * ends it',
    kind: 'delta',
    steps: [
      { delta: {}, sent: [{ add: [BACK, FRONT, TD] }] },
      { delta: { nonce: 'last' } },
      { declare: LATE },
      { rotate: LATE, sent: [{ add: [LATE] }] },
      { delta: { nonce: 'last', unsubscribe: ['*'] }, watches: 0 },
      { rotate: FRONT },
    ],
  },
  {
    name: 'Delta: explicit * subscription',
    kind: 'delta',
    steps: [
      { delta: { subscribe: [FRONT] }, sent: [{ add: [FRONT] }] },
      { delta: { nonce: 'last', subscribe: ['*'] }, sent: [{ add: [BACK, TD] }] },
    ],
  },
  {
    name: 'Delta: a first request with a nonce from an earlier stream is answered',
    kind: 'delta',
    steps: [{ delta: { subscribe: [FRONT], nonce: 'foreign' }, sent: [{ add: [FRONT] }] }],
  },
  {
    name: 'Delta: a denied name ends the stream with PERMISSION_DENIED (DenyingCatalog test double)',
    kind: 'delta',
    deny: [BACK],
    steps: [
      { delta: { subscribe: [FRONT] }, sent: [{ add: [FRONT] }] },
      { delta: { nonce: 'last', subscribe: [BACK] }, fails: { code: grpc.status.PERMISSION_DENIED, contains: 'SDS_ERR_PERMISSION_DENIED' }, watches: 0 },
    ],
  },
  {
    name: 'Delta: a store listener that throws, registered before this stream, does not stop its push',
    kind: 'delta',
    steps: [
      { throwingListener: FRONT },
      { delta: { subscribe: [FRONT] }, sent: [{ add: [FRONT] }] },
      { rotate: FRONT, sent: [{ add: [FRONT] }] },
    ],
  },
  {
    name: 'Delta back-pressure: while the sink refuses writes, changes wait; on drain one response with the newest versions',
    kind: 'delta',
    steps: [
      { delta: { subscribe: [FRONT, BACK] }, sent: [{ add: [BACK, FRONT] }] },
      { block: true },
      { rotate: FRONT, sent: [{ add: [FRONT] }] },
      { rotate: FRONT },
      { rotate: BACK },
      { drain: true, sent: [{ add: [BACK, FRONT] }] },
    ],
  },
];

const FOREIGN_NONCE = 'deadbeef-1z';
const nextTurn = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

async function runRow(row: Row): Promise<void> {
  const store = freshStore(createLogger({ write: () => {} }));
  const catalog: SecretCatalog = row.deny ? new DenyingCatalog(store, new Set(row.deny)) : store;
  const sink = new FakeSink();
  const encoder = new SecretEncoder(V3);
  const nonces = new NonceSource();
  const ctx: StreamContext = {
    streamId: 1,
    catalog,
    encoder,
    sink,
    nonces,
    log: createLogger({ level: 'debug', write: () => {} }),
    hooks: {},
    bundleFormat: () => 'spiffe',
    ...(row.shared === false ? {} : { responses: new SharedResponses(encoder, nonces) }),
  };
  const baseWatches = store.watcherCount;
  const stream = row.kind === 'sotw' ? new SotwStream(ctx) : new DeltaStream(ctx);
  const nonceHistory: string[] = [];
  const poisons: Array<() => void> = [];
  let seen = 0;

  const nonceOf = (ref: NonceRef | undefined): string => {
    if (ref === undefined || ref === 'none') return '';
    if (ref === 'foreign') return FOREIGN_NONCE;
    const n = ref === 'last' ? nonceHistory.at(-1) : nonceHistory.at(-2);
    if (n === undefined) throw new Error(`row "${row.name}": no ${ref} nonce yet`);
    return n;
  };

  for (const [i, step] of row.steps.entries()) {
    const where = `row "${row.name}", step ${i + 1}`;
    if ('sotw' in step) {
      const r = step.sotw;
      const req: SotwRequest = { versionInfo: '', resourceNames: r.names ?? [], typeUrl: r.typeUrl ?? TYPE_URL, responseNonce: nonceOf(r.nonce) };
      if (i === 0) req.node = { id: 'sidecar~10.0.0.1~front', cluster: 'front', userAgentName: 'envoy', userAgentVersion: '1.40.0', metadata: {} };
      if (r.nack) req.errorDetail = { code: 13, message: r.nack };
      (stream as SotwStream).onRequest(req);
    } else if ('delta' in step) {
      const r = step.delta;
      const initial: Record<string, string> = {};
      for (const [key, which] of Object.entries(r.initial ?? {})) {
        const name = { FRONT, BACK, TD, GONE, LATE }[key as 'FRONT'] ?? key;
        initial[name] = which === 'current' ? version(store, name) : 'old-version';
      }
      const req: DeltaRequest = { typeUrl: TYPE_URL, subscribe: r.subscribe ?? [], unsubscribe: r.unsubscribe ?? [], initialResourceVersions: initial, responseNonce: nonceOf(r.nonce) };
      if (r.nack) req.errorDetail = { code: 13, message: r.nack };
      (stream as DeltaStream).onRequest(req);
    } else if ('rotate' in step) {
      store.publish(step.rotate, nextValue(step.rotate));
    } else if ('remove' in step) {
      store.remove(step.remove);
    } else if ('declare' in step) {
      store.declare(step.declare, step.declare === TD ? 'trust-bundle' : 'tls-certificate');
    } else if ('throwingListener' in step) {
      const unwatch = store.watch(step.throwingListener, () => {
        throw new Error('listener bug');
      });
      poisons.push(unwatch);
    } else if ('block' in step) {
      sink.accepting = false;
    } else if ('drain' in step) {
      sink.drain();
    }

    const written = sink.writes.slice(seen);
    seen = sink.writes.length;
    const expected = step.sent ?? [];
    expect(written.length, `${where}: number of responses`).toBe(expected.length);
    written.forEach((bytes, k) => {
      const want = expected[k]!;
      if (row.kind === 'sotw') {
        const res = decodeSotw(bytes);
        const names = res.resources.map((r) => secretName(r.value)).sort();
        expect(names, `${where}: response ${k + 1} secrets`).toEqual([...(want as string[])].sort());
        if (names.length === 1) expect(res.version_info, `${where}: version_info`).toBe(version(store, names[0]!));
        else expect(res.version_info, `${where}: version_info`).toMatch(/^[0-9a-f]{16}$/);
        nonceHistory.push(res.nonce);
      } else {
        const res = decodeDelta(bytes);
        const w = want as { add: string[]; removed?: string[] };
        expect(res.resources.map((r) => r.name).sort(), `${where}: response ${k + 1} resources`).toEqual([...w.add].sort());
        for (const r of res.resources) {
          expect(r.version, `${where}: version of ${r.name}`).toBe(version(store, r.name));
          expect(secretName(r.resource!.value)).toBe(r.name);
        }
        expect(res.removed_resources, `${where}: removed_resources`).toEqual(w.removed ?? []);
        nonceHistory.push(res.nonce);
      }
    });
    if (step.fails) {
      expect(sink.failures, `${where}: failure`).toHaveLength(1);
      expect(sink.failures[0]!.code, `${where}: status code`).toBe(step.fails.code);
      expect(sink.failures[0]!.message, `${where}: status message`).toContain(step.fails.contains);
    } else {
      expect(sink.failures, `${where}: no failure`).toEqual([]);
    }
    if (step.watches !== undefined) expect(store.watcherCount - baseWatches, `${where}: store watches`).toBe(step.watches);
    await nextTurn();
  }
  // Nonces are never repeated on a stream, and every response has one.
  expect(new Set(nonceHistory).size).toBe(nonceHistory.length);
  for (const n of nonceHistory) expect(n).not.toBe('');
  stream.close();
  for (const stop of poisons) stop();
  expect(store.watcherCount).toBe(baseWatches);
}

describe('xDS subscription rules (table: requests and store changes in, exact responses out)', () => {
  it.each(ROWS.map((row) => [row.name, row] as const))('%s', async (_name, row) => {
    await runRow(row);
  });
});

/** A stream on a real store with a memory logger and a hand-driven clock. */
function loggedStream(kind: 'sotw' | 'delta', clock: { now: number }) {
  const store = freshStore();
  const lines: Array<Record<string, unknown>> = [];
  const sink = new FakeSink();
  const encoder = new SecretEncoder(V3);
  const nonces = new NonceSource();
  const ctx: StreamContext = {
    streamId: 7,
    catalog: store,
    encoder,
    sink,
    nonces,
    log: createLogger({ level: 'debug', write: (l) => lines.push(JSON.parse(l) as Record<string, unknown>) }),
    hooks: {},
    bundleFormat: () => 'spiffe',
    now: () => clock.now,
    nackLogIntervalMs: 10_000,
  };
  const stream = kind === 'sotw' ? new SotwStream(ctx) : new DeltaStream(ctx);
  return { store, sink, stream, lines };
}

describe('NACK logging is rate-limited per stream', () => {
  it.each(['sotw', 'delta'] as const)('%s: 5,000 NACKs write one line, then one per interval with the suppressed count, and a summary at close', (kind) => {
    const clock = { now: 1_000_000 };
    const { sink, stream, lines } = loggedStream(kind, clock);
    const nackLines = () => lines.filter((l) => String(l.msg).includes('NACK'));
    if (kind === 'sotw') (stream as SotwStream).onRequest({ versionInfo: '', resourceNames: [FRONT], typeUrl: TYPE_URL, responseNonce: '' });
    else (stream as DeltaStream).onRequest({ typeUrl: TYPE_URL, subscribe: [FRONT], unsubscribe: [], initialResourceVersions: {}, responseNonce: '' });
    const nonce = kind === 'sotw' ? decodeSotw(sink.writes[0]!).nonce : decodeDelta(sink.writes[0]!).nonce;
    const nack = (): void => {
      if (kind === 'sotw') (stream as SotwStream).onRequest({ versionInfo: '', resourceNames: [FRONT], typeUrl: TYPE_URL, responseNonce: nonce, errorDetail: { code: 13, message: 'bad key' } });
      else (stream as DeltaStream).onRequest({ typeUrl: TYPE_URL, subscribe: [], unsubscribe: [], initialResourceVersions: {}, responseNonce: nonce, errorDetail: { code: 13, message: 'bad key' } });
    };
    for (let i = 0; i < 5000; i++) nack();
    expect(nackLines()).toHaveLength(1);
    expect(nackLines()[0]).toMatchObject({ secrets: [FRONT], reason: 'bad key' });
    expect(nackLines()[0]!.suppressed).toBeUndefined();
    clock.now += 9_999;
    nack();
    expect(nackLines()).toHaveLength(1);
    clock.now += 1;
    nack();
    expect(nackLines()).toHaveLength(2);
    expect(nackLines()[1]!.suppressed).toBe(5000);
    nack();
    nack();
    stream.close();
    expect(nackLines()).toHaveLength(3);
    expect(nackLines()[2]!.suppressed).toBe(2);
    expect(sink.writes).toHaveLength(1);
    expect(sink.failures).toEqual([]);
  });

  it('bounds what a NACK line echoes (reason, names, nonce)', () => {
    const clock = { now: 0 };
    const { sink, stream, lines } = loggedStream('sotw', clock);
    (stream as SotwStream).onRequest({ versionInfo: '', resourceNames: [FRONT], typeUrl: TYPE_URL, responseNonce: '' });
    const nonce = decodeSotw(sink.writes[0]!).nonce;
    (stream as SotwStream).onRequest({ versionInfo: '', resourceNames: [FRONT], typeUrl: TYPE_URL, responseNonce: nonce, errorDetail: { code: 13, message: 'x'.repeat(1 << 20) } });
    const line = lines.find((l) => String(l.msg).includes('NACK'))!;
    expect(JSON.stringify(line).length).toBeLessThan(2048);
    expect(String(line.reason)).toMatch(/more chars\)$/);
  });
});

describe('FetchSecrets rules', () => {
  const deps = (catalog: SecretCatalog) => {
    const encoder = new SecretEncoder(V3);
    return { catalog, encoder, nonces: new NonceSource(), format: 'spiffe' as const };
  };

  it('a denied name is PERMISSION_DENIED with the reason (DenyingCatalog test double); a wildcard leaves it out', () => {
    const store = freshStore();
    const catalog = new DenyingCatalog(store, new Set([BACK]));
    const denied = fetchSecrets({ versionInfo: '', resourceNames: [FRONT, BACK], typeUrl: TYPE_URL, responseNonce: '' }, deps(catalog));
    expect(denied).toEqual({ ok: false, failure: { code: grpc.status.PERMISSION_DENIED, message: `SDS_ERR_PERMISSION_DENIED: caller uid 1000 is not entitled to ${BACK}` } });
    const all = fetchSecrets({ versionInfo: '', resourceNames: [], typeUrl: TYPE_URL, responseNonce: '' }, deps(catalog));
    expect(all.ok && all.names.sort()).toEqual([FRONT, TD].sort());
    const star = fetchSecrets({ versionInfo: '', resourceNames: ['*'], typeUrl: TYPE_URL, responseNonce: '' }, deps(catalog));
    expect(star.ok && star.names.sort()).toEqual([FRONT, TD].sort());
  });

  it('a name longer than 2048 characters (the SPIFFE ID limit) is INVALID_ARGUMENT SDS_ERR_BAD_REQUEST', () => {
    const result = fetchSecrets({ versionInfo: '', resourceNames: [FRONT, 'x'.repeat(2049)], typeUrl: TYPE_URL, responseNonce: '' }, deps(freshStore()));
    expect(result).toEqual({ ok: false, failure: { code: grpc.status.INVALID_ARGUMENT, message: `SDS_ERR_BAD_REQUEST: resource name of 2049 characters is longer than 2048 (the SPIFFE ID limit): "${'x'.repeat(100)}...(1949 more chars)"` } });
    // Exactly 2048 is a name like any other (here: not configured).
    expect(fetchSecrets({ versionInfo: '', resourceNames: [`spiffe://example.org/${'x'.repeat(2027)}`], typeUrl: TYPE_URL, responseNonce: '' }, deps(freshStore()))).toMatchObject({
      ok: false,
      failure: { code: grpc.status.INVALID_ARGUMENT, message: expect.stringContaining('SDS_ERR_UNKNOWN_SECRET') },
    });
  });

  it('unknown names: at most three named, each cut to 100 characters, plus the count', () => {
    const store = freshStore();
    const names = [`spiffe://example.org/${'a'.repeat(2000)}`, ...Array.from({ length: 9999 }, (_, i) => `spiffe://example.org/n${i}`)];
    const result = fetchSecrets({ versionInfo: '', resourceNames: names, typeUrl: TYPE_URL, responseNonce: '' }, deps(store));
    expect(result.ok).toBe(false);
    if (result.ok) return;
    expect(result.failure.code).toBe(grpc.status.INVALID_ARGUMENT);
    expect(result.failure.message.length).toBeLessThan(600);
    expect(result.failure.message).toMatch(/^SDS_ERR_UNKNOWN_SECRET: secrets "spiffe:\/\/example\.org\/a{79}\.\.\.\(1921 more chars\)", "spiffe:\/\/example\.org\/n0", "spiffe:\/\/example\.org\/n1" and 9997 more \(10000 names\) are not configured on this server$/);
  });
});

describe('Subscription (the rules both protocols share)', () => {
  type Op = { sotw: string[] } | { delta: [string[], string[]] };
  const cases: Array<{ name: string; ops: Op[]; wildcard: boolean; names: string[]; changed: boolean[] }> = [
    { name: 'SotW legacy wildcard: first empty request', ops: [{ sotw: [] }, { sotw: [] }], wildcard: true, names: [], changed: [true, false] },
    { name: 'SotW: empty after named is nothing, never wildcard', ops: [{ sotw: ['a'] }, { sotw: [] }, { sotw: [] }], wildcard: false, names: [], changed: [true, true, false] },
    { name: 'SotW: legacy wildcard then named then empty is nothing', ops: [{ sotw: [] }, { sotw: ['a'] }, { sotw: [] }], wildcard: false, names: [], changed: [true, true, true] },
    { name: 'SotW: explicit * with a name', ops: [{ sotw: ['*', 'a'] }], wildcard: true, names: ['a'], changed: [true] },
    { name: 'SotW: same set in another order or with duplicates is no change', ops: [{ sotw: ['a', 'b'] }, { sotw: ['b', 'a'] }, { sotw: ['a', 'a', 'b'] }], wildcard: false, names: ['a', 'b'], changed: [true, false, false] },
    { name: 'SotW: [a, a] after [a, b] drops b', ops: [{ sotw: ['a', 'b'] }, { sotw: ['a', 'a'] }], wildcard: false, names: ['a'], changed: [true, true] },
    { name: 'Delta legacy wildcard: first request subscribes nothing', ops: [{ delta: [[], []] }, { delta: [[], []] }], wildcard: true, names: [], changed: [true, false] },
    { name: 'Delta: named first request, then an empty one, is never wildcard', ops: [{ delta: [['a'], []] }, { delta: [[], []] }], wildcard: false, names: ['a'], changed: [true, false] },
    { name: 'Delta: legacy wildcard stays wildcard when names are added, until * is unsubscribed', ops: [{ delta: [[], []] }, { delta: [['a'], []] }, { delta: [[], ['*']] }], wildcard: false, names: ['a'], changed: [true, true, true] },
    { name: 'Delta: unsubscribing every name leaves nothing', ops: [{ delta: [['a', 'b'], []] }, { delta: [[], ['a', 'b']] }, { delta: [[], ['c']] }], wildcard: false, names: [], changed: [true, true, false] },
  ];
  it.each(cases.map((c) => [c.name, c] as const))('%s', (_n, c) => {
    const sub = new Subscription();
    const changed = c.ops.map((op) => ('sotw' in op ? sub.setSotw(op.sotw) : sub.updateDelta(op.delta[0], op.delta[1])) !== undefined);
    expect(changed).toEqual(c.changed);
    expect(sub.wildcard).toBe(c.wildcard);
    expect([...sub.names].sort()).toEqual(c.names);
    expect(sub.isEmpty).toBe(!c.wildcard && c.names.length === 0);
  });
});
