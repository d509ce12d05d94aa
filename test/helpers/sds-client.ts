import * as grpc from '@grpc/grpc-js';
import type protobuf from 'protobufjs';
import { upstreamType } from './upstream-protos.js';

/**
 * A real SDS client over a real Unix socket, built from the upstream Envoy protos (not ours).
 * v2 uses the v2 service path with the upstream v3 message definitions: the two are
 * wire-compatible in every field SDS uses (proven in wire-compat.test.ts).
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

/** Plain-object shapes of the upstream messages as protobufjs `toObject` gives them (keepCase). */
export interface DataSourceObj { inline_bytes?: Buffer; filename?: string }
export interface SecretObj {
  name: string;
  tls_certificate?: { certificate_chain?: DataSourceObj; private_key?: DataSourceObj };
  validation_context?: {
    trusted_ca?: DataSourceObj;
    custom_validator_config?: { name: string; typed_config?: { type_url: string; value: Buffer } };
  };
}
export interface SpiffeConfigObj { trust_domains: { name: string; trust_bundle?: DataSourceObj }[] }
export interface DiscoveryResponseObj {
  version_info: string;
  resources: { type_url: string; value: Buffer }[];
  type_url: string;
  nonce: string;
}
export interface DeltaResponseObj {
  system_version_info: string;
  resources: { name: string; version: string; resource?: { type_url: string; value: Buffer } }[];
  removed_resources: string[];
  type_url: string;
  nonce: string;
}
export interface NodeObj {
  id?: string;
  cluster?: string;
  // protobufjs' bundled google.protobuf.Struct keeps camelCase field names even with keepCase.
  metadata?: { fields: Record<string, { boolValue?: boolean; stringValue?: string }> };
  user_agent_name?: string;
  user_agent_build_version?: { version: { major_number: number; minor_number: number; patch: number } };
}
export interface DiscoveryRequestObj {
  version_info?: string;
  node?: NodeObj;
  resource_names?: string[];
  type_url?: string;
  response_nonce?: string;
  error_detail?: { code: number; message: string };
}
export interface DeltaRequestObj {
  node?: NodeObj;
  type_url?: string;
  resource_names_subscribe?: string[];
  resource_names_unsubscribe?: string[];
  initial_resource_versions?: Record<string, string>;
  response_nonce?: string;
  error_detail?: { code: number; message: string };
}

const t = {
  req: () => upstreamType('envoy.service.discovery.v3.DiscoveryRequest'),
  res: () => upstreamType('envoy.service.discovery.v3.DiscoveryResponse'),
  dreq: () => upstreamType('envoy.service.discovery.v3.DeltaDiscoveryRequest'),
  dres: () => upstreamType('envoy.service.discovery.v3.DeltaDiscoveryResponse'),
  secret: () => upstreamType('envoy.extensions.transport_sockets.tls.v3.Secret'),
  spiffe: () => upstreamType('envoy.extensions.transport_sockets.tls.v3.SPIFFECertValidatorConfig'),
};

const TO_OBJECT: protobuf.IConversionOptions = { defaults: true, arrays: true, objects: true, bytes: Buffer, longs: String };

const encoder = (type: () => protobuf.Type) => (obj: object): Buffer => {
  const T = type();
  const err = T.verify(obj);
  if (err) throw new Error(`test client built an invalid ${T.name}: ${err}`);
  return Buffer.from(T.encode(T.fromObject(obj)).finish());
};
const decoder = <R>(type: () => protobuf.Type) => (bytes: Buffer): R => {
  const T = type();
  return T.toObject(T.decode(bytes), TO_OBJECT) as R;
};

export function decodeSecret(any: { type_url: string; value: Buffer }): SecretObj {
  return decoder<SecretObj>(t.secret)(any.value);
}
export function decodeSpiffeConfig(value: Buffer): SpiffeConfigObj {
  return decoder<SpiffeConfigObj>(t.spiffe)(value);
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

  stream(): TestStream<DiscoveryRequestObj, DiscoveryResponseObj> {
    const call = this.client.makeBidiStreamRequest(
      `/${SERVICE[this.api]}/StreamSecrets`,
      encoder(t.req),
      decoder<DiscoveryResponseObj>(t.res),
    );
    return new TestStream(call);
  }

  delta(): TestStream<DeltaRequestObj, DeltaResponseObj> {
    const call = this.client.makeBidiStreamRequest(
      `/${SERVICE[this.api]}/DeltaSecrets`,
      encoder(t.dreq),
      decoder<DeltaResponseObj>(t.dres),
    );
    return new TestStream(call);
  }

  fetch(req: DiscoveryRequestObj): Promise<DiscoveryResponseObj> {
    return new Promise((resolve, reject) => {
      this.client.makeUnaryRequest(
        `/${SERVICE[this.api]}/FetchSecrets`,
        encoder(t.req),
        decoder<DiscoveryResponseObj>(t.res),
        req,
        (err, res) => (err ? reject(err) : resolve(res as DiscoveryResponseObj)),
      );
    });
  }

  close(): void {
    this.client.close();
  }
}

/** An Envoy-like node: version and metadata as real Envoy sends them. */
export function envoyNode(opts: { id?: string; version?: [number, number, number]; metadata?: Record<string, boolean | string> } = {}): NodeObj {
  const [major, minor, patch] = opts.version ?? [1, 40, 0];
  const fields: Record<string, { boolValue?: boolean; stringValue?: string }> = {};
  for (const [k, v] of Object.entries(opts.metadata ?? {})) fields[k] = typeof v === 'boolean' ? { boolValue: v } : { stringValue: v };
  return {
    id: opts.id ?? 'sidecar~10.0.0.1~front~default.svc.cluster.local',
    cluster: 'front',
    metadata: { fields },
    user_agent_name: 'envoy',
    user_agent_build_version: { version: { major_number: major, minor_number: minor, patch } },
  };
}
