/** Configuration of the CA that issues identities: which backend, and its settings. */
export const CA_BACKENDS = ['embedded', 'aws-pca', 'cfssl'] as const;
export type CaBackendName = (typeof CA_BACKENDS)[number];

export interface CaConfig {
  backend: CaBackendName;
  trustDomain: string;
  /** Extra names of the CA's trust bundle. */
  bundleNames: string[];
  embedded: { dataDir?: string; caCert?: string; caKey?: string };
  awsPca?: { certificateAuthorityArn: string; region?: string; endpoint?: string; signingAlgorithm?: string; templateArn?: string };
  /** cfssl `serve`; the HMAC key is read from a file or an environment variable, never from this config. */
  cfssl?: { url: string; authKeyFile?: string; authKeyEnv?: string; profile?: string; caFile?: string; rootsFile?: string };
  renewFraction: number;
  jitterFraction: number;
  timeoutMs: number;
  backoff: { initialMs: number; maxMs: number };
  bundleRefreshMs: number;
  bundlePropagationMs: number;
}
