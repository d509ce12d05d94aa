import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { TransportLimits } from '../server/connection-guard.js';
import { parseArgs } from 'node:util';
import { ErrorCode, SdsError } from '../core/errors.js';
import {
  describe,
  pastedContentProblem,
  BUNDLE_FORMATS,
  FILE_MODE_PROBLEM,
  LOG_FORMATS,
  LOG_LEVELS,
  defaultConfig,
  defaultIdentity,
  loadConfig,
  parseConfigFile,
  parseAdminAddress,
  parseDurationSeconds,
  parseFileMode,
  type ServerConfig,
} from './config.js';
import { X509Certificate } from 'node:crypto';
import { isTrustDomainName, parseSpiffeId } from '../x509/spiffe.js';
import { splitPem } from '../x509/pem.js';
import { MAX_SECRET_FILE_BYTES } from '../core/read-secret-file.js';
import { MAX_DURATION_SECONDS, MAX_TIMER_MS } from '../core/config-schema.js';
import { describeCertificate } from '../x509/certificate-info.js';

export const USAGE = `Usage: sds-server [options]
       sds-server doctor --admin ADDR [--client NAME --server NAME [--expect-san SAN]] [--envoy-admin URL]... [--json]
       sds-server check [--config FILE | --cert FILE --key FILE [--ca FILE]]
       sds-server fetch NAME [--socket PATH] [--json]
       sds-server status --admin ADDR [--json]

Envoy Secret Discovery Service (v3 and v2) on a Unix domain socket.

Where secrets come from (with none, the embedded CA issues spiffe://example.org/sds-server):
  --cert FILE --key FILE [--ca FILE]  serve one identity and its trust bundle from watched files
  --config FILE                       YAML configuration for many secrets (see docs/configuration.md)
  --watch-config                      reload the --config file when it changes (SIGHUP always reloads it)

Socket:
  --socket PATH          socket path (default: $APPMESH_SDS_SOCKET_PATH, else $XDG_RUNTIME_DIR/sds-server/sds.sock,
                         else <tmpdir>/sds-server-<uid>/sds.sock)
  --socket-mode MODE     octal mode of the socket file (default 0660)
  --socket-group GROUP   group (name or gid) owning the socket file (and the socket directory, when created)
  --allow-shared-socket-dir
                         start (with a warning) even if other users can write the socket directory,
                         e.g. a Kubernetes emptyDir shared inside a pod; they could replace the socket

Transport limits (each logs, rate-limited, when it acts; also socket.limits in the config file):
  --preface-timeout MS   close a connection that sends no HTTP/2 preface within MS (default 5000)
  --max-connections N    connections open at once; the excess is closed at accept (default 8192)
  --max-connections-per-uid N
                         connections open at once from one uid, while attestation is on; the excess
                         is closed at accept (default 1024)
  --max-streams-per-connection N
                         concurrent streams per connection; HTTP/2 refuses the excess (default 1024)
  --ping-interval MS     PING every connection every MS and close it when no answer comes within
                         5000 ms (frees stalled peers and failed sessions; default 60000, 0 = off)

Identity and names:
  --spiffe-id ID         name of the --cert identity, or the identity the embedded CA issues
                         (default: from the certificate / spiffe://<trust domain>/sds-server)
  --trust-domain TD      trust domain of the --ca bundle / the embedded CA (default: from the certificate / example.org)
  --data-dir DIR         where the embedded CA keeps its root (default: $XDG_DATA_HOME or ~/.local/share, /sds-server)
  --cert-lifetime DUR    lifetime of issued certificates, e.g. 90s, 15m, 1h (default 1h; renewed at half)
  --bundle-format FMT    auto | spiffe | trusted-ca (default auto: SPIFFE validator for Envoy >= 1.18)

Commands:
  sds-server status --admin ADDR [--json]   who holds what: one row per open stream (reads /clients)

Operations:
  --admin ADDR           serve /healthz, /ready, /status, /streams, /clients, /certificates and /metrics
                         on host:port (e.g. 127.0.0.1:15001) or a Unix socket unix:/path (mode 0600)
  --log-format FMT       json | text (default json)
  --log-level LEVEL      debug | info | warn | error (default info)
  --poll-interval MS     re-read watched files every MS milliseconds as a safety net (default 10000, 0 = off)
  -h, --help             show this help
  --version              print the version
`;

export type Command = { kind: 'help' } | { kind: 'version' } | { kind: 'run'; config: ServerConfig; configFile?: string; watchConfig?: boolean };

/**
 * Parses the command line (and the --config file it names) into a validated configuration.
 * `read.configText`: the --config file's text, already read (a reload reads it without blocking).
 */
export function parseCommandLine(argv: string[], env: NodeJS.ProcessEnv = process.env, read: { configText?: string } = {}): Command {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      strict: true,
      allowPositionals: false,
      options: {
        config: { type: 'string' },
        'watch-config': { type: 'boolean' },
        cert: { type: 'string' },
        key: { type: 'string' },
        ca: { type: 'string', multiple: true },
        socket: { type: 'string' },
        'socket-mode': { type: 'string' },
        'socket-group': { type: 'string' },
        'allow-shared-socket-dir': { type: 'boolean' },
        'preface-timeout': { type: 'string' },
        'max-connections': { type: 'string' },
        'max-connections-per-uid': { type: 'string' },
        'max-streams-per-connection': { type: 'string' },
        'ping-interval': { type: 'string' },
        'spiffe-id': { type: 'string' },
        'trust-domain': { type: 'string' },
        'bundle-format': { type: 'string' },
        'data-dir': { type: 'string' },
        'cert-lifetime': { type: 'string' },
        admin: { type: 'string' },
        'log-format': { type: 'string' },
        'log-level': { type: 'string' },
        'poll-interval': { type: 'string' },
        help: { type: 'boolean', short: 'h' },
        version: { type: 'boolean' },
      },
    });
  } catch (err) {
    throw new SdsError(ErrorCode.ConfigInvalid, `${describeArgsError(err)}\n\n${USAGE}`);
  }
  const v = parsed.values;
  if (v.help) return { kind: 'help' };
  if (v.version) return { kind: 'version' };

  const check = new FlagProblems();
  let config: ServerConfig;
  // A value holding file content (a pasted PEM key) is refused before it is used or echoed anywhere.
  for (const [option, raw] of Object.entries(v)) {
    const values = typeof raw === 'string' ? [raw] : Array.isArray(raw) ? raw : [];
    values.forEach((value, i) => {
      const pasted = pastedContentProblem(value);
      const flag = `--${option}${values.length > 1 ? `[${i}]` : ''}`;
      if (pasted) throw new SdsError(ErrorCode.ConfigInvalid, `invalid command line:\n  - command line: ${flag}: ${pasted} (got ${describe(value)})`);
    });
  }
  // A reload passes the text it read without blocking (readConfigFile); start-up reads it here.
  if (v.config === undefined) config = defaultConfig();
  else config = read.configText !== undefined ? parseConfigFile(read.configText, v.config) : loadConfig(v.config);

  if (v.cert !== undefined || v.key !== undefined || v.ca !== undefined) {
    if (v.config !== undefined) check.problem('--cert/--key/--ca', 'cannot be combined with --config (list the files in the config instead)');
    if (v.cert === undefined || v.key === undefined) check.problem('--cert/--key', 'both are required to serve an identity');
    else quickMode(config, { cert: v.cert, key: v.key, ca: v.ca ?? [], spiffeId: v['spiffe-id'], trustDomain: v['trust-domain'] }, check);
  } else {
    embeddedDefaults(config, { trustDomain: v['trust-domain'], spiffeId: v['spiffe-id'], dataDir: v['data-dir'], lifetime: v['cert-lifetime'] }, env, check);
  }

  const socketPath = v.socket || config.socket.path || env.APPMESH_SDS_SOCKET_PATH || undefined;
  if (socketPath) config.socket.path = socketPath;
  if (v['socket-mode'] !== undefined) {
    const mode = parseFileMode(v['socket-mode']);
    if (mode === undefined) check.problem('--socket-mode', `${FILE_MODE_PROBLEM}, got ${describe(v['socket-mode'])}`);
    else config.socket.mode = mode;
  }
  if (v['socket-group'] !== undefined) config.socket.group = v['socket-group'];
  if (v['allow-shared-socket-dir']) config.socket.allowSharedDirectory = true;
  const limits: Array<[string | undefined, string, keyof TransportLimits, number]> = [
    [v['preface-timeout'], '--preface-timeout', 'prefaceTimeoutMs', 1],
    [v['max-connections'], '--max-connections', 'maxConnections', 1],
    [v['max-connections-per-uid'], '--max-connections-per-uid', 'maxConnectionsPerUid', 1],
    [v['max-streams-per-connection'], '--max-streams-per-connection', 'maxStreamsPerConnection', 1],
    [v['ping-interval'], '--ping-interval', 'pingIntervalMs', 0],
  ];
  for (const [raw, flag, key, min] of limits) {
    if (raw === undefined) continue;
    const n = Number(raw);
    // At most Node's timer limit: the MS flags are timer delays (a longer one fires after 1 ms).
    if (!/^\d+$/.test(raw) || !Number.isSafeInteger(n) || n < min || n > MAX_TIMER_MS) check.problem(flag, `expected an integer >= ${min} and <= ${MAX_TIMER_MS}, got ${JSON.stringify(raw)}`);
    else config.socket.limits = { ...config.socket.limits, [key]: n };
  }
  if (v['bundle-format'] !== undefined) config.bundleFormat = check.oneOf(v['bundle-format'], '--bundle-format', BUNDLE_FORMATS) ?? config.bundleFormat;
  if (v['log-format'] !== undefined) config.log.format = check.oneOf(v['log-format'], '--log-format', LOG_FORMATS) ?? config.log.format;
  if (v['log-level'] !== undefined) config.log.level = check.oneOf(v['log-level'], '--log-level', LOG_LEVELS) ?? config.log.level;
  if (v.admin !== undefined) {
    const admin = parseAdminAddress(v.admin);
    if (typeof admin === 'string') check.problem('--admin', admin);
    else config.admin = admin;
  }
  if (v['poll-interval'] !== undefined) {
    const ms = Number(v['poll-interval']);
    if (!Number.isInteger(ms) || ms < 0 || ms > MAX_TIMER_MS) check.problem('--poll-interval', `expected milliseconds >= 0 and <= ${MAX_TIMER_MS}, got ${describe(v['poll-interval'])}`);
    else config.watch.pollIntervalMs = ms;
  }
  if (v['watch-config'] && v.config === undefined) check.problem('--watch-config', 'needs --config (the file to watch)');
  if (check.problems.length > 0) {
    throw new SdsError(ErrorCode.ConfigInvalid, `invalid command line:\n  - ${check.problems.join('\n  - ')}`);
  }
  return { kind: 'run', config, ...(v.config !== undefined ? { configFile: v.config } : {}), ...(v['watch-config'] ? { watchConfig: true } : {}) };
}

/**
 * A node:util parseArgs error without the argument it quotes (an argument starting with `--` may be
 * a pasted `-----BEGIN ... PRIVATE KEY-----`): the option name is kept only when it is a plain flag.
 */
function describeArgsError(err: unknown): string {
  const message = err instanceof Error ? err.message : String(err);
  const quoted = /'([^']*)'/.exec(message)?.[1]?.replace(/ <value>$/, '');
  const shown = quoted === undefined ? '' : /^-{1,2}[A-Za-z][A-Za-z0-9-]{0,40}$/.test(quoted) ? ` ${quoted}` : ` (an argument of ${quoted.length} characters)`;
  const code = (err as { code?: unknown }).code;
  switch (code) {
    case 'ERR_PARSE_ARGS_UNKNOWN_OPTION':
      return `unknown option${shown}`;
    case 'ERR_PARSE_ARGS_UNEXPECTED_POSITIONAL':
      return `unexpected argument${shown}; every value belongs to an option`;
    case 'ERR_PARSE_ARGS_INVALID_OPTION_VALUE':
      return `option${shown} is missing its value, or takes none`;
    default:
      return 'the command line cannot be parsed';
  }
}

/**
 * `--cert --key [--ca]`: one identity and its bundle. The identity is named by --spiffe-id, else by
 * the certificate's own SPIFFE ID when readable now, else `default` (the SPIFFE ID is still learned
 * as an alias once the file is readable). The bundle takes the trust domain the same way: from
 * --trust-domain, the certificate readable now, or, when the files appear later, the certificate
 * once it is read (the bundle waits for it, and requests for either SPIFFE name are held meanwhile).
 */
function quickMode(
  config: ServerConfig,
  q: { cert: string; key: string; ca: string[]; spiffeId: string | undefined; trustDomain: string | undefined },
  check: FlagProblems,
): void {
  let spiffeId = q.spiffeId;
  if (spiffeId !== undefined && !parseSpiffeId(spiffeId)?.path) {
    check.problem('--spiffe-id', 'is not a workload SPIFFE ID (spiffe://trust-domain/path)');
    return;
  }
  spiffeId ??= spiffeIdInFile(q.cert);
  let trustDomain = q.trustDomain;
  if (trustDomain !== undefined && !isTrustDomainName(trustDomain)) {
    check.problem('--trust-domain', 'is not a valid trust domain name (like example.org)');
    return;
  }
  trustDomain ??= spiffeId ? parseSpiffeId(spiffeId)?.trustDomain : undefined;
  config.certificates.push({ name: spiffeId ?? config.aliases.defaultCertificate, cert: q.cert, key: q.key, names: [] });
  if (q.ca.length > 0) {
    const name = trustDomain ? `spiffe://${trustDomain}` : config.aliases.rootBundle;
    // Trust domain unknown until the certificate is read: the bundle takes it from the certificate.
    const certName = config.certificates.at(-1)?.name ?? config.aliases.defaultCertificate;
    config.bundles.push({ name, ca: q.ca, names: [], ...(trustDomain ? { trustDomain } : { trustDomainFromCertificate: certName }) });
  }
}

/**
 * The embedded CA: with nothing configured it issues one identity (`npm start` on a fresh machine);
 * --trust-domain / --spiffe-id / --data-dir / --cert-lifetime adjust it.
 */
function embeddedDefaults(
  config: ServerConfig,
  f: { trustDomain: string | undefined; spiffeId: string | undefined; dataDir: string | undefined; lifetime: string | undefined },
  env: NodeJS.ProcessEnv,
  check: FlagProblems,
): void {
  const hasFiles = config.certificates.length > 0 || config.bundles.length > 0;
  const id = f.spiffeId !== undefined ? parseSpiffeId(f.spiffeId) : undefined;
  if (f.spiffeId !== undefined && (!id || id.path === '')) check.problem('--spiffe-id', 'is not a workload SPIFFE ID (spiffe://trust-domain/path)');
  if (f.trustDomain !== undefined && !isTrustDomainName(f.trustDomain)) check.problem('--trust-domain', 'is not a valid trust domain name (like example.org)');
  let lifetimeSeconds: number | undefined;
  if (f.lifetime !== undefined) {
    lifetimeSeconds = parseDurationSeconds(f.lifetime);
    if (lifetimeSeconds === undefined) check.problem('--cert-lifetime', `expected a duration such as 90s, 15m or 1h, at most ${MAX_DURATION_SECONDS / 86_400}d, got ${describe(f.lifetime)}`);
  }
  const trustDomain = id?.trustDomain ?? f.trustDomain;
  if (trustDomain) config.ca.trustDomain = trustDomain;
  const templated = config.authorization.identityTemplate !== undefined;
  if (config.identities.length === 0 && !hasFiles && !templated) {
    config.identities.push({
      ...defaultIdentity(config.ca.trustDomain, lifetimeSeconds),
      ...(id && f.spiffeId ? { spiffeId: f.spiffeId } : {}),
    });
  } else if (lifetimeSeconds !== undefined) {
    for (const identity of config.identities) identity.lifetimeSeconds = lifetimeSeconds;
  }
  if (lifetimeSeconds !== undefined && templated) config.authorization.onDemandLifetimeSeconds = lifetimeSeconds;
  if ((config.identities.length > 0 || templated) && config.ca.backend === 'embedded' && !config.ca.embedded.dataDir && !config.ca.embedded.caCert) {
    config.ca.embedded.dataDir = f.dataDir ?? defaultDataDir(env, config.ca.trustDomain);
  } else if (f.dataDir !== undefined) {
    config.ca.embedded.dataDir = f.dataDir;
  }
}

/** `$XDG_DATA_HOME/sds-server/ca/<trust domain>`, else `~/.local/share/...`: writable without root. */
export function defaultDataDir(env: NodeJS.ProcessEnv, trustDomain: string): string {
  const base = env.XDG_DATA_HOME || path.join(os.homedir(), '.local', 'share');
  return path.join(base, 'sds-server', 'ca', trustDomain);
}

function spiffeIdInFile(certFile: string): string | undefined {
  try {
    // Same cap as the file source: an oversized or special file is left for it to report.
    const stats = fs.statSync(certFile);
    if (!stats.isFile() || stats.size > MAX_SECRET_FILE_BYTES) return undefined;
    const [leaf] = splitPem(fs.readFileSync(certFile, 'utf8')).filter((b) => b.label === 'CERTIFICATE');
    return leaf ? describeCertificate(new X509Certificate(leaf.der)).spiffeId : undefined;
  } catch {
    return undefined; // not readable yet: the SPIFFE ID is learned as an alias once it is
  }
}

/** Problems with the command line, collected so that all are reported at once. */
class FlagProblems {
  readonly problems: string[] = [];

  problem(flag: string, message: string): void {
    this.problems.push(`command line: ${flag}: ${message}`);
  }

  /** `value` if it is one of `allowed`; else a problem (the value shown by type and length only). */
  oneOf<T extends string>(value: string, flag: string, allowed: readonly T[]): T | undefined {
    if ((allowed as readonly string[]).includes(value)) return value as T;
    this.problem(flag, `expected one of ${allowed.join(', ')}, got ${describe(value)}`);
    return undefined;
  }
}
