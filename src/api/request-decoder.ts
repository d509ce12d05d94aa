import type protobuf from 'protobufjs';
import type { DeltaRequest, ErrorDetail, NodeInfo, SotwRequest } from '../xds/types.js';
import { decodeAs, messageType } from './proto-root.js';
import type { ApiVersion } from './api-version.js';
import type { DiscoveryRequest__Output as DiscoveryRequestV3 } from './generated/envoy/service/discovery/v3/DiscoveryRequest.js';
import type { DeltaDiscoveryRequest__Output as DeltaDiscoveryRequestV3 } from './generated/envoy/service/discovery/v3/DeltaDiscoveryRequest.js';
import type { DiscoveryRequest__Output as DiscoveryRequestV2 } from './generated/envoy/api/v2/DiscoveryRequest.js';
import type { DeltaDiscoveryRequest__Output as DeltaDiscoveryRequestV2 } from './generated/envoy/api/v2/DeltaDiscoveryRequest.js';
import type { Status__Output } from './generated/google/rpc/Status.js';
import type { Struct__Output } from './generated/google/protobuf/Struct.js';
import type { Value__Output } from './generated/google/protobuf/Value.js';

/** The decoded wire messages, v3 or v2 (`TO_OBJECT` shapes, generated from proto/ by `npm run gen:types`). */
type WireDiscoveryRequest = DiscoveryRequestV3 | DiscoveryRequestV2;
type WireDeltaRequest = DeltaDiscoveryRequestV3 | DeltaDiscoveryRequestV2;
type WireNode = NonNullable<WireDiscoveryRequest['node']>;

export class RequestDecoder {
  private readonly sotw: protobuf.Type;
  private readonly delta: protobuf.Type;

  constructor(api: ApiVersion) {
    this.sotw = messageType(api.discoveryRequestMessage);
    this.delta = messageType(api.deltaDiscoveryRequestMessage);
  }

  /** Throws on bytes that are not a DiscoveryRequest; the transport turns that into INVALID_ARGUMENT. */
  decodeSotw(bytes: Buffer): SotwRequest {
    const m = decodeAs<WireDiscoveryRequest>(this.sotw, bytes);
    const request: SotwRequest = {
      versionInfo: m.version_info,
      resourceNames: m.resource_names,
      typeUrl: m.type_url,
      responseNonce: m.response_nonce,
    };
    if (m.node) request.node = nodeInfo(m.node);
    const errorDetail = errorDetailOf(m.error_detail);
    if (errorDetail) request.errorDetail = errorDetail;
    return request;
  }

  decodeDelta(bytes: Buffer): DeltaRequest {
    const m = decodeAs<WireDeltaRequest>(this.delta, bytes);
    const request: DeltaRequest = {
      typeUrl: m.type_url,
      subscribe: m.resource_names_subscribe,
      unsubscribe: m.resource_names_unsubscribe,
      initialResourceVersions: m.initial_resource_versions,
      responseNonce: m.response_nonce,
    };
    if (m.node) request.node = nodeInfo(m.node);
    const errorDetail = errorDetailOf(m.error_detail);
    if (errorDetail) request.errorDetail = errorDetail;
    return request;
  }
}

function errorDetailOf(status: Status__Output | null): ErrorDetail | undefined {
  // Envoy sets error_detail only on a NACK; an empty Status message still means "rejected".
  if (!status) return undefined;
  return { code: status.code, message: status.message };
}

function nodeInfo(n: WireNode): NodeInfo {
  const v = n.user_agent_build_version?.version;
  const userAgentVersion = v ? `${v.major_number}.${v.minor_number}.${v.patch}` : (n.user_agent_version ?? '');
  return {
    id: n.id,
    cluster: n.cluster,
    userAgentName: n.user_agent_name,
    userAgentVersion,
    metadata: structToJson(n.metadata),
  };
}

function structToJson(s: Struct__Output | null | undefined): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(s?.fields ?? {})) out[k] = valueToJson(v);
  return out;
}

function valueToJson(v: Value__Output): unknown {
  // Value's fields form a oneof: the one that is set is present, the others undefined.
  if (v.structValue !== undefined) return structToJson(v.structValue);
  if (v.listValue !== undefined) return (v.listValue?.values ?? []).map(valueToJson);
  if (v.stringValue !== undefined) return v.stringValue;
  if (v.numberValue !== undefined) return v.numberValue;
  if (v.boolValue !== undefined) return v.boolValue;
  return null;
}
