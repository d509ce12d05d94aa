import type { TransportLimits } from '../server/connection-guard.js';
import path from 'node:path';
import { parse as parseYaml } from 'yaml';
import { ErrorCode, SdsError } from '../core/errors.js';
import type { LogFormat, LogLevel } from '../core/logger.js';
import type { BundleFormatSetting } from '../xds/bundle-format.js';
import type { AliasNames } from '../secrets/store.js';
import { isTrustDomainName, parseSpiffeId } from '../x509/spiffe.js';
import { DEFAULT_EXPIRY_WARNING_MS } from '../secrets/expiry.js';
import { IdentityTemplate } from '../authorization/entitlements.js';
import { CA_BACKENDS, type CaBackendName, type CaConfig } from '../ca/ca-config.js';

export { CA_BACKENDS, type CaBackendName, type CaConfig };

/**
 * The server configuration, as read from YAML (`--config`) and command-line flags.
 * Validation collects every problem at once and names the file and field of each.
 */
export interface CertificateConfig {
  name: string;
  cert: string;
  key: string;
  names: string[];
}

export interface BundleConfig {
  name: string;
  ca: string[];
  trustDomain?: string;
  /** Quick mode: take the trust domain from this certificate's SPIFFE ID once it is read. */
  trustDomainFromCertificate?: string;
  names: string[];
}

export interface ServerConfig {
  socket: { path?: string; mode: number; group?: string; limits?: Partial<TransportLimits>; allowSharedDirectory?: boolean };
  bundleFormat: BundleFormatSetting;
  aliases: AliasNames;
  defaultCertificate?: string;
  rootBundle?: string;
  watch: { debounceMs: number; pollIntervalMs: number };
  /**
   * Warn this long (ms) before a served certificate expires, or in the last third of its lifetime
   * if that is shorter (config `expiryWarning`, a duration; default 24h). See src/secrets/expiry.ts.
   */
  expiryWarningMs: number;
  log: { format: LogFormat; level: LogLevel };
  /** Admin listener: TCP `host:port`, or a Unix socket (`unix:/path`, mode 0600 by default). */
  admin?: AdminAddress;
  certificates: CertificateConfig[];
  bundles: BundleConfig[];
  /** The CA that issues `identities` (the embedded CA by default). */
  ca: CaConfig;
  /** Identities issued by the CA. When nothing at all is configured, one default identity is issued. */
  identities: IdentityConfig[];
  /** Who may receive which identity; see `AuthorizationConfig`. */
  authorization: AuthorizationConfig;
}

/**
 * Workload authorization (issue 11). Off (`enabled: false`) when the config has neither
 * `workloads` nor `identityTemplate`: then every process that can open the socket gets every secret.
 */
export interface AuthorizationConfig {
  enabled: boolean;
  /** `workloads:` entries: a caller whose selectors include all of `selectors` may receive `identities`. */
  workloads: Array<{ selectors: string[]; identities: string[] }>;
  /** `identityTemplate:` e.g. `spiffe://{trustDomain}/ns/{k8s:ns}/sa/{k8s:sa}`: issued on demand by the CA. */
  identityTemplate?: string;
  /** `onDemandIdleSeconds:` drop an on-demand identity this long after its last stream is gone (default 300). */
  onDemandIdleSeconds: number;
  /** `onDemandLifetime:` lifetime of on-demand identities (default 1h; `--cert-lifetime` too). */
  onDemandLifetimeSeconds: number;
  /** `attestation.kubernetes:` turns on the Kubernetes workload attestor (`k8s:*` selectors); the unix attestor always runs. */
  kubernetes?: KubernetesAttestorConfig;
}

/** The Kubernetes attestor's kubelet access (SPIRE's k8s workload attestor settings). */
export interface KubernetesAttestorConfig {
  /** Default https://127.0.0.1:10250 (needs hostNetwork); http://127.0.0.1:10255 is the read-only port. */
  kubeletUrl?: string;
  /** Default the pod's service-account token. */
  tokenFile?: string;
  /** CA of the kubelet's serving certificate; default the service-account CA. */
  caFile?: string;
  skipKubeletVerification?: boolean;
  /** Where `<pid>/cgroup` is read; default /proc (the host's: hostPID: true). */
  procRoot?: string;
}

export const KEY_TYPES = ['ec-p256', 'ec-p384', 'rsa-2048'] as const;

export interface IdentityConfig {
  spiffeId: string;
  dnsNames: string[];
  keyType: (typeof KEY_TYPES)[number];
  lifetimeSeconds: number;
  names: string[];
}

export const DEFAULTS = {
  socketMode: 0o660,
  debounceMs: 0,
  pollIntervalMs: 10_000,
  trustDomain: 'example.org',
  lifetimeSeconds: 3600,
  onDemandIdleSeconds: 300,
} as const;

export function defaultConfig(): ServerConfig {
  return {
    socket: { mode: DEFAULTS.socketMode },
    bundleFormat: 'auto',
    aliases: { defaultCertificate: 'default', rootBundle: 'ROOTCA', allBundles: 'ALL' },
    watch: { debounceMs: DEFAULTS.debounceMs, pollIntervalMs: DEFAULTS.pollIntervalMs },
    expiryWarningMs: DEFAULT_EXPIRY_WARNING_MS,
    log: { format: 'json', level: 'info' },
    certificates: [],
    bundles: [],
    ca: {
      backend: 'embedded',
      trustDomain: DEFAULTS.trustDomain,
      bundleNames: [],
      embedded: {},
      renewFraction: 0.5,
      jitterFraction: 0.05,
      timeoutMs: 10_000,
      backoff: { initialMs: 1000, maxMs: 60_000 },
      bundleRefreshMs: 60_000,
      bundlePropagationMs: 2000,
    },
    identities: [],
    authorization: { enabled: false, workloads: [], onDemandIdleSeconds: DEFAULTS.onDemandIdleSeconds, onDemandLifetimeSeconds: DEFAULTS.lifetimeSeconds },
  };
}

/** The identity issued when nothing is configured: `npm start` on a fresh machine. */
export function defaultIdentity(trustDomain: string, lifetimeSeconds: number = DEFAULTS.lifetimeSeconds): IdentityConfig {
  return { spiffeId: `spiffe://${trustDomain}/sds-server`, dnsNames: [], keyType: 'ec-p256', lifetimeSeconds, names: [] };
}

/** Parses `90`, `90s`, `15m`, `1h`, `2d` into seconds. */
export function parseDurationSeconds(value: unknown): number | undefined {
  if (typeof value === 'number' && Number.isInteger(value) && value > 0) return value;
  if (typeof value !== 'string') return undefined;
  const match = /^(\d+)\s*(s|m|h|d)?$/.exec(value.trim());
  if (!match) return undefined;
  const n = Number(match[1]);
  const unit = { s: 1, m: 60, h: 3600, d: 86400 }[match[2] as 's' | 'm' | 'h' | 'd' | undefined ?? 's'];
  return n > 0 ? n * unit : undefined;
}

type Json = unknown;

/** Reads a field checker's view of a YAML mapping, recording problems as `file: field: message`. */
class Checker {
  readonly problems: string[] = [];
  constructor(private readonly file: string) {}

  problem(field: string, message: string): void {
    this.problems.push(`${this.file}: ${field}: ${message}`);
  }

  object(value: Json, field: string): Record<string, Json> | undefined {
    if (value === undefined || value === null) return undefined;
    if (typeof value !== 'object' || Array.isArray(value)) {
      this.problem(field, `expected a mapping, got ${describe(value)}`);
      return undefined;
    }
    return value as Record<string, Json>;
  }

  string(value: Json, field: string, opts: { required?: boolean } = {}): string | undefined {
    if (value === undefined || value === null) {
      if (opts.required) this.problem(field, 'is required');
      return undefined;
    }
    if (typeof value !== 'string' || value === '') {
      this.problem(field, `expected a non-empty string, got ${describe(value)}`);
      return undefined;
    }
    const pasted = pastedContentProblem(value);
    if (pasted) {
      this.problem(field, `${pasted} (got ${describe(value)})`);
      return undefined;
    }
    return value;
  }

  stringList(value: Json, field: string): string[] {
    if (value === undefined || value === null) return [];
    const list = typeof value === 'string' ? [value] : value;
    if (!Array.isArray(list)) {
      this.problem(field, `expected a string or a list of strings, got ${describe(value)}`);
      return [];
    }
    return list.flatMap((item, i) => this.string(item, `${field}[${i}]`) ?? []);
  }

  integer(value: Json, field: string, min: number): number | undefined {
    if (value === undefined || value === null) return undefined;
    if (typeof value !== 'number' || !Number.isInteger(value) || value < min) {
      this.problem(field, `expected an integer >= ${min}, got ${describe(value)}`);
      return undefined;
    }
    return value;
  }

  oneOf<T extends string>(value: Json, field: string, allowed: readonly T[]): T | undefined {
    if (value === undefined || value === null) return undefined;
    if (typeof value !== 'string' || !(allowed as readonly string[]).includes(value)) {
      this.problem(field, `expected one of ${allowed.join(', ')}, got ${describe(value)}`);
      return undefined;
    }
    return value as T;
  }

  unknownKeys(obj: Record<string, Json>, field: string, known: readonly string[]): void {
    for (const key of Object.keys(obj)) {
      const shown = describeKey(key);
      if (!known.includes(key)) this.problem(field ? `${field}.${shown}` : shown, `unknown field (expected one of ${known.join(', ')})`);
    }
  }
}

export const BUNDLE_FORMATS = ['auto', 'spiffe', 'trusted-ca'] as const;
export const LOG_FORMATS = ['json', 'text'] as const;
export const LOG_LEVELS = ['debug', 'info', 'warn', 'error'] as const;

/** Parses a file mode given as an octal string ("0660") or a YAML number written in octal (0o660). */
export function parseMode(value: Json, field: string, check: Checker): number | undefined {
  if (value === undefined || value === null) return undefined;
  if (typeof value === 'number' && Number.isInteger(value) && value >= 0 && value <= 0o777) return value;
  if (typeof value === 'string' && /^0?o?[0-7]{3,4}$/.test(value)) {
    const mode = parseInt(value.replace(/^0?o?/, ''), 8);
    if (mode <= 0o777) return mode;
  }
  check.problem(field, `expected an octal file mode such as "0660", got ${describe(value)}`);
  return undefined;
}

/** Where the admin endpoint listens. */
export type AdminAddress = { host: string; port: number } | { socketPath: string; mode: number };

/**
 * Parses the admin listener address: `host:port`, or `unix:/absolute/path` for a Unix socket
 * (mode 0600: only the server's user may read /status, /clients and /metrics).
 */
export function parseAddress(value: string, field: string, check: Checker): AdminAddress | undefined {
  if (value.startsWith('unix:')) {
    const socketPath = value.slice('unix:'.length);
    if (!socketPath.startsWith('/')) {
      check.problem(field, `expected unix:/absolute/path, got ${describe(value)}`);
      return undefined;
    }
    return { socketPath, mode: 0o600 };
  }
  const match = /^(?:\[([^\]]+)\]|([^:]+)):(\d{1,5})$/.exec(value);
  const port = match ? Number(match[3]) : NaN;
  if (!match || port > 65535) {
    check.problem(field, `expected host:port such as 127.0.0.1:15001 or unix:/run/sds/admin.sock, got ${describe(value)}`);
    return undefined;
  }
  return { host: match[1] ?? match[2] ?? '127.0.0.1', port };
}

/** Parses and validates YAML text; `file` names the source in messages and anchors relative paths. */
export function parseConfigFile(text: string, file: string): ServerConfig {
  const check = new Checker(file);
  let doc: Json;
  try {
    // logLevel 'error': the parser's warnings (printed by default) would quote the source too.
    doc = parseYaml(text, { logLevel: 'error', prettyErrors: false });
  } catch (err) {
    // The parser's message quotes the offending source text, which may be a private key.
    const e = err as { code?: unknown; linePos?: Array<{ line: number; col: number }> };
    const where = e.linePos?.[0] ? ` at line ${e.linePos[0].line}, column ${e.linePos[0].col}` : '';
    const code = typeof e.code === 'string' ? ` (${e.code})` : '';
    throw new SdsError(ErrorCode.ConfigInvalid, `${file}: not valid YAML${code}${where}`);
  }
  const config = defaultConfig();
  const base = path.dirname(path.resolve(file));
  const resolvePath = (p: string): string => path.resolve(base, p);
  const root = check.object(doc ?? {}, '(top level)');
  if (!root) throw configError(check);
  check.unknownKeys(root, '', ['socket', 'bundleFormat', 'aliases', 'default', 'rootBundle', 'watch', 'log', 'admin', 'certificates', 'bundles', 'ca', 'identities', 'expiryWarning', ...AUTHORIZATION_KEYS]);

  const socket = check.object(root.socket, 'socket');
  if (socket) {
    check.unknownKeys(socket, 'socket', ['path', 'mode', 'group', 'allowSharedDirectory']);
    const p = check.string(socket.path, 'socket.path');
    if (p) config.socket.path = resolvePath(p);
    config.socket.mode = parseMode(socket.mode, 'socket.mode', check) ?? config.socket.mode;
    const group = typeof socket.group === 'number' ? String(socket.group) : check.string(socket.group, 'socket.group');
    if (group) config.socket.group = group;
    if (socket.allowSharedDirectory !== undefined) {
      if (typeof socket.allowSharedDirectory === 'boolean') config.socket.allowSharedDirectory = socket.allowSharedDirectory;
      else check.problem('socket.allowSharedDirectory', 'expected true or false');
    }
  }
  config.bundleFormat = check.oneOf(root.bundleFormat, 'bundleFormat', BUNDLE_FORMATS) ?? config.bundleFormat;

  const aliases = check.object(root.aliases, 'aliases');
  if (aliases) {
    check.unknownKeys(aliases, 'aliases', ['defaultCertificate', 'rootBundle', 'allBundles']);
    for (const key of ['defaultCertificate', 'rootBundle', 'allBundles'] as const) {
      config.aliases[key] = check.string(aliases[key], `aliases.${key}`) ?? config.aliases[key];
    }
    // Two aliases with one name would serve one kind of secret to requests for the other.
    const keys = ['defaultCertificate', 'rootBundle', 'allBundles'] as const;
    keys.forEach((key, i) => {
      const first = keys.slice(0, i).find((other) => config.aliases[other] === config.aliases[key]);
      if (first) check.problem(`aliases.${key}`, `has the same name as aliases.${first}; each alias needs its own name`);
    });
  }
  const defaultCertificate = check.string(root.default, 'default');
  if (defaultCertificate) config.defaultCertificate = defaultCertificate;
  const rootBundle = check.string(root.rootBundle, 'rootBundle');
  if (rootBundle) config.rootBundle = rootBundle;

  const watch = check.object(root.watch, 'watch');
  if (watch) {
    check.unknownKeys(watch, 'watch', ['debounceMs', 'pollIntervalMs']);
    config.watch.debounceMs = check.integer(watch.debounceMs, 'watch.debounceMs', 0) ?? config.watch.debounceMs;
    config.watch.pollIntervalMs = check.integer(watch.pollIntervalMs, 'watch.pollIntervalMs', 0) ?? config.watch.pollIntervalMs;
  }
  if (root.expiryWarning !== undefined) {
    const seconds = parseDurationSeconds(root.expiryWarning);
    if (seconds === undefined) check.problem('expiryWarning', `expected a duration such as "24h", "30m" or 3600, got ${describe(root.expiryWarning)}`);
    else config.expiryWarningMs = seconds * 1000;
  }
  const log = check.object(root.log, 'log');
  if (log) {
    check.unknownKeys(log, 'log', ['format', 'level']);
    config.log.format = check.oneOf(log.format, 'log.format', LOG_FORMATS) ?? config.log.format;
    config.log.level = check.oneOf(log.level, 'log.level', LOG_LEVELS) ?? config.log.level;
  }
  const admin = check.object(root.admin, 'admin');
  if (admin) {
    check.unknownKeys(admin, 'admin', ['address']);
    const address = check.string(admin.address, 'admin.address', { required: true });
    if (address) {
      const parsed = parseAddress(address, 'admin.address', check);
      if (parsed) config.admin = parsed;
    }
  }
  parseCa(root.ca, config, check, resolvePath);
  parseIdentities(root.identities, config, check);

  const names = new Map<string, string>();
  const claim = (name: string, field: string): void => {
    const previous = names.get(name);
    if (previous) check.problem(field, `the same name is already used by ${previous}`);
    else names.set(name, field);
  };

  const certs = root.certificates;
  if (certs !== undefined && !Array.isArray(certs)) check.problem('certificates', `expected a list, got ${describe(certs)}`);
  (Array.isArray(certs) ? certs : []).forEach((item: Json, i) => {
    const field = `certificates[${i}]`;
    const c = check.object(item, field);
    if (!c) return;
    check.unknownKeys(c, field, ['name', 'cert', 'key', 'names']);
    const name = check.string(c.name, `${field}.name`, { required: true });
    const cert = check.string(c.cert, `${field}.cert`, { required: true });
    const key = check.string(c.key, `${field}.key`, { required: true });
    const extra = check.stringList(c.names, `${field}.names`);
    if (name?.startsWith('spiffe://') && !parseSpiffeId(name)) check.problem(`${field}.name`, 'is not a valid SPIFFE ID (spiffe://trust-domain/path)');
    if (!name || !cert || !key) return;
    claim(name, `${field}.name`);
    extra.forEach((n, j) => claim(n, `${field}.names[${j}]`));
    config.certificates.push({ name, cert: resolvePath(cert), key: resolvePath(key), names: extra });
  });

  const bundles = root.bundles;
  if (bundles !== undefined && !Array.isArray(bundles)) check.problem('bundles', `expected a list, got ${describe(bundles)}`);
  (Array.isArray(bundles) ? bundles : []).forEach((item: Json, i) => {
    const field = `bundles[${i}]`;
    const b = check.object(item, field);
    if (!b) return;
    check.unknownKeys(b, field, ['name', 'ca', 'trustDomain', 'names']);
    const name = check.string(b.name, `${field}.name`, { required: true });
    const ca = check.stringList(b.ca, `${field}.ca`);
    if (b.ca === undefined) check.problem(`${field}.ca`, 'is required (a CA file or a list of CA files)');
    else if (ca.length === 0) check.problem(`${field}.ca`, 'must name at least one CA file');
    let trustDomain = check.string(b.trustDomain, `${field}.trustDomain`);
    if (trustDomain && !isTrustDomainName(trustDomain)) {
      check.problem(`${field}.trustDomain`, 'is not a valid trust domain name (like example.org)');
    }
    // A bundle named by its trust-domain ID (spiffe://example.org) needs no separate trustDomain.
    const fromName = name ? parseSpiffeId(name) : undefined;
    if (fromName && fromName.path === '') trustDomain ??= fromName.trustDomain;
    else if (fromName) check.problem(`${field}.name`, `has a path; a bundle is named by a trust-domain ID such as spiffe://${fromName.trustDomain}`);
    const extra = check.stringList(b.names, `${field}.names`);
    if (!name || ca.length === 0) return;
    claim(name, `${field}.name`);
    extra.forEach((n, j) => claim(n, `${field}.names[${j}]`));
    config.bundles.push({ name, ca: ca.map(resolvePath), names: extra, ...(trustDomain ? { trustDomain } : {}) });
  });

  config.identities.forEach((id, i) => {
    claim(id.spiffeId, `identities[${i}].spiffeId`);
    id.names.forEach((n, j) => claim(n, `identities[${i}].names[${j}]`));
  });
  if (config.identities.length > 0) {
    claim(`spiffe://${config.ca.trustDomain}`, 'ca.trustDomain (its bundle)');
    config.ca.bundleNames.forEach((n, j) => claim(n, `ca.bundleNames[${j}]`));
  }

  parseAuthorization(root, config, check, resolvePath);

  for (const alias of Object.values(config.aliases)) {
    const owner = names.get(alias);
    if (owner) check.problem(owner, `the same name is reserved as an alias (${aliasFieldOf(config, alias)})`);
  }
  if (config.defaultCertificate && !config.certificates.some((c) => c.name === config.defaultCertificate)) {
    check.problem('default', 'is not the name of a configured certificate');
  }
  if (config.rootBundle && !config.bundles.some((b) => b.name === config.rootBundle)) {
    check.problem('rootBundle', 'is not the name of a configured bundle');
  }
  if (check.problems.length > 0) throw configError(check);
  return config;
}

function parseCa(value: Json, config: ServerConfig, check: Checker, resolvePath: (p: string) => string): void {
  const ca = check.object(value, 'ca');
  if (!ca) return;
  check.unknownKeys(ca, 'ca', ['backend', 'trustDomain', 'bundleNames', 'embedded', 'awsPca', 'cfssl', 'renewFraction', 'jitterFraction', 'timeoutMs', 'backoff', 'bundleRefreshMs', 'bundlePropagationMs']);
  const c = config.ca;
  c.backend = check.oneOf(ca.backend, 'ca.backend', CA_BACKENDS) ?? c.backend;
  const td = check.string(ca.trustDomain, 'ca.trustDomain');
  if (td && !isTrustDomainName(td)) check.problem('ca.trustDomain', 'is not a valid trust domain name (like example.org)');
  else if (td) c.trustDomain = td;
  c.bundleNames = check.stringList(ca.bundleNames, 'ca.bundleNames');
  const fraction = (v: Json, field: string, max: number): number | undefined => {
    if (v === undefined) return undefined;
    if (typeof v !== 'number' || !(v > 0) || v >= max) {
      check.problem(field, `expected a number between 0 and ${max}, got ${describe(v)}`);
      return undefined;
    }
    return v;
  };
  c.renewFraction = fraction(ca.renewFraction, 'ca.renewFraction', 1) ?? c.renewFraction;
  c.jitterFraction = fraction(ca.jitterFraction, 'ca.jitterFraction', 0.5) ?? c.jitterFraction;
  c.timeoutMs = check.integer(ca.timeoutMs, 'ca.timeoutMs', 1) ?? c.timeoutMs;
  c.bundleRefreshMs = check.integer(ca.bundleRefreshMs, 'ca.bundleRefreshMs', 0) ?? c.bundleRefreshMs;
  c.bundlePropagationMs = check.integer(ca.bundlePropagationMs, 'ca.bundlePropagationMs', 0) ?? c.bundlePropagationMs;
  const backoff = check.object(ca.backoff, 'ca.backoff');
  if (backoff) {
    check.unknownKeys(backoff, 'ca.backoff', ['initialMs', 'maxMs']);
    c.backoff.initialMs = check.integer(backoff.initialMs, 'ca.backoff.initialMs', 1) ?? c.backoff.initialMs;
    c.backoff.maxMs = check.integer(backoff.maxMs, 'ca.backoff.maxMs', 1) ?? c.backoff.maxMs;
  }
  const embedded = check.object(ca.embedded, 'ca.embedded');
  if (embedded) {
    check.unknownKeys(embedded, 'ca.embedded', ['dataDir', 'caCert', 'caKey']);
    const dataDir = check.string(embedded.dataDir, 'ca.embedded.dataDir');
    const caCert = check.string(embedded.caCert, 'ca.embedded.caCert');
    const caKey = check.string(embedded.caKey, 'ca.embedded.caKey');
    if ((caCert === undefined) !== (caKey === undefined)) check.problem('ca.embedded', 'give both caCert and caKey, or neither');
    c.embedded = {
      ...(dataDir ? { dataDir: resolvePath(dataDir) } : {}),
      ...(caCert ? { caCert: resolvePath(caCert) } : {}),
      ...(caKey ? { caKey: resolvePath(caKey) } : {}),
    };
  }
  const aws = check.object(ca.awsPca, 'ca.awsPca');
  if (aws) {
    check.unknownKeys(aws, 'ca.awsPca', ['certificateAuthorityArn', 'region', 'endpoint', 'signingAlgorithm', 'templateArn']);
    const arn = check.string(aws.certificateAuthorityArn, 'ca.awsPca.certificateAuthorityArn', { required: true });
    if (arn && !/^arn:aws[a-z-]*:acm-pca:/.test(arn)) check.problem('ca.awsPca.certificateAuthorityArn', `expected an ACM PCA ARN (arn:aws:acm-pca:region:account:certificate-authority/id), got ${describe(arn)}`);
    const optional = (key: 'region' | 'endpoint' | 'signingAlgorithm' | 'templateArn') => {
      const v = check.string(aws[key], `ca.awsPca.${key}`);
      return v ? { [key]: v } : {};
    };
    if (arn) c.awsPca = { certificateAuthorityArn: arn, ...optional('region'), ...optional('endpoint'), ...optional('signingAlgorithm'), ...optional('templateArn') };
  }
  if (c.backend === 'aws-pca' && !c.awsPca) check.problem('ca.awsPca', 'is required when ca.backend is aws-pca');
  const cfssl = check.object(ca.cfssl, 'ca.cfssl');
  if (cfssl) {
    check.unknownKeys(cfssl, 'ca.cfssl', ['url', 'authKeyFile', 'authKeyEnv', 'profile', 'caFile', 'rootsFile']);
    const url = check.string(cfssl.url, 'ca.cfssl.url', { required: true });
    if (url && !/^https?:\/\//.test(url)) check.problem('ca.cfssl.url', `expected an http(s):// URL, got ${describe(url)}`);
    const opt = (key: 'authKeyEnv' | 'profile') => {
      const v = check.string(cfssl[key], `ca.cfssl.${key}`);
      return v ? { [key]: v } : {};
    };
    const file = (key: 'authKeyFile' | 'caFile' | 'rootsFile') => {
      const v = check.string(cfssl[key], `ca.cfssl.${key}`);
      return v ? { [key]: resolvePath(v) } : {};
    };
    if (url) c.cfssl = { url, ...file('authKeyFile'), ...opt('authKeyEnv'), ...opt('profile'), ...file('caFile'), ...file('rootsFile') };
  }
  if (c.backend === 'cfssl' && !c.cfssl) check.problem('ca.cfssl', 'is required when ca.backend is cfssl');
}

function parseIdentities(value: Json, config: ServerConfig, check: Checker): void {
  if (value === undefined || value === null) return;
  if (!Array.isArray(value)) {
    check.problem('identities', `expected a list, got ${describe(value)}`);
    return;
  }
  value.forEach((item: Json, i) => {
    const field = `identities[${i}]`;
    const o = check.object(item, field);
    if (!o) return;
    check.unknownKeys(o, field, ['spiffeId', 'dnsNames', 'keyType', 'lifetime', 'names']);
    const spiffeId = check.string(o.spiffeId, `${field}.spiffeId`, { required: true });
    const parsed = spiffeId ? parseSpiffeId(spiffeId) : undefined;
    if (spiffeId && (!parsed || parsed.path === '')) check.problem(`${field}.spiffeId`, 'is not a workload SPIFFE ID (spiffe://trust-domain/path)');
    else if (parsed && parsed.trustDomain !== config.ca.trustDomain) {
      check.problem(`${field}.spiffeId`, `is not in the CA's trust domain ${config.ca.trustDomain} (set ca.trustDomain)`);
    }
    const keyType = check.oneOf(o.keyType, `${field}.keyType`, KEY_TYPES) ?? 'ec-p256';
    let lifetimeSeconds: number = DEFAULTS.lifetimeSeconds;
    if (o.lifetime !== undefined) {
      const seconds = parseDurationSeconds(o.lifetime);
      if (seconds === undefined) check.problem(`${field}.lifetime`, `expected a duration such as 3600, "90s", "15m" or "1h", got ${describe(o.lifetime)}`);
      else lifetimeSeconds = seconds;
    }
    const dnsNames = check.stringList(o.dnsNames, `${field}.dnsNames`);
    const names = check.stringList(o.names, `${field}.names`);
    if (spiffeId && parsed?.path) config.identities.push({ spiffeId, dnsNames, keyType, lifetimeSeconds, names });
  });
}

/** Top-level keys of the authorization settings (parsed by `parseAuthorization`). */
const AUTHORIZATION_KEYS = ['workloads', 'identityTemplate', 'onDemandIdleSeconds', 'onDemandLifetime', 'attestation'] as const;

/** A selector as SPIRE writes it: `type:name:value` (`unix:uid:1001`, `k8s:ns:shop`, `k8s:pod-label:app:web`). */
const SELECTOR = /^[a-z0-9_-]+:[A-Za-z0-9_.-]+:.+$/;

/**
 * `workloads`, `identityTemplate`, `onDemandIdleSeconds`, `onDemandLifetime`: who may receive what.
 * Runs after certificates and identities are parsed, so entries can be checked against them.
 */
function parseAuthorization(root: Record<string, Json>, config: ServerConfig, check: Checker, resolvePath: (p: string) => string): void {
  const a = config.authorization;
  const attestation = check.object(root.attestation, 'attestation');
  if (attestation) {
    check.unknownKeys(attestation, 'attestation', ['kubernetes']);
    const k = check.object(attestation.kubernetes, 'attestation.kubernetes');
    const kube: KubernetesAttestorConfig = {};
    if (k || attestation.kubernetes === null) a.kubernetes = kube;
    if (k) {
      check.unknownKeys(k, 'attestation.kubernetes', ['kubeletUrl', 'tokenFile', 'caFile', 'skipKubeletVerification', 'procRoot']);
      const url = check.string(k.kubeletUrl, 'attestation.kubernetes.kubeletUrl');
      if (url && !/^https?:\/\/[^/]+\/?$/.test(url)) check.problem('attestation.kubernetes.kubeletUrl', `expected http(s)://host:port such as https://127.0.0.1:10250, got ${JSON.stringify(url)}`);
      else if (url) kube.kubeletUrl = url;
      for (const key of ['tokenFile', 'caFile', 'procRoot'] as const) {
        const v = check.string(k[key], `attestation.kubernetes.${key}`);
        if (v) kube[key] = resolvePath(v);
      }
      if (k.skipKubeletVerification !== undefined) {
        if (typeof k.skipKubeletVerification !== 'boolean') check.problem('attestation.kubernetes.skipKubeletVerification', `expected true or false, got ${describe(k.skipKubeletVerification)}`);
        else kube.skipKubeletVerification = k.skipKubeletVerification;
      }
    }
  }
  const configured = new Set([
    ...config.certificates.flatMap((c) => [c.name, ...c.names]),
    ...config.identities.flatMap((i) => [i.spiffeId, ...i.names]),
  ]);
  const workloads = root.workloads;
  if (workloads !== undefined && workloads !== null) {
    a.enabled = true;
    if (!Array.isArray(workloads)) check.problem('workloads', `expected a list of { selectors, identities }, got ${describe(workloads)}`);
    (Array.isArray(workloads) ? workloads : []).forEach((item: Json, i) => {
      const field = `workloads[${i}]`;
      const w = check.object(item, field);
      if (!w) {
        if (item === undefined || item === null) check.problem(field, 'expected a mapping with selectors and identities');
        return;
      }
      check.unknownKeys(w, field, ['selectors', 'identities']);
      const selectors = check.stringList(w.selectors, `${field}.selectors`);
      if (w.selectors === undefined) check.problem(`${field}.selectors`, 'is required (for example ["unix:uid:1001"] or ["k8s:ns:shop", "k8s:sa:back"])');
      else if (selectors.length === 0 && Array.isArray(w.selectors)) check.problem(`${field}.selectors`, 'must name at least one selector (an entry without selectors would match every caller)');
      selectors.forEach((sel, j) => {
        if (!SELECTOR.test(sel)) check.problem(`${field}.selectors[${j}]`, `${JSON.stringify(sel)} is not a selector of the form type:name:value (for example unix:uid:1001, k8s:ns:shop)`);
      });
      const identities = check.stringList(w.identities, `${field}.identities`);
      if (w.identities === undefined) check.problem(`${field}.identities`, 'is required (the SPIFFE IDs this workload may receive)');
      else if (identities.length === 0 && Array.isArray(w.identities)) check.problem(`${field}.identities`, 'must name at least one identity');
      identities.forEach((id, j) => {
        const spiffe = parseSpiffeId(id);
        if (id.startsWith('spiffe://') && (!spiffe || spiffe.path === '')) check.problem(`${field}.identities[${j}]`, `${JSON.stringify(id)} is not a workload SPIFFE ID (trust bundles go to every caller; list only identities)`);
        // File certificates may be named by a SPIFFE ID learned from the file; CA identities must be configured.
        else if (!configured.has(id) && (!spiffe || config.certificates.length === 0)) {
          check.problem(`${field}.identities[${j}]`, `${JSON.stringify(id)} is not a configured certificate or identity`);
        }
      });
      a.workloads.push({ selectors, identities });
    });
  }
  const template = check.string(root.identityTemplate, 'identityTemplate');
  if (template !== undefined) {
    a.enabled = true;
    const parsed = IdentityTemplate.parse(template, config.ca.trustDomain);
    if ('problem' in parsed) check.problem('identityTemplate', parsed.problem);
    else a.identityTemplate = template;
    if (config.certificates.length > 0 && config.identities.length === 0 && root.ca === undefined) {
      check.problem('identityTemplate', 'identities from a template are issued by the CA: configure ca (the embedded CA by default) rather than only certificate files');
    }
  }
  a.onDemandIdleSeconds = check.integer(root.onDemandIdleSeconds, 'onDemandIdleSeconds', 0) ?? a.onDemandIdleSeconds;
  if (root.onDemandLifetime !== undefined) {
    const seconds = parseDurationSeconds(root.onDemandLifetime);
    if (seconds === undefined) check.problem('onDemandLifetime', `expected a duration such as 3600, "90s", "15m" or "1h", got ${describe(root.onDemandLifetime)}`);
    else a.onDemandLifetimeSeconds = seconds;
  }
  if (!a.identityTemplate && template === undefined) {
    if (root.onDemandIdleSeconds !== undefined) check.problem('onDemandIdleSeconds', 'applies only with identityTemplate');
    if (root.onDemandLifetime !== undefined) check.problem('onDemandLifetime', 'applies only with identityTemplate');
  }
}

function configError(check: Checker): SdsError {
  return new SdsError(ErrorCode.ConfigInvalid, `invalid configuration:\n  - ${check.problems.join('\n  - ')}`);
}

/**
 * A value as shown in a config error: by type and size, never by content. A config field may hold
 * a pasted private key, and `--config` may point at a key file (whose text parses as one YAML
 * string), so no message quotes what the operator wrote; the file and field name say where it is.
 */
export function describe(value: Json): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return `a list of ${value.length} item${value.length === 1 ? '' : 's'}`;
  if (typeof value === 'string') return `a string of ${value.length} character${value.length === 1 ? '' : 's'}`;
  if (typeof value === 'number' || typeof value === 'boolean') return `${typeof value} ${String(value)}`;
  if (typeof value === 'object') return `a mapping of ${Object.keys(value).length} key${Object.keys(value).length === 1 ? '' : 's'}`;
  return typeof value;
}

/** A mapping key as shown in messages: a plain identifier as written, anything else by length. */
function describeKey(key: string): string {
  return /^[A-Za-z0-9_.-]{1,64}$/.test(key) ? key : `(a key of ${key.length} characters)`;
}

/**
 * Why a string cannot be a config value: file content pasted in place of a path or name. A PEM
 * header or a line break never belongs in a path, name, URL or setting.
 */
export function pastedContentProblem(value: string): string | undefined {
  if (/-----BEGIN [^-]*-----|-----END [^-]*-----/.test(value)) return 'contains a PEM block; give the path of the file, not its content';
  if (/[\r\n]/.test(value)) return 'contains a line break; expected a single line (a path, not file content)';
  if (looksLikeBase64Content(value)) return 'looks like base64-encoded content (a key or certificate pasted in place of a path?); give the path of the file';
  return undefined;
}

/**
 * A key pasted as one line: base64 of a PEM file (the Kubernetes Secret form, `LS0tLS1CRUdJTi...`)
 * or a PEM body with its line breaks removed (`MIGHAgEA...`). It would otherwise be taken as a
 * missing file's path and echoed in logs and /status. Recognised as a run of at least 64
 * base64 characters with a segment (between slashes) of at least 40 and upper case, lower case and
 * digits mixed as in random base64; real paths, SPIFFE IDs and hex digests do not look like that.
 */
function looksLikeBase64Content(value: string): boolean {
  for (const run of value.match(/[A-Za-z0-9+/=]{64,}/g) ?? []) {
    const longestSegment = Math.max(...run.split('/').map((s) => s.length));
    const count = (re: RegExp): number => run.match(re)?.length ?? 0;
    if (longestSegment >= 40 && count(/[A-Z]/g) >= 8 && count(/[a-z]/g) >= 8 && count(/[0-9]/g) >= 4) return true;
  }
  return false;
}

/** Which `aliases.*` field defines `alias`, for messages. */
function aliasFieldOf(config: ServerConfig, alias: string): string {
  const key = (Object.keys(config.aliases) as (keyof AliasNames)[]).find((k) => config.aliases[k] === alias);
  return key ? `aliases.${key}` : 'aliases';
}

export { Checker as ConfigChecker };
