import type protobuf from 'protobufjs';
import type { DeltaRequest, ErrorDetail, NodeInfo, SotwRequest } from '../xds/types.js';
import { messageType } from './proto-root.js';
import type { ApiVersion } from './api-version.js';

/**
 * Wire -> version-agnostic request shapes. protobufjs decodes into plain objects with camelCase
 * keys; these interfaces describe the parts we read (absent fields are undefined).
 */
interface WireStatus { code?: number; message?: string }
interface WireValue {
  nullValue?: number;
  numberValue?: number;
  stringValue?: string;
  boolValue?: boolean;
  structValue?: WireStruct;
  listValue?: { values?: WireValue[] };
}
interface WireStruct { fields?: Record<string, WireValue> }
interface WireNode {
  id?: string;
  cluster?: string;
  metadata?: WireStruct;
  userAgentName?: string;
  userAgentVersion?: string;
  userAgentBuildVersion?: { version?: { majorNumber?: number; minorNumber?: number; patch?: number } };
}
interface WireDiscoveryRequest {
  versionInfo?: string;
  node?: WireNode;
  resourceNames?: string[];
  typeUrl?: string;
  responseNonce?: string;
  errorDetail?: WireStatus;
}
interface WireDeltaRequest {
  node?: WireNode;
  typeUrl?: string;
  resourceNamesSubscribe?: string[];
  resourceNamesUnsubscribe?: string[];
  initialResourceVersions?: Record<string, string>;
  responseNonce?: string;
  errorDetail?: WireStatus;
}

export class RequestDecoder {
  private readonly sotw: protobuf.Type;
  private readonly delta: protobuf.Type;

  constructor(api: ApiVersion) {
    this.sotw = messageType(api.discoveryRequestMessage);
    this.delta = messageType(api.deltaDiscoveryRequestMessage);
  }

  /** Throws on bytes that are not a DiscoveryRequest; the transport turns that into INVALID_ARGUMENT. */
  decodeSotw(bytes: Buffer): SotwRequest {
    const m = this.sotw.toObject(this.sotw.decode(bytes)) as WireDiscoveryRequest;
    const request: SotwRequest = {
      versionInfo: m.versionInfo ?? '',
      resourceNames: m.resourceNames ?? [],
      typeUrl: m.typeUrl ?? '',
      responseNonce: m.responseNonce ?? '',
    };
    if (m.node) request.node = nodeInfo(m.node);
    const errorDetail = errorDetailOf(m.errorDetail);
    if (errorDetail) request.errorDetail = errorDetail;
    return request;
  }

  decodeDelta(bytes: Buffer): DeltaRequest {
    const m = this.delta.toObject(this.delta.decode(bytes)) as WireDeltaRequest;
    const request: DeltaRequest = {
      typeUrl: m.typeUrl ?? '',
      subscribe: m.resourceNamesSubscribe ?? [],
      unsubscribe: m.resourceNamesUnsubscribe ?? [],
      initialResourceVersions: m.initialResourceVersions ?? {},
      responseNonce: m.responseNonce ?? '',
    };
    if (m.node) request.node = nodeInfo(m.node);
    const errorDetail = errorDetailOf(m.errorDetail);
    if (errorDetail) request.errorDetail = errorDetail;
    return request;
  }
}

function errorDetailOf(status: WireStatus | undefined): ErrorDetail | undefined {
  // Envoy sets error_detail only on a NACK; an empty Status message still means "rejected".
  if (!status) return undefined;
  return { code: status.code ?? 0, message: status.message ?? '' };
}

function nodeInfo(n: WireNode): NodeInfo {
  const v = n.userAgentBuildVersion?.version;
  const userAgentVersion = v ? `${v.majorNumber ?? 0}.${v.minorNumber ?? 0}.${v.patch ?? 0}` : (n.userAgentVersion ?? '');
  return {
    id: n.id ?? '',
    cluster: n.cluster ?? '',
    userAgentName: n.userAgentName ?? '',
    userAgentVersion,
    metadata: structToJson(n.metadata),
  };
}

function structToJson(s: WireStruct | undefined): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(s?.fields ?? {})) out[k] = valueToJson(v);
  return out;
}

function valueToJson(v: WireValue): unknown {
  if (v.structValue !== undefined) return structToJson(v.structValue);
  if (v.listValue !== undefined) return (v.listValue.values ?? []).map(valueToJson);
  if (v.stringValue !== undefined) return v.stringValue;
  if (v.numberValue !== undefined) return v.numberValue;
  if (v.boolValue !== undefined) return v.boolValue;
  return null;
}
