// Original file: proto/envoy/api/v2/auth/common.proto

import type { DataSource as _envoy_api_v2_core_DataSource, DataSource__Output as _envoy_api_v2_core_DataSource__Output } from '../../../../envoy/api/v2/core/DataSource.js';

export interface CertificateValidationContext {
  'trusted_ca'?: (_envoy_api_v2_core_DataSource | null);
}

export interface CertificateValidationContext__Output {
  'trusted_ca': (_envoy_api_v2_core_DataSource__Output | null);
}
