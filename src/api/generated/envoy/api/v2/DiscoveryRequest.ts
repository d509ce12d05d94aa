// Original file: proto/envoy/api/v2/discovery.proto

import type { Node as _envoy_api_v2_core_Node, Node__Output as _envoy_api_v2_core_Node__Output } from '../../../envoy/api/v2/core/Node.js';
import type { Status as _google_rpc_Status, Status__Output as _google_rpc_Status__Output } from '../../../google/rpc/Status.js';

export interface DiscoveryRequest {
  'version_info'?: (string);
  'node'?: (_envoy_api_v2_core_Node | null);
  'resource_names'?: (string)[];
  'type_url'?: (string);
  'response_nonce'?: (string);
  'error_detail'?: (_google_rpc_Status | null);
}

export interface DiscoveryRequest__Output {
  'version_info': (string);
  'node': (_envoy_api_v2_core_Node__Output | null);
  'resource_names': (string)[];
  'type_url': (string);
  'response_nonce': (string);
  'error_detail': (_google_rpc_Status__Output | null);
}
