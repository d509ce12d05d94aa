/**
 * `sds-server doctor`: reads our admin endpoint's /certificates (and, with --envoy-admin, each
 * Envoy's /certs and /stats) and explains what would make TLS fail, in plain words. Exit 0 when
 * nothing is wrong, 1 when a problem is found, 2 for a command-line error.
 */
import { parseArgs } from 'node:util';
import { readAdmin } from './status-command.js';
import { ErrorCode, SdsError, errorMessage } from '../core/errors.js';
import type { CertificatesView } from '../ops/certificates-view.js';
import {
  checkEnvoy,
  checkPair,
  checkServed,
  clockSkewFindings,
  correlateEnvoyFindings,
  envoyHoldings,
  formatReport,
  parseEnvoyStats,
  report,
  type DoctorReport,
  type EnvoyCertsDump,
  type Finding,
} from '../ops/doctor.js';

export const DOCTOR_USAGE = `Usage: sds-server doctor --admin ADDR [--client NAME --server NAME [--expect-san SAN]]
                         [--envoy-admin URL]... [--json]

Explains a failing or suspect TLS setup; exits 1 when it finds a problem.
  --admin ADDR         our admin endpoint (host:port, http://host:port or unix:/path): checks every served
                       certificate against the bundles of its trust domain (chain, dates, key type)
  --client NAME --server NAME
                       would the client's Envoy accept the server's certificate, and vice versa
                       (names are secret names or SPIFFE IDs)
  --expect-san SAN     the name the client expects of the server (URI such as a SPIFFE ID, or DNS)
  --envoy-admin URL    an Envoy admin (http://127.0.0.1:9901 or unix:/path): reads /certs and /stats (repeatable)
  --json               machine-readable report
`;

export interface DoctorOptions {
  admin?: string;
  client?: string;
  server?: string;
  expectSan?: string;
  envoyAdmins: string[];
  json: boolean;
}

/** Parses doctor's arguments (after the word `doctor`); throws SdsError SDS_ERR_CONFIG_INVALID. */
export function parseDoctorArgs(argv: string[]): DoctorOptions | 'help' {
  let v;
  try {
    v = parseArgs({
      args: argv,
      strict: true,
      allowPositionals: false,
      options: {
        admin: { type: 'string' },
        client: { type: 'string' },
        server: { type: 'string' },
        'expect-san': { type: 'string' },
        'envoy-admin': { type: 'string', multiple: true },
        json: { type: 'boolean' },
        help: { type: 'boolean', short: 'h' },
      },
    }).values;
  } catch (err) {
    throw new SdsError(ErrorCode.ConfigInvalid, `doctor: ${(err as Error).message}\n\n${DOCTOR_USAGE}`);
  }
  if (v.help) return 'help';
  if (v.admin === undefined && (v['envoy-admin'] ?? []).length === 0) throw new SdsError(ErrorCode.ConfigInvalid, `doctor: give --admin and/or --envoy-admin\n\n${DOCTOR_USAGE}`);
  if ((v.client === undefined) !== (v.server === undefined)) throw new SdsError(ErrorCode.ConfigInvalid, 'doctor: --client and --server go together');
  if (v.client !== undefined && v.admin === undefined) throw new SdsError(ErrorCode.ConfigInvalid, 'doctor: --client/--server need --admin');
  if (v['expect-san'] !== undefined && v.client === undefined) throw new SdsError(ErrorCode.ConfigInvalid, 'doctor: --expect-san needs --client and --server');
  return {
    ...(v.admin !== undefined ? { admin: v.admin } : {}),
    ...(v.client !== undefined ? { client: v.client } : {}),
    ...(v.server !== undefined ? { server: v.server } : {}),
    ...(v['expect-san'] !== undefined ? { expectSan: v['expect-san'] } : {}),
    envoyAdmins: v['envoy-admin'] ?? [],
    json: v.json ?? false,
  };
}

/** `host:port`, a URL or `unix:/path`, as a base without a trailing slash. */
export function baseUrl(address: string): string {
  if (address.startsWith('unix:')) return address;
  const withScheme = /^https?:\/\//.test(address) ? address : `http://${address}`;
  return withScheme.replace(/\/+$/, '');
}

/** GET `base` + `pathname`; `base` may be `unix:/path/to/admin.sock` (an admin on a Unix socket). */
async function getText(base: string, pathname: string, timeoutMs: number): Promise<string> {
  if (base.startsWith('https://')) {
    const res = await fetch(`${base}${pathname}`, { signal: AbortSignal.timeout(timeoutMs) });
    if (!res.ok) throw new SdsError(ErrorCode.AdminUnreachable, `GET ${base}${pathname}: HTTP ${res.status}`);
    return res.text();
  }
  // The same reader as `sds-server status`: its errors name the address and the cause
  // (ECONNREFUSED, a timeout), where fetch says only "fetch failed".
  return readAdmin(base, pathname, timeoutMs);
}

/** The reason `url` could not be read, naming the URL once (readAdmin's errors already name it). */
function adminProblem(url: string, err: unknown): string {
  const message = errorMessage(err);
  return message.includes(url) ? message : `cannot read ${url}: ${message}`;
}

/**
 * True when `base`/server_info answers as an Envoy admin does (JSON with `version` and
 * `command_line_options`, Envoy's admin API `ServerInfo`): someone passed Envoy's admin as --admin.
 */
async function looksLikeEnvoyAdmin(base: string, timeoutMs: number): Promise<boolean> {
  try {
    const info = JSON.parse(await getText(base, '/server_info', timeoutMs)) as Record<string, unknown> | null;
    return typeof info?.['version'] === 'string' && typeof info['command_line_options'] === 'object';
  } catch {
    return false;
  }
}

/** Runs every check the options ask for. `now` is this machine's clock. */
export async function runDoctor(o: DoctorOptions, now: () => Date = () => new Date(), timeoutMs = 5_000): Promise<DoctorReport> {
  const checked: string[] = [];
  const findings: Finding[] = [];
  let view: CertificatesView | undefined;
  if (o.admin !== undefined) {
    const url = `${baseUrl(o.admin)}/certificates`;
    try {
      const parsed = JSON.parse(await getText(baseUrl(o.admin), '/certificates', timeoutMs)) as Partial<CertificatesView> | null;
      // Another program on that address (or an older sds-server) answers something else.
      if (typeof parsed?.now !== 'string' || !Array.isArray(parsed.certificates) || !Array.isArray(parsed.bundles)) {
        throw new SdsError(ErrorCode.AdminUnreachable, 'the answer is not an sds-server /certificates report (is this the sds-server admin address?)');
      }
      view = parsed as CertificatesView;
    } catch (err) {
      // A malformed address is a usage error (exit 2); an address that does not answer as our admin
      // is a problem found (exit 1), like an unreadable --envoy-admin.
      if (err instanceof SdsError && err.code === ErrorCode.ConfigInvalid) throw err;
      checked.push(`sds-server admin ${baseUrl(o.admin)}: unreadable`);
      const details = (await looksLikeEnvoyAdmin(baseUrl(o.admin), timeoutMs))
        ? [`${baseUrl(o.admin)}/server_info answers like an Envoy admin: this looks like an Envoy admin; use --envoy-admin ${o.admin}`]
        : [];
      findings.push({ severity: 'problem', cause: 'admin-unreachable', subject: baseUrl(o.admin), summary: `${ErrorCode.AdminUnreachable}: ${adminProblem(url, err)}`, details });
    }
  }
  if (view !== undefined && o.admin !== undefined) {
    const adminNow = new Date(view.now);
    checked.push(
      `sds-server admin ${baseUrl(o.admin)}: ${view.certificates.length} certificate(s) (${view.certificates.map((c) => c.name).join(', ') || 'none'}), ` +
        `${view.bundles.length} bundle(s) (${view.bundles.map((b) => b.name).join(', ') || 'none'}); admin clock ${view.now}`,
    );
    findings.push(...clockSkewFindings(adminNow, now()));
    if (o.client !== undefined && o.server !== undefined) {
      checked.push(`pair: client ${o.client} -> server ${o.server}${o.expectSan ? ` expecting SAN ${o.expectSan}` : ''}, and back`);
      findings.push(...checkPair(view, o.client, o.server, o.expectSan, adminNow));
    } else {
      findings.push(...checkServed(view, adminNow));
    }
  }
  for (const envoy of o.envoyAdmins) {
    const base = baseUrl(envoy);
    try {
      const [certs, stats] = await Promise.all([getText(base, '/certs', timeoutMs), getText(base, '/stats', timeoutMs)]);
      const dump = JSON.parse(certs) as EnvoyCertsDump;
      const holds = view ? envoyHoldings(dump, view) : [];
      checked.push(`Envoy admin ${base}: /certs and /stats${holds.length > 0 ? `; ${holds.join('; ')}` : ''}`);
      findings.push(...checkEnvoy(base, dump, parseEnvoyStats(stats), view));
    } catch (err) {
      checked.push(`Envoy admin ${base}: unreadable`);
      findings.push({ severity: 'problem', cause: 'envoy-unreachable', subject: base, summary: (err as Error).message, details: [] });
    }
  }
  return report(checked, correlateEnvoyFindings(findings));
}

/** The `doctor` subcommand: prints the report, returns the exit code. */
export async function doctorMain(argv: string[], out: (s: string) => void = (s) => process.stdout.write(s)): Promise<number> {
  const opts = parseDoctorArgs(argv);
  if (opts === 'help') {
    out(DOCTOR_USAGE);
    return 0;
  }
  const r = await runDoctor(opts);
  out(opts.json ? JSON.stringify(r, null, 2) + '\n' : formatReport(r));
  return r.ok ? 0 : 1;
}
