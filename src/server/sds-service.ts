import * as grpc from '@grpc/grpc-js';
import type { SecretCatalog } from '../secrets/store.js';
import type { Logger } from '../ops/logger.js';
import { ErrorCode } from '../ops/errors.js';
import type { ApiVersion } from '../api/api-version.js';
import { SecretEncoder } from '../api/secret-encoder.js';
import { RequestDecoder } from '../api/request-decoder.js';
import { SotwStream } from '../xds/sotw-stream.js';
import { DeltaStream } from '../xds/delta-stream.js';
import { fetchSecrets } from '../xds/fetch.js';
import type { NonceSource } from '../xds/nonce.js';
import { bundleFormatFor, type BundleFormatSetting } from '../xds/bundle-format.js';
import type { DeltaRequest, NodeInfo, SotwRequest, StreamHooks, StreamSink } from '../xds/types.js';

/**
 * The gRPC transport for one SDS API version: decodes requests, runs one state machine per
 * stream, writes pre-encoded responses. Protocol rules live in `xds/`, secrets in `secrets/`.
 */
export interface SdsServiceDeps {
  catalog: SecretCatalog;
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
  /** Ends the stream with status OK (server shutdown). */
  end(): void;
}

export class StreamRegistry {
  private nextId = 0;
  readonly open = new Map<number, OpenStream>();

  allocateId(): number {
    this.nextId += 1;
    return this.nextId;
  }

  endAll(): void {
    for (const stream of [...this.open.values()]) stream.end();
  }
}

type RequestDecode<T> = (bytes: Buffer) => T;

/** Builds the grpc-js service definition and implementation for one API version. */
export function createSdsService(api: ApiVersion, deps: SdsServiceDeps): { definition: grpc.ServiceDefinition; implementation: grpc.UntypedServiceImplementation } {
  const decoder = new RequestDecoder(api);
  const encoder = new SecretEncoder(api);
  const formatFor = (node: NodeInfo | undefined) => bundleFormatFor(deps.bundleFormat, node);
  const log = deps.log.child({ api: api.label });

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

  const runStream = <Req>(kind: 'sotw' | 'delta', call: grpc.ServerDuplexStream<Buffer, Buffer>, decode: (b: Buffer) => Req, makeMachine: (sink: StreamSink, streamId: number) => { onRequest(r: Req): void; close(): void; readonly nodeInfo?: NodeInfo | undefined }): void => {
    const id = deps.streams.allocateId();
    let ended = false;
    const sink: StreamSink = {
      write: (message) => call.write(message),
      onDrain: (cb) => call.once('drain', cb),
      fail: (failure) => {
        if (ended) return;
        ended = true;
        call.emit('error', { code: failure.code, details: failure.message });
      },
    };
    const machine = makeMachine(sink, id);
    let lastNode: NodeInfo | undefined;
    const finish = (): void => {
      machine.close();
      deps.streams.open.delete(id);
    };
    deps.streams.open.set(id, {
      id,
      api: api.label,
      kind,
      openedAt: new Date(),
      node: () => lastNode,
      end: () => {
        if (ended) return;
        ended = true;
        finish();
        call.end();
      },
    });
    log.debug('stream opened', { stream: id, kind, peer: call.getPeer() });
    call.on('data', (bytes: Buffer) => {
      let request: Req;
      try {
        request = decode(bytes);
      } catch (err) {
        sink.fail({ code: grpc.status.INVALID_ARGUMENT, message: `${ErrorCode.BadRequest}: could not decode request: ${(err as Error).message}` });
        finish();
        return;
      }
      const node = (request as { node?: NodeInfo }).node;
      if (node && !lastNode) lastNode = node;
      machine.onRequest(request);
    });
    call.on('end', () => {
      // The client half-closed: finish our side too.
      finish();
      if (!ended) {
        ended = true;
        call.end();
      }
    });
    call.on('error', () => finish());
    call.on('cancelled', () => finish());
    call.on('close', () => finish());
  };

  const context = (sink: StreamSink, streamId: number) => ({
    streamId,
    catalog: deps.catalog,
    encoder,
    sink,
    nonces: deps.nonces,
    log: log.child({ stream: streamId }),
    hooks: deps.hooks,
    bundleFormat: formatFor,
  });

  const implementation: grpc.UntypedServiceImplementation = {
    StreamSecrets: (call: grpc.ServerDuplexStream<Buffer, Buffer>) =>
      runStream<SotwRequest>('sotw', call, (b) => decoder.decodeSotw(b), (sink, id) => new SotwStream(context(sink, id))),
    DeltaSecrets: (call: grpc.ServerDuplexStream<Buffer, Buffer>) =>
      runStream<DeltaRequest>('delta', call, (b) => decoder.decodeDelta(b), (sink, id) => new DeltaStream(context(sink, id))),
    FetchSecrets: (call: grpc.ServerUnaryCall<Buffer, Buffer>, callback: grpc.sendUnaryData<Buffer>) => {
      let request: SotwRequest;
      try {
        request = decoder.decodeSotw(call.request);
      } catch (err) {
        callback({ code: grpc.status.INVALID_ARGUMENT, details: `${ErrorCode.BadRequest}: could not decode request: ${(err as Error).message}` });
        return;
      }
      const result = fetchSecrets(request, { catalog: deps.catalog, encoder, nonces: deps.nonces, format: formatFor(request.node) });
      if (!result.ok) {
        log.warn('fetch refused', { error: result.failure.message, node: request.node?.id });
        callback({ code: result.failure.code, details: result.failure.message });
        return;
      }
      log.debug('fetch answered', { secrets: result.names, node: request.node?.id });
      callback(null, Buffer.from(result.response));
    },
  };
  return { definition, implementation };
}
