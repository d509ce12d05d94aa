import type { BundleFormat, NodeInfo } from './types.js';

/** Server-wide choice: `auto` decides per Envoy, the others force one form. */
export type BundleFormatSetting = 'auto' | BundleFormat;

/** Node metadata key that forces `trusted_ca` for one Envoy (the key SPIRE uses). */
export const DISABLE_SPIFFE_METADATA_KEY = 'disable_spiffe_cert_validation';

/**
 * Picks the bundle form for one Envoy, as SPIRE does: the SPIFFE certificate validator for
 * Envoy >= 1.18 or an unknown version; `trusted_ca` for older Envoys (they lack the validator)
 * or when the node's metadata sets `disable_spiffe_cert_validation: true`.
 */
export function bundleFormatFor(setting: BundleFormatSetting, node: NodeInfo | undefined): BundleFormat {
  if (setting !== 'auto') return setting;
  const flag = node?.metadata[DISABLE_SPIFFE_METADATA_KEY];
  if (flag === true || flag === 'true') return 'trusted-ca';
  const match = /^(\d+)\.(\d+)/.exec(node?.userAgentVersion ?? '');
  if (!match) return 'spiffe';
  const major = Number(match[1]);
  const minor = Number(match[2]);
  return major > 1 || (major === 1 && minor >= 18) ? 'spiffe' : 'trusted-ca';
}
