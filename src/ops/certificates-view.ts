/**
 * The admin endpoint's `GET /certificates`: every served certificate chain and every served trust
 * bundle's roots, as PEM plus a summary, and the admin's own clock (`now`) so `sds-server doctor`
 * can tell clock skew from expiry. Public material only: the private key of a TLS certificate is
 * never read here (test/certificates-view.test.ts asserts none reaches the output).
 */
import type { SecretStore } from '../secrets/store.js';
import { splitPem } from '../x509/pem.js';
import { summarizeCertificate, type CertificateSummary } from '../x509/certificate-summary.js';

export interface ServedChain {
  /** Canonical secret name, and the other names it answers to. */
  name: string;
  aliases: string[];
  version: string;
  /** Leaf first, PEM, one entry per certificate. */
  chainPem: string[];
  chain: CertificateSummary[];
}

export interface ServedBundle {
  name: string;
  aliases: string[];
  version: string;
  trustDomains: Array<{ trustDomain?: string; rootsPem: string[]; roots: CertificateSummary[] }>;
}

export interface CertificatesView {
  /** The admin's clock, ISO 8601. */
  now: string;
  certificates: ServedChain[];
  bundles: ServedBundle[];
}

/**
 * Builds the view from the store for the canonical `names` (those the sources declared); names
 * with nothing served yet are left out.
 */
export function buildCertificatesView(store: SecretStore, names: string[], now: Date = new Date()): CertificatesView {
  const view: CertificatesView = { now: now.toISOString(), certificates: [], bundles: [] };
  for (const name of names) {
    const entry = store.get(name);
    if (!entry) continue;
    const aliases = store.aliasesOf(name);
    const value = entry.value;
    if (value.kind === 'tls-certificate') {
      // Only the chain: value.privateKeyPem is deliberately never touched.
      const chainPem = splitPem(value.certificateChainPem)
        .filter((b) => b.label === 'CERTIFICATE')
        .map((b) => b.pem);
      view.certificates.push({ name, aliases, version: entry.version, chainPem, chain: chainPem.map((p) => summarizeCertificate(p)) });
    } else {
      view.bundles.push({
        name,
        aliases,
        version: entry.version,
        trustDomains: value.bundles.map((b) => ({
          ...(b.trustDomain ? { trustDomain: b.trustDomain } : {}),
          rootsPem: b.rootsPem,
          roots: b.rootsPem.map((p) => summarizeCertificate(p)),
        })),
      });
    }
  }
  return view;
}
