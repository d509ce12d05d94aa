/**
 * The server configuration, as read from YAML (`--config`): one schema (valibot) declares each
 * field once with its type, default and description; docs/configuration.md is generated from it
 * (`npm run docs:config`). CA backends (src/ca/registry.ts) and secret sources
 * (src/sources/file-config.ts) own their pieces; the rules that relate fields to each other are in
 * src/cli/config-rules.ts. Every problem is reported at once, naming the file and field path.
 */
import fs from 'node:fs';
import path from 'node:path';
import * as v from 'valibot';
import { parse as parseYaml } from 'yaml';
import { ErrorCode, SdsError } from '../core/errors.js';
import { readSecretFile } from '../core/read-secret-file.js';
import { AS_WRITTEN, describe, issueKeys, issuePath, parseDurationSeconds, pastedContentProblem, schemaAt, unknownFields } from '../core/config-schema.js';
import type { BundleFormatSetting } from '../xds/bundle-format.js';
import type { AliasNames } from '../secrets/store.js';
import { DEFAULT_EXPIRY_WARNING_MS } from '../secrets/expiry.js';
import type { TransportLimits } from '../server/connection-guard.js';
import { CA_BACKENDS, type CaBackendName, type CaConfig } from '../ca/ca-config.js';
import { crossFieldProblems, type LenientConfigFile } from './config-rules.js';
import { configFileSchema, identitySchema, type AdminAddress, type ConfigFile } from './config-schema.js';

export { CA_BACKENDS, type CaBackendName, type CaConfig };
export { describe, pastedContentProblem, parseDurationSeconds };
export {
  BUNDLE_FORMATS,
  FILE_MODE_PROBLEM,
  KEY_TYPES,
  LOG_FORMATS,
  LOG_LEVELS,
  configFileSchema,
  parseAdminAddress,
  parseFileMode,
  type AdminAddress,
  type ConfigFile,
} from './config-schema.js';

// ---- the parsed configuration ------------------------------------------------------------------

export type CertificateConfig = ConfigFile['certificates'][number];

export type BundleConfig = ConfigFile['bundles'][number] & {
  /** Quick mode: take the trust domain from this certificate's SPIFFE ID once it is read. */
  trustDomainFromCertificate?: string;
};

export type IdentityConfig = ConfigFile['identities'][number];

/** The Kubernetes attestor's kubelet access (SPIRE's k8s workload attestor settings). */
export type KubernetesAttestorConfig = NonNullable<ConfigFile['attestation']['kubernetes']>;

/**
 * Workload authorization (issue 11). Off (`enabled: false`) when the config has neither
 * `workloads` nor `identityTemplate`: then every process that can open the socket gets every secret.
 */
export interface AuthorizationConfig {
  enabled: boolean;
  /** `workloads:` entries: a caller whose selectors include all of `selectors` may receive `identities`. */
  workloads: NonNullable<ConfigFile['workloads']>;
  /** `identityTemplate:` e.g. `spiffe://{trustDomain}/ns/{k8s:ns}/sa/{k8s:sa}`: issued on demand by the CA. */
  identityTemplate?: string;
  /** `onDemandIdleSeconds:` drop an on-demand identity this long after its last stream is gone. */
  onDemandIdleSeconds: number;
  /** `onDemandLifetime:` lifetime of on-demand identities (`--cert-lifetime` too). */
  onDemandLifetimeSeconds: number;
  /** `attestation.kubernetes:` turns on the Kubernetes workload attestor (`k8s:*` selectors); the unix attestor always runs. */
  kubernetes?: KubernetesAttestorConfig;
}

export interface ServerConfig {
  socket: { path?: string; mode: number; group?: string; limits?: Partial<TransportLimits>; allowSharedDirectory?: boolean };
  bundleFormat: BundleFormatSetting;
  aliases: AliasNames;
  defaultCertificate?: string;
  rootBundle?: string;
  watch: ConfigFile['watch'];
  /**
   * Warn this long (ms) before a served certificate expires, or in the last third of its lifetime
   * if that is shorter (config `expiryWarning`, a duration). See src/secrets/expiry.ts.
   */
  expiryWarningMs: number;
  log: ConfigFile['log'];
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

/** The file's fields in the shape the server uses. */
function toServerConfig(file: ConfigFile): ServerConfig {
  const { socket } = file;
  const limits = socket.limits ? definedOnly(socket.limits) : undefined;
  return {
    socket: {
      mode: socket.mode,
      ...(socket.path ? { path: socket.path } : {}),
      ...(socket.group !== undefined ? { group: socket.group } : {}),
      ...(socket.allowSharedDirectory !== undefined ? { allowSharedDirectory: socket.allowSharedDirectory } : {}),
      ...(limits && Object.keys(limits).length > 0 ? { limits } : {}),
    },
    bundleFormat: file.bundleFormat,
    aliases: file.aliases,
    ...(file.default ? { defaultCertificate: file.default } : {}),
    ...(file.rootBundle ? { rootBundle: file.rootBundle } : {}),
    watch: file.watch,
    expiryWarningMs: file.expiryWarning !== undefined ? file.expiryWarning * 1000 : DEFAULT_EXPIRY_WARNING_MS,
    log: file.log,
    ...(file.admin ? { admin: file.admin.address } : {}),
    certificates: file.certificates,
    bundles: file.bundles,
    ca: file.ca,
    identities: file.identities,
    authorization: {
      enabled: file.workloads !== undefined || file.identityTemplate !== undefined,
      workloads: file.workloads ?? [],
      ...(file.identityTemplate !== undefined ? { identityTemplate: file.identityTemplate } : {}),
      onDemandIdleSeconds: file.onDemandIdleSeconds,
      onDemandLifetimeSeconds: file.onDemandLifetime,
      ...(file.attestation.kubernetes ? { kubernetes: definedOnly(file.attestation.kubernetes) } : {}),
    },
  };
}

function definedOnly<T extends object>(o: T): T {
  return Object.fromEntries(Object.entries(o).filter(([, value]) => value !== undefined)) as T;
}

/** Every default, from the schema: the configuration of an empty config file. */
export function defaultConfig(): ServerConfig {
  return toServerConfig(v.parse(configFileSchema(AS_WRITTEN), {}));
}

/** The identity issued when nothing is configured (`npm start` on a fresh machine), with the schema's defaults. */
export function defaultIdentity(trustDomain: string, lifetimeSeconds?: number): IdentityConfig {
  const identity = v.parse(identitySchema(), { spiffeId: `spiffe://${trustDomain}/sds-server` });
  return lifetimeSeconds !== undefined ? { ...identity, lifetimeSeconds } : identity;
}

// ---- reading a file -----------------------------------------------------------------------------

/**
 * Parses and validates YAML text; `file` names the source in messages and anchors relative paths.
 * Throws SdsError SDS_ERR_CONFIG_INVALID listing every problem as `file: field.path: message`.
 */
export function parseConfigFile(text: string, file: string): ServerConfig {
  let doc: unknown;
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
  const base = path.dirname(path.resolve(file));
  const schema = configFileSchema({ resolvePath: (p) => path.resolve(base, p) });
  const result = v.safeParse(schema, doc ?? {}, { abortEarly: false });
  const problems = (result.issues ?? []).map((issue) => ({ field: issuePath(issue) || '(top level)', message: issue.message }));
  for (const unknown of result.success ? [] : unknownFields(doc, schema)) {
    if (!problems.some((p) => p.field === unknown.field)) problems.push(unknown);
  }
  if (!problems.some((p) => p.field === '(top level)')) {
    // Rules between fields run on what is valid, so one bad field does not hide the others' problems.
    const lenient = result.success ? result.output : withoutInvalidFields(result.output, result.issues, schema);
    problems.push(...crossFieldProblems(lenient as LenientConfigFile, doc));
  }
  if (problems.length > 0) {
    throw new SdsError(ErrorCode.ConfigInvalid, `invalid configuration:\n  - ${problems.map((p) => `${file}: ${p.field}: ${p.message}`).join('\n  - ')}`);
  }
  return toServerConfig(result.output as ConfigFile);
}

/**
 * Largest config file read, in bytes (1 MiB): a config with thousands of workload entries is a few
 * hundred KiB. A bigger file is refused before it is read, so a runaway file cannot hold memory or
 * (read synchronously at start) the event loop.
 */
export const MAX_CONFIG_FILE_BYTES = 1024 * 1024;

/**
 * Reads and parses the config file at `file` (see `parseConfigFile`); start-up only (synchronous).
 * Only a regular file of at most MAX_CONFIG_FILE_BYTES is read: a FIFO (opened O_NONBLOCK, so the
 * open does not wait for a writer), a device such as /dev/zero, or an oversize file is refused with
 * SDS_ERR_CONFIG_INVALID naming the file. Reloads read with `readConfigFile` (non-blocking).
 */
export function loadConfig(file: string): ServerConfig {
  return parseConfigFile(readConfigFileSync(file), file);
}

function readConfigFileSync(file: string): string {
  let fd: number;
  try {
    fd = fs.openSync(file, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK);
  } catch (err) {
    throw new SdsError(ErrorCode.ConfigInvalid, `cannot read --config ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
  try {
    // fstat of the opened descriptor: the path may be swapped in between.
    const stats = fs.fstatSync(fd);
    if (!stats.isFile()) throw new SdsError(ErrorCode.ConfigInvalid, `cannot read --config ${file}: not a regular file`);
    if (stats.size > MAX_CONFIG_FILE_BYTES) throw configTooLarge(file, `${stats.size} bytes`);
    // One byte past the cap: the file may grow after fstat.
    const buffer = Buffer.alloc(MAX_CONFIG_FILE_BYTES + 1);
    let length = 0;
    for (let n = 1; n > 0 && length < buffer.length; length += n) n = fs.readSync(fd, buffer, length, buffer.length - length, null);
    if (length > MAX_CONFIG_FILE_BYTES) throw configTooLarge(file, `more than ${MAX_CONFIG_FILE_BYTES} bytes`);
    return buffer.subarray(0, length).toString('utf8');
  } catch (err) {
    if (err instanceof SdsError) throw err;
    throw new SdsError(ErrorCode.ConfigInvalid, `cannot read --config ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  } finally {
    fs.closeSync(fd);
  }
}

function configTooLarge(file: string, size: string): SdsError {
  return new SdsError(ErrorCode.ConfigInvalid, `cannot read --config ${file}: is ${size}, over the ${MAX_CONFIG_FILE_BYTES}-byte limit for a config file`);
}

/**
 * Reads the config file's text for a reload without blocking the event loop (readSecretFile:
 * O_NONBLOCK, regular file only, at most MAX_CONFIG_FILE_BYTES). Throws SdsError
 * SDS_ERR_CONFIG_INVALID naming the file and why (a FIFO, a device, too large, missing, ...).
 */
export async function readConfigFile(file: string): Promise<string> {
  const result = await readSecretFile(file, MAX_CONFIG_FILE_BYTES);
  if (!result.ok) throw new SdsError(ErrorCode.ConfigInvalid, `cannot read --config ${result.problem.message.replace('limit for a secret file', 'limit for a config file')}`);
  return result.value;
}

/**
 * The parser's best-effort output with each field that has a problem set back to its default (or
 * removed when it has none): what the cross-field rules read when some fields are invalid. List
 * items keep their positions, so the rules name the same indices as the file.
 */
function withoutInvalidFields(output: unknown, issues: ReadonlyArray<v.BaseIssue<unknown>>, schema: v.GenericSchema): unknown {
  for (const issue of issues) {
    const keys = issueKeys(issue);
    const last = keys.at(-1);
    if (last === undefined) return undefined;
    let parent: unknown = output;
    for (const key of keys.slice(0, -1)) {
      parent = parent && typeof parent === 'object' ? (parent as Record<string | number, unknown>)[key] : undefined;
    }
    if (!parent || typeof parent !== 'object') continue;
    const field = schemaAt(schema, keys);
    const dflt = field ? v.getDefault(field as v.NullishSchema<v.GenericSchema, unknown>) : undefined;
    const parsedDefault = field && dflt !== undefined ? v.safeParse(field, dflt) : undefined;
    const holder = parent as Record<string | number, unknown>;
    if (parsedDefault?.success) holder[last] = parsedDefault.output;
    else if (Array.isArray(holder)) holder[last as number] = undefined;
    else delete holder[last];
  }
  return output;
}
