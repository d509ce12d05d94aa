import * as grpc from '@grpc/grpc-js';
import type protobuf from 'protobufjs';
import { upstreamType } from './upstream-protos.js';
import { decodeAs } from '../../src/api/proto-root.js';
import type { DiscoveryRequest } from '../../src/api/generated/envoy/service/discovery/v3/DiscoveryRequest.js';
import type { DiscoveryResponse__Output } from '../../src/api/generated/envoy/service/discovery/v3/DiscoveryResponse.js';
import type { DeltaDiscoveryRequest } from '../../src/api/generated/envoy/service/discovery/v3/DeltaDiscoveryRequest.js';
import type { DeltaDiscoveryResponse__Output } from '../../src/api/generated/envoy/service/discovery/v3/DeltaDiscoveryResponse.js';
import type { Secret__Output } from '../../src/api/generated/envoy/extensions/transport_sockets/tls/v3/Secret.js';
import type { SPIFFECertValidatorConfig__Output } from '../../src/api/generated/envoy/extensions/transport_sockets/tls/v3/SPIFFECertValidatorConfig.js';
import type { Any__Output } from '../../src/api/generated/google/protobuf/Any.js';
import type { Node } from '../../src/api/generated/envoy/config/core/v3/Node.js';
import type { Value } from '../../src/api/generated/google/protobuf/Value.js';

/**
 * A real SDS client over a real Unix socket, built from the upstream Envoy protos (not ours).
 * v2 uses the v2 service path with the upstream v3 message definitions: the two are
 * wire-compatible in every field SDS uses (proven in wire-compat.test.ts).
 *
 * Messages are typed with the types generated from our proto/ (src/api/generated, `npm run
 * gen:types`): requests as the generator's input types, responses as its `__Output` types, which
 * describe what decodeAs (src/api/proto-root.ts, the server's own conversion) gives. Upstream
 * messages have more fields than ours; those are present at run time but not in the types.
 */
export type ApiLabel = 'v3' | 'v2';

const SERVICE: Record<ApiLabel, string> = {
  v3: 'envoy.service.secret.v3.SecretDiscoveryService',
  v2: 'envoy.service.discovery.v2.SecretDiscoveryService',
};
export const SECRET_TYPE_URL: Record<ApiLabel, string> = {
  v3: 'type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret',
  v2: 'type.googleapis.com/envoy.api.v2.auth.Secret',
};

const t = {
  req: () => upstreamType('envoy.service.discovery.v3.DiscoveryRequest'),
  res: () => upstreamType('envoy.service.discovery.v3.DiscoveryResponse'),
  dreq: () => upstreamType('envoy.service.discovery.v3.DeltaDiscoveryRequest'),
  dres: () => upstreamType('envoy.service.discovery.v3.DeltaDiscoveryResponse'),
  secret: () => upstreamType('envoy.extensions.transport_sockets.tls.v3.Secret'),
  spiffe: () => upstreamType('envoy.extensions.transport_sockets.tls.v3.SPIFFECertValidatorConfig'),
};

const encoder = (type: () => protobuf.Type) => (obj: object): Buffer => {
  const T = type();
  const err = T.verify(obj);
  if (err) throw new Error(`test client built an invalid ${T.name}: ${err}`);
  return Buffer.from(T.encode(T.fromObject(obj)).finish());
};
const decoder = <R>(type: () => protobuf.Type) => (bytes: Buffer): R => decodeAs<R>(type(), bytes);

export function decodeSecret(any: Any__Output): Secret__Output {
  return decoder<Secret__Output>(t.secret)(any.value);
}
export function decodeSpiffeConfig(value: Buffer): SPIFFECertValidatorConfig__Output {
  return decoder<SPIFFECertValidatorConfig__Output>(t.spiffe)(value);
}

export interface StreamEnd {
  code: number;
  details: string;
}

/** A bidi stream with an async queue of responses. */
export class TestStream<Req, Res> {
  private readonly queue: Res[] = [];
  private waiters: Array<(r: Res) => void> = [];
  readonly ended: Promise<StreamEnd>;

  constructor(private readonly call: grpc.ClientDuplexStream<Req, Res>) {
    call.on('data', (r: Res) => {
      const w = this.waiters.shift();
      if (w) w(r);
      else this.queue.push(r);
    });
    this.ended = new Promise((resolve) => {
      call.on('error', (e: grpc.ServiceError) => resolve({ code: e.code, details: e.details }));
      call.on('status', (s: grpc.StatusObject) => {
        if (s.code === grpc.status.OK) resolve({ code: s.code, details: s.details });
      });
    });
    this.ended.catch(() => {});
  }

  send(req: Req): void {
    this.call.write(req);
  }

  /** The next response, failing after `timeoutMs`. */
  next(timeoutMs = 3000): Promise<Res> {
    const queued = this.queue.shift();
    if (queued) return Promise.resolve(queued);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiters = this.waiters.filter((w) => w !== waiter);
        reject(new Error(`no response within ${timeoutMs} ms`));
      }, timeoutMs);
      const waiter = (r: Res): void => {
        clearTimeout(timer);
        resolve(r);
      };
      this.waiters.push(waiter);
    });
  }

  /** Resolves true when no response arrives within `ms`. */
  async nothingWithin(ms: number): Promise<boolean> {
    try {
      await this.next(ms);
      return false;
    } catch {
      return true;
    }
  }

  get pending(): number {
    return this.queue.length;
  }

  end(): void {
    this.call.end();
  }

  cancel(): void {
    this.call.cancel();
  }
}

export class SdsTestClient {
  private readonly client: grpc.Client;

  constructor(
    socketPath: string,
    readonly api: ApiLabel = 'v3',
  ) {
    this.client = new grpc.Client(`unix:${socketPath}`, grpc.credentials.createInsecure());
  }

  get typeUrl(): string {
    return SECRET_TYPE_URL[this.api];
  }

  stream(): TestStream<DiscoveryRequest, DiscoveryResponse__Output> {
    const call = this.client.makeBidiStreamRequest(
      `/${SERVICE[this.api]}/StreamSecrets`,
      encoder(t.req),
      decoder<DiscoveryResponse__Output>(t.res),
    );
    return new TestStream(call);
  }

  delta(): TestStream<DeltaDiscoveryRequest, DeltaDiscoveryResponse__Output> {
    const call = this.client.makeBidiStreamRequest(
      `/${SERVICE[this.api]}/DeltaSecrets`,
      encoder(t.dreq),
      decoder<DeltaDiscoveryResponse__Output>(t.dres),
    );
    return new TestStream(call);
  }

  fetch(req: DiscoveryRequest): Promise<DiscoveryResponse__Output> {
    return new Promise((resolve, reject) => {
      this.client.makeUnaryRequest(
        `/${SERVICE[this.api]}/FetchSecrets`,
        encoder(t.req),
        decoder<DiscoveryResponse__Output>(t.res),
        req,
        (err, res) => (err ? reject(err) : resolve(res as DiscoveryResponse__Output)),
      );
    });
  }

  close(): void {
    this.client.close();
  }
}

/** An Envoy-like node: version and metadata as real Envoy sends them. */
export function envoyNode(opts: { id?: string; version?: [number, number, number]; metadata?: Record<string, boolean | string> } = {}): Node {
  const [major, minor, patch] = opts.version ?? [1, 40, 0];
  // protobufjs' bundled google.protobuf.Value keeps camelCase field names even with keepCase.
  const fields: Record<string, Value> = {};
  for (const [k, v] of Object.entries(opts.metadata ?? {})) fields[k] = typeof v === 'boolean' ? { boolValue: v } : { stringValue: v };
  return {
    id: opts.id ?? 'sidecar~10.0.0.1~front~default.svc.cluster.local',
    cluster: 'front',
    metadata: { fields },
    user_agent_name: 'envoy',
    user_agent_build_version: { version: { major_number: major, minor_number: minor, patch } },
  };
}
