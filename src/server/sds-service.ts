import * as grpc from '@grpc/grpc-js';
import type { SecretCatalog } from '../secrets/store.js';
import type { LogFields, Logger } from '../core/logger.js';
import { ErrorCode, SdsError } from '../core/errors.js';
import type { ApiVersion } from '../api/api-version.js';
import { SecretEncoder } from '../api/secret-encoder.js';
import { RequestDecoder } from '../api/request-decoder.js';
import { SotwStream } from '../xds/sotw-stream.js';
import { DeltaStream } from '../xds/delta-stream.js';
import { fetchSecrets } from '../xds/fetch.js';
import { boundText } from '../xds/bounded.js';
import { SharedResponses } from '../xds/shared-responses.js';
import type { NonceSource } from '../xds/nonce.js';
import { bundleFormatFor, type BundleFormatSetting } from '../xds/bundle-format.js';
import type { DeltaRequest, NodeInfo, SotwRequest, StreamFailure, StreamHooks, StreamSink } from '../xds/types.js';
import type { Caller } from '../authorization/caller.js';

/**
 * A stream's catalog when callers are told apart (contract 2): optionally it refuses the caller
 * outright (`refusal`, e.g. it matches no workload entry) and is told when the stream ends (`close`).
 */
export type StreamCatalog = SecretCatalog & { refusal?(): string | undefined; close?(): void };

/** Where the stream came from: its id and the connection (`call.getPeer()`, `sds-conn:<id>` with attestation). */
export interface StreamOrigin {
  id: number;
  peer: string;
}

/**
 * The gRPC transport for one SDS API version: decodes requests, runs one state machine per
 * stream, writes pre-encoded responses. Protocol rules live in `xds/`, secrets in `secrets/`.
 */
export interface SdsServiceDeps {
  catalog: SecretCatalog;
  /**
   * Per-caller catalog (contract 2). When set, every stream and fetch first waits for its caller's
   * attestation (`callerOf`); requests reach the state machine only once the caller is known, and
   * a failed attestation ends the stream with UNAVAILABLE (as SPIRE's agent does).
   */
  catalogFor?(caller: Caller | undefined, origin: StreamOrigin): StreamCatalog;
  /** The attested caller of a connection (`SdsServer.callerOf`); undefined when none is tracked. */
  callerOf?(peer: string): Promise<Caller> | undefined;
  nonces: NonceSource;
  log: Logger;
  hooks: StreamHooks;
  bundleFormat: BundleFormatSetting;
  /** Tracks open streams so shutdown can end them cleanly. */
  streams: StreamRegistry;
}

export interface OpenStream {
  readonly id: number;
  readonly api: ApiVersion['label'];
  readonly kind: 'sotw' | 'delta';
  readonly openedAt: Date;
  node(): NodeInfo | undefined;
  /** The connection it came on (`call.getPeer()`; `sds-conn:<id>` with attestation). */
  peer(): string;
  /** What the client named and what it was sent on this stream, names only (for /streams). */
  record(): StreamRecord;
  /** Ends the stream with status OK (server shutdown). */
  end(): void;
}

/**
 * Names seen on one stream, as the transport saw them (not as the state machine read them), so an
 * operator or a test can check that a stream was only ever sent what its client named. Bounded:
 * each list keeps its first {@link RECORD_NAMES_KEPT} distinct names, each cut to
 * {@link RECORD_NAME_CHARS} code units (`...(N more chars)`), and counts the names it dropped.
 */
export interface StreamRecord {
  /** Requests received. */
  requests: number;
  /** Every name the client put in `resource_names` (SotW) or `resource_names_subscribe` (Delta). */
  named: string[];
  /** Names of the latest request: SotW `resource_names`, Delta `resource_names_subscribe`. */
  lastRequestNames: string[];
  /** Every name in a Delta `resource_names_unsubscribe` (always empty for SotW). */
  unsubscribed: string[];
  /** Every secret name a response on this stream carried. */
  sent: string[];
  /** Distinct names left out of the lists above (past RECORD_NAMES_KEPT), when there were any. */
  namesNotKept?: number;
}

/** Distinct names kept per list of a {@link StreamRecord}. */
export const RECORD_NAMES_KEPT = 64;
/** Longest name kept in a {@link StreamRecord}; longer ones are cut. */
export const RECORD_NAME_CHARS = 1024;

/** The names a request subscribes to and unsubscribes from. */
type RequestNames<Req> = (request: Req) => { subscribe: readonly string[]; unsubscribe: readonly string[] };

const recordedName = (name: string): string => (name.length <= RECORD_NAME_CHARS ? name : `${name.slice(0, RECORD_NAME_CHARS)}...(${name.length - RECORD_NAME_CHARS} more chars)`);

/**
 * The names of one stream, bounded (a client may send 10,000 names or 1 MiB ones). Small arrays
 * created on first use, and the last request's list reused while the client repeats it (Envoy
 * does in every ACK): a stream naming one secret costs two one-element arrays.
 */
class NameRecord {
  requests = 0;
  named: string[] | undefined;
  lastRequestNames: string[] | undefined;
  unsubscribed: string[] | undefined;
  sent: string[] | undefined;
  notKept = 0;

  /** `list` with `names` added (each cut, each once, at most RECORD_NAMES_KEPT). */
  add(list: string[] | undefined, names: readonly string[]): string[] | undefined {
    for (const raw of names) {
      const name = recordedName(raw);
      if (list?.includes(name)) continue;
      if ((list?.length ?? 0) >= RECORD_NAMES_KEPT) this.notKept += 1;
      else (list ??= []).push(name);
    }
    return list;
  }

  noteRequest(subscribe: readonly string[], unsubscribe: readonly string[]): void {
    this.requests += 1;
    const last = this.lastRequestNames;
    const same = last !== undefined ? last.length === subscribe.length && last.every((n, i) => n === subscribe[i]) : subscribe.length === 0;
    if (!same) this.lastRequestNames = subscribe.length === 0 ? undefined : subscribe.slice(0, RECORD_NAMES_KEPT).map(recordedName);
    this.named = this.add(this.named, subscribe);
    if (unsubscribe.length > 0) this.unsubscribed = this.add(this.unsubscribed, unsubscribe);
  }

  noteSent(names: readonly string[]): void {
    this.sent = this.add(this.sent, names);
  }

  snapshot(): StreamRecord {
    return {
      requests: this.requests,
      named: [...(this.named ?? [])],
      lastRequestNames: [...(this.lastRequestNames ?? [])],
      unsubscribed: [...(this.unsubscribed ?? [])],
      sent: [...(this.sent ?? [])],
      ...(this.notKept > 0 ? { namesNotKept: this.notKept } : {}),
    };
  }
}

/** A stream that has ended, as {@link StreamRegistry.recentlyClosed} keeps it. */
export interface ClosedStream extends StreamRecord {
  id: number;
  api: ApiVersion['label'];
  kind: 'sotw' | 'delta';
  openedAt: Date;
  closedAt: Date;
  node?: string;
}

/** How many ended streams {@link StreamRegistry.recentlyClosed} keeps. */
export const RECENTLY_CLOSED_KEPT = 64;

export class StreamRegistry {
  private nextId = 0;
  readonly open = new Map<number, OpenStream>();
  /** The last {@link RECENTLY_CLOSED_KEPT} streams that ended, oldest first (names only). */
  readonly recentlyClosed: ClosedStream[] = [];
  /** Told of every stream that opens / ends (metrics, the info log); must not throw. */
  readonly observers = new Set<{ opened?(stream: OpenStream): void; closed?(stream: ClosedStream): void }>();

  allocateId(): number {
    this.nextId += 1;
    return this.nextId;
  }

  /** Streams opened since the server started (open or ended). */
  get openedTotal(): number {
    return this.nextId;
  }

  endAll(): void {
    for (const stream of [...this.open.values()]) stream.end();
  }

  /** Moves a stream from `open` to `recentlyClosed`. */
  closed(stream: OpenStream): void {
    this.open.delete(stream.id);
    const node = stream.node()?.id;
    const closed: ClosedStream = {
      id: stream.id,
      api: stream.api,
      kind: stream.kind,
      openedAt: stream.openedAt,
      closedAt: new Date(),
      ...(node !== undefined ? { node } : {}),
      ...stream.record(),
    };
    this.recentlyClosed.push(closed);
    if (this.recentlyClosed.length > RECENTLY_CLOSED_KEPT) this.recentlyClosed.shift();
    for (const o of this.observers) o.closed?.(closed);
  }
}

type RequestDecode<T> = (bytes: Buffer) => T;

/** Requests a stream may send before its caller's attestation completes (they are held, then replayed). */
const MAX_REQUESTS_WHILE_ATTESTING = 16;

interface StreamMachine<Req> {
  onRequest(r: Req): void;
  close(): void;
}

/**
 * One gRPC stream: the sink its state machine writes to, and its entry in the registry. A class
 * rather than closures: its methods are shared, so an open stream costs a few fields.
 */
class TransportStream<Req> implements StreamSink, OpenStream {
  machine: StreamMachine<Req> | undefined;
  /** Requests received before the caller is attested; replayed once the machine exists. */
  private waiting: Buffer[] | undefined;
  catalog: StreamCatalog | undefined;
  private ended = false;
  private finished = false;
  private lastNode: NodeInfo | undefined;
  private readonly openedAtMs = Date.now();
  private readonly names = new NameRecord();

  constructor(
    readonly id: number,
    readonly api: ApiVersion['label'],
    readonly kind: 'sotw' | 'delta',
    private readonly call: grpc.ServerDuplexStream<Buffer, Buffer>,
    private readonly decode: (b: Buffer) => Req,
    private readonly requestNames: RequestNames<Req>,
    private readonly registry: StreamRegistry,
  ) {}

  get openedAt(): Date {
    return new Date(this.openedAtMs);
  }

  node(): NodeInfo | undefined {
    return this.lastNode;
  }

  peer(): string {
    return this.call.getPeer();
  }

  record(): StreamRecord {
    return this.names.snapshot();
  }

  /** Called (through the service's hooks) with the names of every response this stream wrote. */
  noteSent(names: readonly string[]): void {
    this.names.noteSent(names);
  }

  write(message: Buffer): boolean {
    return this.call.write(message);
  }

  onDrain(callback: () => void): void {
    this.call.once('drain', callback);
  }

  fail(failure: StreamFailure): void {
    if (this.ended) return;
    this.ended = true;
    this.call.emit('error', { code: failure.code, details: failure.message });
  }

  /** Ends the stream with status OK (server shutdown). */
  end(): void {
    if (this.ended) return;
    this.ended = true;
    this.finish();
    this.call.end();
  }

  finish(): void {
    if (this.finished) return;
    this.finished = true;
    this.machine?.close();
    this.catalog?.close?.();
    this.catalog = undefined;
    this.waiting = undefined;
    this.registry.closed(this);
  }

  /** Ended by us, or finished because the client went away (cancelled, closed): start nothing more. */
  get isEnded(): boolean {
    return this.ended || this.finished;
  }

  /** Holds requests until `start` (the caller is being attested). */
  hold(): void {
    this.waiting = [];
  }

  /** Starts the state machine and replays any request that arrived while the caller was attested. */
  start(machine: StreamMachine<Req>): void {
    this.machine = machine;
    const waiting = this.waiting ?? [];
    this.waiting = undefined;
    for (const bytes of waiting) if (!this.ended) this.onData(bytes);
  }

  onData(bytes: Buffer): void {
    if (this.waiting) {
      // Envoy sends one request, maybe an ACK, before it hears back: anything past a few is not a
      // real client, and holding it would let one connection grow our memory while it is attested.
      if (this.waiting.length >= MAX_REQUESTS_WHILE_ATTESTING) {
        this.fail({ code: grpc.status.RESOURCE_EXHAUSTED, message: `${ErrorCode.BadRequest}: more than ${MAX_REQUESTS_WHILE_ATTESTING} requests before the caller was attested` });
        this.finish();
        return;
      }
      this.waiting.push(bytes);
      return;
    }
    if (!this.machine || this.ended) return;
    let request: Req;
    try {
      request = this.decode(bytes);
    } catch (err) {
      this.fail({ code: grpc.status.INVALID_ARGUMENT, message: `${ErrorCode.BadRequest}: could not decode request: ${(err as Error).message}` });
      this.finish();
      return;
    }
    const node = (request as { node?: NodeInfo }).node;
    if (node && !this.lastNode) this.lastNode = node;
    const { subscribe, unsubscribe } = this.requestNames(request);
    this.names.noteRequest(subscribe, unsubscribe);
    this.machine.onRequest(request);
  }

  /** The client half-closed: finish our side too. */
  onEnd(): void {
    this.finish();
    if (!this.ended) {
      this.ended = true;
      this.call.end();
    }
  }
}

/** `parent.child({ stream })`, created on first use. */
class LazyChildLogger implements Logger {
  private real: Logger | undefined;

  constructor(
    private readonly parent: Logger,
    private readonly streamId: number,
  ) {}

  private get logger(): Logger {
    return (this.real ??= this.parent.child({ stream: this.streamId }));
  }

  debug(msg: string, fields?: LogFields): void {
    this.logger.debug(msg, fields);
  }

  info(msg: string, fields?: LogFields): void {
    this.logger.info(msg, fields);
  }

  warn(msg: string, fields?: LogFields): void {
    this.logger.warn(msg, fields);
  }

  error(msg: string, fields?: LogFields): void {
    this.logger.error(msg, fields);
  }

  child(fields: LogFields): Logger {
    return this.logger.child(fields);
  }
}

/** Builds the grpc-js service definition and implementation for one API version. */
export function createSdsService(api: ApiVersion, deps: SdsServiceDeps): { definition: grpc.ServiceDefinition; implementation: grpc.UntypedServiceImplementation } {
  const decoder = new RequestDecoder(api);
  const encoder = new SecretEncoder(api);
  const formatFor = (node: NodeInfo | undefined) => bundleFormatFor(deps.bundleFormat, node);
  const log = deps.log.child({ api: api.label });
  const responses = new SharedResponses(encoder, deps.nonces);

  const method = <Req>(name: string, decode: RequestDecode<Req>, requestStream: boolean, responseStream: boolean): grpc.MethodDefinition<Req, Buffer> => ({
    path: `/${api.service}/${name}`,
    requestStream,
    responseStream,
    // Requests are decoded in the handler so a malformed message gets a clear error, not a crash.
    requestSerialize: () => Buffer.alloc(0),
    requestDeserialize: decode,
    responseSerialize: (b: Buffer) => b,
    responseDeserialize: (b: Buffer) => b,
  });

  const rawDecode = (b: Buffer): Buffer => b;
  const definition: grpc.ServiceDefinition = {
    StreamSecrets: method('StreamSecrets', rawDecode, true, true),
    DeltaSecrets: method('DeltaSecrets', rawDecode, true, true),
    FetchSecrets: method('FetchSecrets', rawDecode, false, false),
  };

  // The service's hooks: the shared ones, plus each stream's record of the names it was sent.
  const hooks: StreamHooks = {
    onResponse: (info) => {
      const stream = deps.streams.open.get(info.streamId);
      if (stream instanceof TransportStream) stream.noteSent(info.names);
      deps.hooks.onResponse?.(info);
    },
    onAck: (info) => deps.hooks.onAck?.(info),
    onNack: (info) => deps.hooks.onNack?.(info),
  };

  const runStream = <Req>(
    kind: 'sotw' | 'delta',
    call: grpc.ServerDuplexStream<Buffer, Buffer>,
    decode: (b: Buffer) => Req,
    requestNames: RequestNames<Req>,
    makeMachine: (sink: StreamSink, streamId: number, catalog: SecretCatalog) => StreamMachine<Req>,
  ): void => {
    const stream = new TransportStream<Req>(deps.streams.allocateId(), api.label, kind, call, decode, requestNames, deps.streams);
    deps.streams.open.set(stream.id, stream);
    for (const o of deps.streams.observers) o.opened?.(stream);
    if (deps.catalogFor) {
      const catalogFor = deps.catalogFor;
      const peer = call.getPeer();
      stream.hold();
      log.debug('stream opened; attesting caller', { stream: stream.id, kind, peer });
      void callerCatalog(catalogFor, peer, stream.id).then((result) => {
        if (stream.isEnded) {
          // The client went away while it was attested: nothing to watch or hold for it.
          if (result.ok) result.catalog.close?.();
          return;
        }
        if (!result.ok) {
          stream.fail(result.failure);
          stream.finish();
          return;
        }
        stream.catalog = result.catalog;
        stream.start(makeMachine(stream, stream.id, result.catalog));
      });
    } else {
      stream.start(makeMachine(stream, stream.id, deps.catalog));
      log.debug('stream opened', { stream: stream.id, kind, peer: call.getPeer() });
    }
    // Three closures per stream (this runs for every one of thousands of streams).
    call.on('data', (bytes: Buffer) => stream.onData(bytes));
    call.on('end', () => stream.onEnd());
    const finish = (): void => stream.finish();
    call.on('error', finish);
    call.on('cancelled', finish);
    call.on('close', finish);
  };

  /**
   * The caller's catalog once attestation is done, or the failure that ends the stream: UNAVAILABLE
   * when the caller cannot be attested (fail closed), PERMISSION_DENIED when it is granted nothing.
   */
  const callerCatalog = async (
    catalogFor: NonNullable<SdsServiceDeps['catalogFor']>,
    peer: string,
    id: number,
  ): Promise<{ ok: true; catalog: StreamCatalog } | { ok: false; failure: StreamFailure }> => {
    let caller: Caller;
    try {
      const pending = deps.callerOf?.(peer);
      if (!pending) throw new SdsError(ErrorCode.AttestationFailed, `no attested caller is known for connection ${peer}`);
      caller = await pending;
    } catch (err) {
      // The attestation's own code when it has one (SDS_ERR_CALLER_GONE, SDS_ERR_PID_REUSED, ...).
      const code = err instanceof SdsError ? err.code : ErrorCode.AttestationFailed;
      const message = `${code}: could not attest the caller: ${(err as Error).message}`.slice(0, 1000);
      log.warn('caller attestation failed; refusing the stream', { stream: id, peer, error: message });
      return { ok: false, failure: { code: grpc.status.UNAVAILABLE, message } };
    }
    const catalog = catalogFor(caller, { id, peer });
    const refusal = catalog.refusal?.();
    if (refusal !== undefined) {
      catalog.close?.();
      log.warn('caller refused', { stream: id, peer, pid: caller.pid, uid: caller.uid, selectors: caller.selectors, reason: refusal });
      return { ok: false, failure: { code: grpc.status.PERMISSION_DENIED, message: `${ErrorCode.PermissionDenied}: ${refusal}` } };
    }
    return { ok: true, catalog };
  };

  const context = (sink: StreamSink, streamId: number, catalog: SecretCatalog) => ({
    streamId,
    catalog,
    encoder,
    sink,
    nonces: deps.nonces,
    // The per-stream child logger is built on first use: most streams never log.
    log: new LazyChildLogger(log, streamId),
    hooks,
    bundleFormat: formatFor,
    responses,
  });

  const decodeSotw = (b: Buffer): SotwRequest => decoder.decodeSotw(b);
  const decodeDelta = (b: Buffer): DeltaRequest => decoder.decodeDelta(b);
  const sotwNames = (r: SotwRequest) => ({ subscribe: r.resourceNames, unsubscribe: [] });
  const deltaNames = (r: DeltaRequest) => ({ subscribe: r.subscribe, unsubscribe: r.unsubscribe });
  const makeSotw = (sink: StreamSink, id: number, catalog: SecretCatalog): SotwStream => new SotwStream(context(sink, id, catalog));
  const makeDelta = (sink: StreamSink, id: number, catalog: SecretCatalog): DeltaStream => new DeltaStream(context(sink, id, catalog));
  const implementation: grpc.UntypedServiceImplementation = {
    StreamSecrets: (call: grpc.ServerDuplexStream<Buffer, Buffer>) => runStream<SotwRequest>('sotw', call, decodeSotw, sotwNames, makeSotw),
    DeltaSecrets: (call: grpc.ServerDuplexStream<Buffer, Buffer>) => runStream<DeltaRequest>('delta', call, decodeDelta, deltaNames, makeDelta),
    FetchSecrets: (call: grpc.ServerUnaryCall<Buffer, Buffer>, callback: grpc.sendUnaryData<Buffer>) => {
      let request: SotwRequest;
      try {
        request = decoder.decodeSotw(call.request);
      } catch (err) {
        callback({ code: grpc.status.INVALID_ARGUMENT, details: `${ErrorCode.BadRequest}: could not decode request: ${(err as Error).message}` });
        return;
      }
      const answer = (catalog: SecretCatalog): void => {
        const result = fetchSecrets(request, { catalog, encoder, nonces: deps.nonces, format: formatFor(request.node) });
        if (!result.ok) {
          log.warn('fetch refused', { error: result.failure.message, node: request.node && boundText(request.node.id, 200) });
          callback({ code: result.failure.code, details: result.failure.message });
          return;
        }
        log.debug('fetch answered', { secrets: result.names, node: request.node?.id });
        callback(null, Buffer.from(result.response));
      };
      if (!deps.catalogFor) {
        answer(deps.catalog);
        return;
      }
      void callerCatalog(deps.catalogFor, call.getPeer(), deps.streams.allocateId()).then((result) => {
        if (!result.ok) {
          callback({ code: result.failure.code, details: result.failure.message });
          return;
        }
        try {
          answer(result.catalog);
        } finally {
          result.catalog.close?.();
        }
      });
    },
  };
  return { definition, implementation };
}
