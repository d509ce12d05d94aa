/**
 * `sds-server check --config FILE` (or the quick-mode options): validates the configuration and
 * every file it names -- certificate chains with their keys, bundles, a served leaf against the
 * bundle of its trust domain, CA key and credential files -- without binding a socket or starting
 * anything. Exit 0 when all is well (warnings are printed), 2 when anything would fail.
 * Messages come from the same validators the server uses, so they never contain key material.
 */
import { access, constants } from 'node:fs/promises';
import { ErrorCode, SdsError, type Problem } from '../core/errors.js';
import { readSecretFile } from '../core/read-secret-file.js';
import { validateTlsCertificate } from '../secrets/validate-tls-certificate.js';
import { validateTrustBundle } from '../secrets/validate-trust-bundle.js';
import { checkLeafInBundle, type NamedBundle } from '../secrets/validate-leaf-in-bundle.js';
import type { TlsCertificateValue, TrustBundleValue } from '../secrets/secret.js';
import { resolveGroup } from '../server/unix-socket.js';
import type { BundleConfig, CertificateConfig } from './config.js';
import { parseCommandLine } from './args.js';
import { caFilesToRead } from '../ca/ca-config.js';

const CHECK_USAGE = `Usage: sds-server check --config FILE
       sds-server check --cert FILE --key FILE [--ca FILE]
Validates the configuration and every file it names (chains, keys, bundles, a leaf against its
bundle, CA files) without starting anything. Exit 0 when all is well, 2 otherwise.
`;

export interface CheckResult {
  ok: boolean;
  /** One line per thing checked that passed. */
  passed: string[];
  problems: Problem[];
  warnings: Problem[];
}

/** Checks the configuration the command line names (same options as the server). */
export async function runCheck(argv: string[], now: Date = new Date()): Promise<CheckResult> {
  const result: CheckResult = { ok: true, passed: [], problems: [], warnings: [] };
  let command;
  try {
    command = parseCommandLine(argv);
  } catch (err) {
    if (!(err instanceof SdsError)) throw err;
    result.problems.push({ code: err.code, message: err.message });
    result.ok = false;
    return result;
  }
  if (command.kind !== 'run') return result;
  const config = command.config;
  result.passed.push(`configuration ${command.configFile ?? '(command line)'} parses`);
  // The server resolves the socket group before it binds; a group that does not exist stops it.
  if (config.socket.group !== undefined) {
    try {
      result.passed.push(`socket group ${config.socket.group} is gid ${await resolveGroup(config.socket.group)}`);
    } catch (err) {
      if (!(err instanceof SdsError)) throw err;
      result.problems.push(err.toProblem());
    }
  }

  const bundles: NamedBundle[] = [];
  for (const b of config.bundles) {
    const v = await checkBundleFiles(b, now);
    if (!v.ok) {
      result.problems.push(...v.problems);
      continue;
    }
    result.warnings.push(...v.warnings);
    bundles.push({ name: b.name, value: v.value });
    result.passed.push(`bundle ${b.name}: ${v.value.bundles.reduce((n, d) => n + d.roots.length, 0)} root(s) from ${b.ca.join(', ')}`);
  }
  const certs: Array<{ file: string; value: TlsCertificateValue }> = [];
  for (const c of config.certificates) {
    const v = await checkCertificateFiles(c, now);
    if (!v.ok) {
      result.problems.push(...v.problems);
      continue;
    }
    result.warnings.push(...v.warnings);
    certs.push({ file: c.cert, value: v.value });
    result.passed.push(`certificate ${c.name}: serial ${v.value.leaf.serialNumber}, valid until ${v.value.leaf.notAfter.toISOString()}`);
  }
  for (const c of certs) {
    const p = checkLeafInBundle(c.value, c.file, bundles);
    if (p) result.problems.push(p);
  }
  // Files the CA backends read at start.
  const usesCa = config.identities.length > 0 || config.authorization.identityTemplate !== undefined;
  for (const [field, file] of usesCa ? caFilesToRead(config.ca) : []) {
    try {
      await access(file, constants.R_OK);
      result.passed.push(`${field} ${file} is readable`);
    } catch (err) {
      result.problems.push({ code: ErrorCode.FileUnreadable, message: `${field}: ${file}: cannot be read (${(err as NodeJS.ErrnoException).code ?? 'error'})` });
    }
  }
  result.ok = result.problems.length === 0;
  return result;
}

/** What checking one configured secret's files gave: its value, or every problem found. */
export type FilesCheck<T> = { ok: true; value: T; warnings: Problem[] } | { ok: false; problems: Problem[] };

/**
 * Reads and validates one `certificates:` entry's cert and key as the file source would (a name
 * that is a SPIFFE ID must match the certificate). Problems name the files, never key content.
 */
export async function checkCertificateFiles(c: CertificateConfig, now: Date): Promise<FilesCheck<TlsCertificateValue>> {
  const [cert, key] = [await readSecretFile(c.cert), await readSecretFile(c.key)];
  if (!cert.ok || !key.ok) return { ok: false, problems: [...(cert.ok ? [] : [cert.problem]), ...(key.ok ? [] : [key.problem])] };
  const v = validateTlsCertificate({
    certificateChainPem: cert.value,
    privateKeyPem: key.value,
    certFile: c.cert,
    keyFile: c.key,
    now,
    ...(c.name.startsWith('spiffe://') ? { expectedSpiffeId: c.name } : {}),
  });
  return v.ok ? v : { ok: false, problems: [v.problem] };
}

/** Reads and validates one `bundles:` entry's CA files as the file source would. */
export async function checkBundleFiles(b: BundleConfig, now: Date): Promise<FilesCheck<TrustBundleValue>> {
  const files: Array<{ file: string; text: string }> = [];
  const problems: Problem[] = [];
  for (const file of b.ca) {
    const r = await readSecretFile(file);
    if (r.ok) files.push({ file, text: r.value });
    else problems.push(r.problem);
  }
  if (problems.length > 0) return { ok: false, problems };
  const v = validateTrustBundle({ files, ...(b.trustDomain ? { trustDomain: b.trustDomain } : {}), now });
  return v.ok ? v : { ok: false, problems: [v.problem] };
}

export function formatCheck(r: CheckResult): string {
  const lines = [`sds-server check: ${r.ok ? 'OK' : 'FAILED'}`];
  for (const p of r.passed) lines.push(`  ok      ${p}`);
  for (const w of r.warnings) lines.push(`  warning ${w.code}: ${w.message}`);
  for (const p of r.problems) lines.push(`  error   ${p.code}: ${p.message}`);
  return lines.join('\n') + '\n';
}

/** The `check` subcommand: exit 0 when the configuration would start cleanly, else 2. */
export async function checkMain(argv: string[], out: (s: string) => void = (s) => process.stdout.write(s)): Promise<number> {
  // Nothing to check, or a request for help: say how to use it (help is not a clean bill).
  if (argv.length === 0 || argv.includes('--help') || argv.includes('-h')) {
    out(CHECK_USAGE);
    return argv.length === 0 ? 2 : 0;
  }
  const r = await runCheck(argv);
  out(formatCheck(r));
  return r.ok ? 0 : 2;
}
