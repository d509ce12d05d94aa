import type { SecretEntry } from '../secrets/store.js';
import type { TrustBundleValue } from '../secrets/secret.js';
import type { BundleFormat, ResourceEncoder } from '../xds/types.js';
import { messageType } from './proto-root.js';
import { encodeAny, encodeDeltaResponse, encodeSotwResponse } from './response-writer.js';
import { SPIFFE_VALIDATOR_NAME, SPIFFE_VALIDATOR_TYPE_URL, type ApiVersion } from './api-version.js';
import type { Secret as SecretV3 } from './generated/envoy/extensions/transport_sockets/tls/v3/Secret.js';
import type { CertificateValidationContext } from './generated/envoy/extensions/transport_sockets/tls/v3/CertificateValidationContext.js';
import type { SPIFFECertValidatorConfig } from './generated/envoy/extensions/transport_sockets/tls/v3/SPIFFECertValidatorConfig.js';
import type { Secret as SecretV2 } from './generated/envoy/api/v2/auth/Secret.js';

/** A v3 or v2 `Secret` as given to protobufjs' fromObject (generated from proto/ by `npm run gen:types`). */
type WireSecret = SecretV3 | SecretV2;

/**
 * Renders store entries as Envoy `Secret` messages (inline bytes) for one API version.
 * Each (entry, requested name, bundle form) is encoded once and the bytes reused by every stream;
 * a new entry version is a new object, so old encodings are garbage-collected with it.
 */
export class SecretEncoder implements ResourceEncoder {
  readonly typeUrl: string;
  private readonly cache = new WeakMap<SecretEntry, Map<string, Buffer>>();

  constructor(private readonly api: ApiVersion) {
    this.typeUrl = api.secretTypeUrl;
  }

  encodeResource(entry: SecretEntry, requestedName: string, format: BundleFormat): Buffer {
    let perEntry = this.cache.get(entry);
    if (!perEntry) this.cache.set(entry, (perEntry = new Map()));
    const key = `${format}\0${requestedName}`;
    let bytes = perEntry.get(key);
    if (!bytes) {
      bytes = encodeAny(this.typeUrl, this.encodeSecret(entry, requestedName, format));
      perEntry.set(key, bytes);
    }
    return bytes;
  }

  encodeSotwResponse(r: { versionInfo: string; resources: Uint8Array[]; nonce: string }): Buffer {
    return encodeSotwResponse(this.typeUrl, r);
  }

  encodeDeltaResponse(r: {
    systemVersionInfo: string;
    resources: { name: string; version: string; resource: Uint8Array }[];
    removed: string[];
    nonce: string;
  }): Buffer {
    return encodeDeltaResponse(this.typeUrl, r);
  }

  /** The Secret message itself (not wrapped in Any); exported for tests and admin tooling. */
  encodeSecret(entry: SecretEntry, name: string, format: BundleFormat): Uint8Array {
    const Secret = messageType(this.api.secretMessage);
    const value = entry.value;
    const secret: WireSecret =
      value.kind === 'tls-certificate'
        ? {
            name,
            tls_certificate: {
              certificate_chain: { inline_bytes: Buffer.from(value.certificateChainPem) },
              private_key: { inline_bytes: Buffer.from(value.privateKeyPem) },
            },
          }
        : { name, validation_context: this.validationContext(value, format) };
    return Secret.encode(Secret.fromObject(secret)).finish();
  }

  /** v3 type; v2 gets only `trusted_ca`, which it shares (supportsSpiffeValidator is false there). */
  private validationContext(value: TrustBundleValue, format: BundleFormat): CertificateValidationContext {
    const spiffe = format === 'spiffe' && this.api.supportsSpiffeValidator && value.bundles.every((b) => b.trustDomain);
    if (!spiffe) {
      return { trusted_ca: { inline_bytes: Buffer.from(value.bundles.flatMap((b) => b.rootsPem).join('')) } };
    }
    const Config = messageType('envoy.extensions.transport_sockets.tls.v3.SPIFFECertValidatorConfig');
    const config: SPIFFECertValidatorConfig = {
      trust_domains: value.bundles.map((b) => ({
        name: b.trustDomain,
        trust_bundle: { inline_bytes: Buffer.from(b.rootsPem.join('')) },
      })),
    };
    return {
      custom_validator_config: {
        name: SPIFFE_VALIDATOR_NAME,
        typed_config: { type_url: SPIFFE_VALIDATOR_TYPE_URL, value: Config.encode(Config.fromObject(config)).finish() },
      },
    };
  }
}
