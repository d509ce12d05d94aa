/**
 * Does a served leaf chain to a root of the configured bundle of its own trust domain? If not,
 * every peer that verifies with that bundle fails the handshake (CERTIFICATE_VERIFY_FAILED), so
 * the operator is told, naming the leaf's issuer and the bundle. The leaf is still served: the
 * bundle may be the one that is behind (a CA rollover in progress), and refusing would take the
 * workload down.
 */
import { X509Certificate } from 'node:crypto';
import { ErrorCode, type Problem } from '../core/errors.js';
import { parseSpiffeId } from '../x509/spiffe.js';
import { splitPem } from '../x509/pem.js';
import type { TlsCertificateValue, TrustBundleValue } from './secret.js';

export interface NamedBundle {
  name: string;
  value: TrustBundleValue;
}

/**
 * SDS_ERR_LEAF_NOT_IN_BUNDLE when `cert`'s SPIFFE trust domain has configured bundles and the
 * chain (leaf, then intermediates) reaches none of their roots; undefined when it does, when the
 * leaf has no SPIFFE ID, or when no bundle of that trust domain is configured.
 * `certFile` names the chain in the message.
 */
export function checkLeafInBundle(cert: TlsCertificateValue, certFile: string, bundles: NamedBundle[]): Problem | undefined {
  const trustDomain = cert.leaf.spiffeId === undefined ? undefined : parseSpiffeId(cert.leaf.spiffeId)?.trustDomain;
  if (trustDomain === undefined) return undefined;
  const own = bundles
    .map((b) => ({ name: b.name, roots: b.value.bundles.filter((d) => d.trustDomain === trustDomain).flatMap((d) => d.rootsPem) }))
    .filter((b) => b.roots.length > 0);
  if (own.length === 0) return undefined;

  const chain = splitPem(cert.certificateChainPem).filter((b) => b.label === 'CERTIFICATE').map((b) => new X509Certificate(b.der));
  const leaf = chain[0];
  const top = chain.at(-1);
  if (!leaf || !top) return undefined;
  for (const bundle of own) {
    for (const pem of bundle.roots) {
      const root = new X509Certificate(pem);
      if (chain.some((c) => c.raw.equals(root.raw)) || issuedBy(top, root)) return undefined;
    }
  }
  const names = own.map((b) => b.name).join(', ');
  const rootSubjects = own.flatMap((b) => b.roots.map((pem) => oneLine(new X509Certificate(pem).subject)));
  return {
    code: ErrorCode.LeafNotInBundle,
    message:
      `${certFile}: leaf ${cert.leaf.serialNumber} (${cert.leaf.spiffeId}) is issued by ${oneLine(leaf.issuer)}` +
      `${chain.length > 1 ? ` via ${chain.length - 1} intermediate(s) up to ${oneLine(top.issuer)}` : ''}` +
      `, which is not a root of bundle ${names} (trust domain ${trustDomain}; roots: ${rootSubjects.join('; ')}); ` +
      'peers verifying with that bundle will fail the handshake (CERTIFICATE_VERIFY_FAILED)',
  };
}

function issuedBy(child: X509Certificate, issuer: X509Certificate): boolean {
  try {
    return child.checkIssued(issuer) && child.verify(issuer.publicKey);
  } catch {
    return false;
  }
}

const oneLine = (name: string): string => name.split('\n').join(', ');
