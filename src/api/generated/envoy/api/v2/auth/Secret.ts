// Original file: proto/envoy/api/v2/auth/secret.proto

import type { TlsCertificate as _envoy_api_v2_auth_TlsCertificate, TlsCertificate__Output as _envoy_api_v2_auth_TlsCertificate__Output } from '../../../../envoy/api/v2/auth/TlsCertificate.js';
import type { CertificateValidationContext as _envoy_api_v2_auth_CertificateValidationContext, CertificateValidationContext__Output as _envoy_api_v2_auth_CertificateValidationContext__Output } from '../../../../envoy/api/v2/auth/CertificateValidationContext.js';
import type { GenericSecret as _envoy_api_v2_auth_GenericSecret, GenericSecret__Output as _envoy_api_v2_auth_GenericSecret__Output } from '../../../../envoy/api/v2/auth/GenericSecret.js';

export interface Secret {
  'name'?: (string);
  'tls_certificate'?: (_envoy_api_v2_auth_TlsCertificate | null);
  'validation_context'?: (_envoy_api_v2_auth_CertificateValidationContext | null);
  'generic_secret'?: (_envoy_api_v2_auth_GenericSecret | null);
  'type'?: "tls_certificate"|"validation_context"|"generic_secret";
}

export interface Secret__Output {
  'name': (string);
  'tls_certificate'?: (_envoy_api_v2_auth_TlsCertificate__Output | null);
  'validation_context'?: (_envoy_api_v2_auth_CertificateValidationContext__Output | null);
  'generic_secret'?: (_envoy_api_v2_auth_GenericSecret__Output | null);
}
