/**
 * Validates the CA files of a trust bundle (Envoy's validation context `trusted_ca`).
 * Expired roots are kept with a warning: they are harmless, and dropping them silently would
 * hide the operator's mistake. Only a bundle in which every root has expired is refused.
 */
import { X509Certificate } from 'node:crypto';
import { ErrorCode, fail, ok, type Problem, type Result } from '../core/errors.js';
import { describeCertificate } from '../x509/certificate-info.js';
import { labelForMessage, parsePem } from '../x509/pem.js';
import { isTrustDomainName } from '../x509/spiffe.js';
import type { CertificateInfo, TrustBundleValue, TrustDomainBundle } from './secret.js';

export interface TrustBundleInput {
  files: { file: string; text: string }[];
  /** Trust domain name without scheme, e.g. `example.org`. */
  trustDomain?: string;
  now?: Date;
}

interface Root {
  file: string;
  pem: string;
  info: CertificateInfo;
}

export function validateTrustBundle(input: TrustBundleInput): Result<TrustBundleValue> {
  const now = input.now ?? new Date();
  const warnings: Problem[] = [];
  if (input.trustDomain !== undefined && !isTrustDomainName(input.trustDomain)) {
    return fail(ErrorCode.ConfigInvalid, `trust domain "${input.trustDomain}" is not a valid SPIFFE trust domain name`);
  }

  const roots: Root[] = [];
  const seen = new Set<string>();
  for (const { file, text } of input.files) {
    const fileRoots = readRoots(file, text, warnings);
    if (!fileRoots.ok) return { ok: false, problem: fileRoots.problem };
    for (const root of fileRoots.value) {
      const key = root.der.toString('base64');
      if (seen.has(key)) continue; // same certificate listed twice (in one file or across files)
      seen.add(key);
      roots.push({ file, pem: root.pem, info: root.info });
    }
  }
  if (roots.length === 0) {
    const names = input.files.map((f) => f.file).join(', ');
    return fail(ErrorCode.BundleEmpty, `trust bundle${names ? ` (${names})` : ''} contains no certificates`);
  }

  const expired = roots.filter((r) => now.getTime() > r.info.notAfter.getTime());
  if (expired.length === roots.length) {
    const list = expired.map((r) => `${r.file}: ${r.info.subject} (notAfter ${r.info.notAfter.toISOString()})`);
    const message = `every root in the trust bundle has expired (now ${now.toISOString()}): ${list.join('; ')}`;
    return fail(ErrorCode.CertExpired, message);
  }
  for (const r of expired) {
    warnings.push({
      code: ErrorCode.CertExpired,
      message: `${r.file}: root ${r.info.subject} expired (notAfter ${r.info.notAfter.toISOString()}, now ${now.toISOString()})`,
    });
  }
  for (const r of roots.filter((r) => now.getTime() < r.info.notBefore.getTime())) {
    warnings.push({
      code: ErrorCode.CertNotYetValid,
      message: `${r.file}: root ${r.info.subject} is not valid yet (notBefore ${r.info.notBefore.toISOString()}, now ${now.toISOString()})`,
    });
  }

  const bundle: TrustDomainBundle = {
    ...(input.trustDomain !== undefined ? { trustDomain: input.trustDomain } : {}),
    rootsPem: roots.map((r) => r.pem),
    roots: roots.map((r) => r.info),
  };
  return ok({ kind: 'trust-bundle', bundles: [bundle] }, warnings);
}

/** The certificates of one file; each file must be non-empty, well-formed and hold at least one. */
function readRoots(
  file: string,
  text: string,
  warnings: Problem[],
): Result<{ pem: string; der: Buffer; info: CertificateInfo }[]> {
  if (text.trim() === '') return fail(ErrorCode.FileEmpty, `${file}: trust bundle file is empty`);
  const pem = parsePem(text);
  if (pem.malformed.length > 0) {
    return fail(ErrorCode.PemInvalid, `${file}: malformed PEM: ${pem.malformed.join('; ')}`);
  }
  const roots: { pem: string; der: Buffer; info: CertificateInfo }[] = [];
  for (const block of pem.blocks) {
    if (block.label !== 'CERTIFICATE') {
      const what = labelForMessage(block.label);
      warnings.push({ code: ErrorCode.PemInvalid, message: `${file}: ignored a ${what} block in the trust bundle` });
      continue;
    }
    let cert: X509Certificate;
    try {
      cert = new X509Certificate(block.der);
    } catch {
      return fail(ErrorCode.PemInvalid, `${file}: certificate #${roots.length + 1} is not a valid X.509 certificate`);
    }
    roots.push({ pem: block.pem, der: block.der, info: describeCertificate(cert) });
  }
  if (roots.length === 0) return fail(ErrorCode.PemInvalid, `${file}: contains no CERTIFICATE PEM block`);
  return ok(roots);
}
