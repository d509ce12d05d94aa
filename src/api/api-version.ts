/** What differs between SDS v3 and v2: names and type URLs. Field numbers are the same. */
export interface ApiVersion {
  readonly label: 'v3' | 'v2';
  /** Fully qualified gRPC service name. */
  readonly service: string;
  readonly secretTypeUrl: string;
  readonly secretMessage: string;
  readonly discoveryRequestMessage: string;
  readonly deltaDiscoveryRequestMessage: string;
  /** v2's CertificateValidationContext has no custom_validator_config: bundles go as trusted_ca. */
  readonly supportsSpiffeValidator: boolean;
}

export const V3: ApiVersion = {
  label: 'v3',
  service: 'envoy.service.secret.v3.SecretDiscoveryService',
  secretTypeUrl: 'type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret',
  secretMessage: 'envoy.extensions.transport_sockets.tls.v3.Secret',
  discoveryRequestMessage: 'envoy.service.discovery.v3.DiscoveryRequest',
  deltaDiscoveryRequestMessage: 'envoy.service.discovery.v3.DeltaDiscoveryRequest',
  supportsSpiffeValidator: true,
};

export const V2: ApiVersion = {
  label: 'v2',
  service: 'envoy.service.discovery.v2.SecretDiscoveryService',
  secretTypeUrl: 'type.googleapis.com/envoy.api.v2.auth.Secret',
  secretMessage: 'envoy.api.v2.auth.Secret',
  discoveryRequestMessage: 'envoy.api.v2.DiscoveryRequest',
  deltaDiscoveryRequestMessage: 'envoy.api.v2.DeltaDiscoveryRequest',
  supportsSpiffeValidator: false,
};

export const SPIFFE_VALIDATOR_NAME = 'envoy.tls.cert_validator.spiffe';
export const SPIFFE_VALIDATOR_TYPE_URL = 'type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.SPIFFECertValidatorConfig';
