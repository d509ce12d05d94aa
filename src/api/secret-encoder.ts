import type { SecretEntry } from '../secrets/store.js';
import type { TrustBundleValue } from '../secrets/secret.js';
import type { BundleFormat, ResourceEncoder } from '../xds/types.js';
import { messageType } from './proto-root.js';
import { encodeAny, encodeDeltaResponse, encodeSotwResponse } from './response-writer.js';
import { SPIFFE_VALIDATOR_NAME, SPIFFE_VALIDATOR_TYPE_URL, type ApiVersion } from './api-version.js';

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
    if (value.kind === 'tls-certificate') {
      return Secret.encode(
        Secret.fromObject({
          name,
          tlsCertificate: {
            certificateChain: { inlineBytes: Buffer.from(value.certificateChainPem) },
            privateKey: { inlineBytes: Buffer.from(value.privateKeyPem) },
          },
        }),
      ).finish();
    }
    return Secret.encode(Secret.fromObject({ name, validationContext: this.validationContext(value, format) })).finish();
  }

  private validationContext(value: TrustBundleValue, format: BundleFormat): Record<string, unknown> {
    const spiffe = format === 'spiffe' && this.api.supportsSpiffeValidator && value.bundles.every((b) => b.trustDomain);
    if (!spiffe) {
      return { trustedCa: { inlineBytes: Buffer.from(value.bundles.flatMap((b) => b.rootsPem).join('')) } };
    }
    const Config = messageType('envoy.extensions.transport_sockets.tls.v3.SPIFFECertValidatorConfig');
    const config = Config.encode(
      Config.fromObject({
        trustDomains: value.bundles.map((b) => ({
          name: b.trustDomain,
          trustBundle: { inlineBytes: Buffer.from(b.rootsPem.join('')) },
        })),
      }),
    ).finish();
    return {
      customValidatorConfig: {
        name: SPIFFE_VALIDATOR_NAME,
        // protobufjs' bundled google.protobuf.Any keeps its snake_case field names.
        typedConfig: { type_url: SPIFFE_VALIDATOR_TYPE_URL, value: config },
      },
    };
  }
}
