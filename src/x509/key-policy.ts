/**
 * Key types Envoy can serve, checked before publishing so that Envoy never NACKs them.
 * Source of the rule: Envoy `source/common/tls/context_impl.cc` (RSA keys of 2048 bits or more;
 * ECDSA only on P-256, P-384 or P-521; Ed25519), confirmed against the pinned Envoy 1.40 by
 * test/envoy/key-types.test.ts. Node names the curves prime256v1, secp384r1, secp521r1.
 */
export const MIN_RSA_BITS = 2048;
export const ENVOY_EC_CURVES: ReadonlyMap<string, string> = new Map([
  ['prime256v1', 'P-256'],
  ['secp384r1', 'P-384'],
  ['secp521r1', 'P-521'],
]);
