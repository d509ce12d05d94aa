import type { SecretEntry } from '../secrets/store.js';

/**
 * Version-agnostic shapes of the xDS messages the stream state machines work with.
 * The API adapters (v2, v3) translate wire messages to and from these.
 */

/** What we keep of Envoy's `Node`. */
export interface NodeInfo {
  id: string;
  cluster: string;
  userAgentName: string;
  /** `major.minor.patch` from user_agent_build_version, or user_agent_version, or '' when unknown. */
  userAgentVersion: string;
  /** Node metadata as plain JSON values. */
  metadata: Record<string, unknown>;
}

export interface ErrorDetail {
  code: number;
  message: string;
}

export interface SotwRequest {
  versionInfo: string;
  node?: NodeInfo;
  resourceNames: string[];
  typeUrl: string;
  responseNonce: string;
  errorDetail?: ErrorDetail;
}

export interface DeltaRequest {
  node?: NodeInfo;
  typeUrl: string;
  subscribe: string[];
  unsubscribe: string[];
  initialResourceVersions: Record<string, string>;
  responseNonce: string;
  errorDetail?: ErrorDetail;
}

/** How a trust bundle is rendered for one Envoy. */
export type BundleFormat = 'spiffe' | 'trusted-ca';

/**
 * Renders a secret entry as an encoded `google.protobuf.Any` holding an Envoy `Secret` named
 * `requestedName`. Implementations cache per entry: encode once, write to every stream.
 */
export interface ResourceEncoder {
  readonly typeUrl: string;
  encodeResource(entry: SecretEntry, requestedName: string, format: BundleFormat): Buffer;
  encodeSotwResponse(response: { versionInfo: string; resources: Buffer[]; nonce: string }): Buffer;
  encodeDeltaResponse(response: {
    systemVersionInfo: string;
    resources: { name: string; version: string; resource: Buffer }[];
    removed: string[];
    nonce: string;
  }): Buffer;
}

/** Where a stream writes; the transport adapter implements it over a gRPC call. */
export interface StreamSink {
  /** Writes one encoded response. Returns false when the transport asks us to wait for `onDrain`. */
  write(message: Buffer): boolean;
  onDrain(callback: () => void): void;
  /** Ends the stream with a gRPC status error. */
  fail(status: StreamFailure): void;
}

export interface StreamFailure {
  /** gRPC status code. */
  code: number;
  message: string;
}

/** Observation points for metrics and status; the protocol code calls them, never the reverse. */
export interface StreamHooks {
  onResponse?(info: { streamId: number; names: readonly string[]; versionInfo: string; nonce: string; node?: NodeInfo }): void;
  onAck?(info: { streamId: number; names: readonly string[]; versionInfo: string; node?: NodeInfo }): void;
  onNack?(info: { streamId: number; names: readonly string[]; nonce: string; reason: string; node?: NodeInfo }): void;
}
