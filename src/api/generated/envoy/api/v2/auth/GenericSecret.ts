// Original file: proto/envoy/api/v2/auth/secret.proto

import type { DataSource as _envoy_api_v2_core_DataSource, DataSource__Output as _envoy_api_v2_core_DataSource__Output } from '../../../../envoy/api/v2/core/DataSource.js';

export interface GenericSecret {
  'secret'?: (_envoy_api_v2_core_DataSource | null);
}

export interface GenericSecret__Output {
  'secret': (_envoy_api_v2_core_DataSource__Output | null);
}
