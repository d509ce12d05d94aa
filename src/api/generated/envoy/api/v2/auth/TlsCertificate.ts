// Original file: proto/envoy/api/v2/auth/common.proto

import type { DataSource as _envoy_api_v2_core_DataSource, DataSource__Output as _envoy_api_v2_core_DataSource__Output } from '../../../../envoy/api/v2/core/DataSource.js';

export interface TlsCertificate {
  'certificate_chain'?: (_envoy_api_v2_core_DataSource | null);
  'private_key'?: (_envoy_api_v2_core_DataSource | null);
}

export interface TlsCertificate__Output {
  'certificate_chain': (_envoy_api_v2_core_DataSource__Output | null);
  'private_key': (_envoy_api_v2_core_DataSource__Output | null);
}
