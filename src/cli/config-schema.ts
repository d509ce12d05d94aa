/**
 * The config file's schema (valibot): each field declared once, with its type, default and
 * description. docs/configuration.md is generated from it (`npm run docs:config`). CA backends
 * (src/ca/registry.ts) and secret sources (src/sources/file-config.ts) own their pieces.
 */
import * as v from 'valibot';
import type { LogFormat, LogLevel } from '../core/logger.js';
import type { BundleFormatSetting } from '../xds/bundle-format.js';
import {
  boolean,
  describe,
  durationSeconds,
  filePath,
  integer,
  list,
  mapping,
  MAX_TIMER_MS,
  milliseconds,
  oneOf,
  optional,
  optionalDefaultedElsewhere,
  quoted,
  required,
  section,
  stringList,
  text,
  textWith,
  withDefault,
  type ConfigContext,
} from '../core/config-schema.js';
import { DEFAULT_ALIASES } from '../secrets/store.js';
import { DEFAULT_EXPIRY_WARNING_MS } from '../secrets/expiry.js';
import { DEFAULT_TRANSPORT_LIMITS, type TransportLimits } from '../server/connection-guard.js';
import { parseSpiffeId } from '../x509/spiffe.js';
import { CA_DESCRIPTION, caConfigSchema } from '../ca/ca-config.js';
import { bundleFileSchema, certificateFileSchema } from '../sources/file-config.js';

export const BUNDLE_FORMATS = ['auto', 'spiffe', 'trusted-ca'] as const satisfies readonly BundleFormatSetting[];
export const LOG_FORMATS = ['json', 'text'] as const satisfies readonly LogFormat[];
export const LOG_LEVELS = ['debug', 'info', 'warn', 'error'] as const satisfies readonly LogLevel[];
export const KEY_TYPES = ['ec-p256', 'ec-p384', 'rsa-2048'] as const;

/** Where the admin endpoint listens. */
export type AdminAddress = { host: string; port: number } | { socketPath: string; mode: number };

/**
 * The admin listener address: `host:port`, or `unix:/absolute/path` for a Unix socket
 * (mode 0600: only the server's user may read /status, /clients and /metrics). A string says why not.
 */
export function parseAdminAddress(value: string): AdminAddress | string {
  if (value.startsWith('unix:')) {
    const socketPath = value.slice('unix:'.length);
    if (!socketPath.startsWith('/')) return `expected unix:/absolute/path, got ${describe(value)}`;
    return { socketPath, mode: 0o600 };
  }
  const match = /^(?:\[([^\]]+)\]|([^:]+)):(\d{1,5})$/.exec(value);
  const port = match ? Number(match[3]) : NaN;
  if (!match || port > 65535) return `expected host:port such as 127.0.0.1:15001 or unix:/run/sds/admin.sock, got ${describe(value)}`;
  return { host: match[1] ?? match[2] ?? '127.0.0.1', port };
}

/** A file mode given as an octal string ("0660") or a YAML number written in octal (0o660); undefined if neither. */
export function parseFileMode(value: unknown): number | undefined {
  if (typeof value === 'number' && Number.isInteger(value) && value >= 0 && value <= 0o777) return value;
  if (typeof value === 'string' && /^0?o?[0-7]{3,4}$/.test(value)) {
    const mode = parseInt(value.replace(/^0?o?/, ''), 8);
    if (mode <= 0o777) return mode;
  }
  return undefined;
}

export const FILE_MODE_PROBLEM = 'expected an octal file mode such as "0660"';

// ---- the schema ---------------------------------------------------------------------------------

const fileMode = () =>
  v.pipe(
    v.custom<string | number>((x) => parseFileMode(x) !== undefined, (issue) => `${FILE_MODE_PROBLEM}, got ${describe(issue.input)}`),
    v.transform((x) => parseFileMode(x) as number),
    v.metadata({ type: 'octal file mode' }),
  );

const adminAddress = () =>
  v.pipe(
    text(),
    v.rawTransform(({ dataset, addIssue, NEVER }) => {
      const parsed = parseAdminAddress(dataset.value);
      if (typeof parsed !== 'string') return parsed;
      addIssue({ message: parsed });
      return NEVER;
    }),
    v.metadata({ type: '`host:port` or `unix:/path`' }),
  );

/** A selector as SPIRE writes it: `type:name:value` (`unix:uid:1001`, `k8s:ns:shop`, `k8s:pod-label:app:web`). */
const SELECTOR = /^[a-z0-9_-]+:[A-Za-z0-9_.-]+:.+$/;

// Capped at Node's timer limit: the `Ms` ones are timer delays, and no count needs more.
const limit = (min: number, key: keyof TransportLimits, description: string) => optionalDefaultedElsewhere(milliseconds(min), description, DEFAULT_TRANSPORT_LIMITS[key]);

/** One `identities:` entry: an identity the CA issues (`lifetime` read as `lifetimeSeconds`). */
export function identitySchema() {
  return v.pipe(
    mapping({
      spiffeId: required(textWith((id) => !!parseSpiffeId(id)?.path, 'is not a workload SPIFFE ID (spiffe://trust-domain/path)'), 'The identity (URI SAN) issued, in the CA\'s trust domain.'),
      dnsNames: withDefault(stringList(text()), 'Extra DNS SANs.', []),
      keyType: withDefault(oneOf(KEY_TYPES), 'Key type of the issued certificate.', 'ec-p256'),
      lifetime: withDefault(durationSeconds(), 'Requested lifetime (renewed at `ca.renewFraction` of it).', '1h'),
      names: withDefault(stringList(text()), 'More names it is served under.', []),
    }),
    v.transform(({ lifetime, ...rest }) => ({ ...rest, lifetimeSeconds: lifetime })),
  );
}

/** The whole config file. `ctx` resolves relative paths against the file's folder. */
export function configFileSchema(ctx: ConfigContext) {
  return mapping({
    socket: section(
      mapping({
        path: optional(filePath(ctx, 'socket'), 'Path of the Unix socket Envoy connects to. `--socket` overrides it; without either, `$APPMESH_SDS_SOCKET_PATH`, else the default `sds-server --help` gives for `--socket`.'),
        mode: withDefault(fileMode(), 'Mode of the socket file (octal).', '0660'),
        group: optional(
          v.pipe(v.union([text(), v.number()], (issue) => `expected a group name or gid, got ${describe(issue.input)}`), v.transform(String)),
          'Group (name or gid) owning the socket file (and its folder, when the server creates it).',
        ),
        allowSharedDirectory: optional(boolean(), 'Start (with a warning) even if other users can write the socket\'s folder, e.g. a Kubernetes emptyDir shared inside a pod.'),
        limits: optional(
          mapping({
            prefaceTimeoutMs: limit(1, 'prefaceTimeoutMs', 'Close a connection that sends no HTTP/2 preface within this many milliseconds.'),
            maxConnections: limit(1, 'maxConnections', 'Connections open at once; the excess is closed at accept.'),
            maxConnectionsPerUid: limit(1, 'maxConnectionsPerUid', 'Connections open at once from one uid, while attestation is on; the excess is closed at accept.'),
            maxStreamsPerConnection: limit(1, 'maxStreamsPerConnection', 'Concurrent streams per connection (HTTP/2 refuses the excess). Envoy opens one stream per secret.'),
            pingIntervalMs: limit(0, 'pingIntervalMs', 'PING every connection this often (ms) and close it when no answer comes within `pingTimeoutMs` (0 = off).'),
            pingTimeoutMs: limit(1, 'pingTimeoutMs', 'Milliseconds to wait for a PING acknowledgement.'),
          }),
          'Transport limits (each logs, rate-limited, when it acts). The command-line flags override them.',
        ),
      }),
      'The Unix socket Envoy connects to.',
    ),
    bundleFormat: withDefault(oneOf(BUNDLE_FORMATS), 'How trust bundles are sent: `auto` (the SPIFFE validator for Envoy >= 1.18, else `trusted-ca`), `spiffe` or `trusted-ca`.', 'auto'),
    aliases: section(
      mapping({
        defaultCertificate: withDefault(text(), 'Name that serves the default certificate (SPIRE `default_svid_name`, Istio `default`).', DEFAULT_ALIASES.defaultCertificate),
        rootBundle: withDefault(text(), 'Name that serves the default trust bundle (SPIRE `default_bundle_name`, Istio `ROOTCA`).', DEFAULT_ALIASES.rootBundle),
        allBundles: withDefault(text(), 'Name that serves every trust bundle in one SPIFFE validator config (SPIRE `default_all_bundles_name`).', DEFAULT_ALIASES.allBundles),
      }),
      'Names that stand for other secrets.',
    ),
    default: optional(text(), 'The certificate `aliases.defaultCertificate` serves. Default: the first one.'),
    rootBundle: optional(text(), 'The bundle `aliases.rootBundle` serves. Default: the bundle of the default certificate\'s trust domain, else the first one.'),
    watch: section(
      mapping({
        debounceMs: withDefault(milliseconds(0), 'Wait this long (ms) after a file changes before reading it. 0 (the default): read on every event and publish as soon as the certificate, key and bundle agree; a half-rotated pair is never served either way.', 0),
        pollIntervalMs: withDefault(milliseconds(0), 'Re-read watched files this often (ms) as a safety net (0 = off).', 10_000),
      }),
      'How certificate and key files are watched.',
    ),
    expiryWarning: optionalDefaultedElsewhere(
      durationSeconds(),
      'Warn this long before a served certificate expires, or in the last third of its lifetime if that is shorter.',
      `${DEFAULT_EXPIRY_WARNING_MS / 3_600_000}h`,
    ),
    log: section(
      mapping({
        format: withDefault(oneOf(LOG_FORMATS), 'Log line format.', 'json'),
        level: withDefault(oneOf(LOG_LEVELS), 'Least severe level logged.', 'info'),
      }),
      'Logging.',
    ),
    admin: optional(
      mapping({ address: required(adminAddress(), 'Where `/healthz`, `/ready`, `/status`, `/streams`, `/clients`, `/certificates` and `/metrics` are served: `host:port` (e.g. `127.0.0.1:15001`), or `unix:/path` (mode 0600).') }),
      'The admin endpoint (off unless given).',
    ),
    certificates: withDefault(list(certificateFileSchema(ctx)), 'Certificates and keys served from watched files.', []),
    bundles: withDefault(list(bundleFileSchema(ctx)), 'Trust bundles served from watched files.', []),
    ca: section(caConfigSchema(ctx), CA_DESCRIPTION),
    identities: withDefault(
      list(identitySchema()),
      'Identities issued by the CA. With nothing configured at all, one (`spiffe://<trust domain>/sds-server`) is issued.',
      [],
    ),
    workloads: optional(
      list(
        mapping({
          selectors: required(
            v.pipe(
              stringList(textWith((s) => SELECTOR.test(s), (issue) => `${quoted(issue.input)} is not a selector of the form type:name:value (for example unix:uid:1001, k8s:ns:shop)`)),
              v.check((s) => s.length > 0, 'must name at least one selector (an entry without selectors would match every caller)'),
            ),
            'A caller whose selectors include all of these (`unix:uid:1001`, `k8s:ns:shop`, ...) may receive `identities`.',
          ),
          identities: required(
            v.pipe(
              stringList(
                textWith(
                  (id) => !id.startsWith('spiffe://') || !!parseSpiffeId(id)?.path,
                  (issue) => `${quoted(issue.input)} is not a workload SPIFFE ID (trust bundles go to every caller; list only identities)`,
                ),
              ),
              v.check((ids) => ids.length > 0, 'must name at least one identity'),
            ),
            'The certificates or identities this workload may receive.',
          ),
        }),
        'a list of { selectors, identities }',
      ),
      'Who may receive which identity. With neither `workloads` nor `identityTemplate`, authorization is off: every process that can open the socket gets every secret.',
    ),
    identityTemplate: optional(text(), 'Issue each caller an identity on demand, from its selectors, e.g. `spiffe://{trustDomain}/ns/{k8s:ns}/sa/{k8s:sa}` (needs the CA).'),
    onDemandIdleSeconds: withDefault(integer(0, Math.floor(MAX_TIMER_MS / 1000)), 'Drop an on-demand identity this many seconds after its last stream is gone.', 300),
    onDemandLifetime: withDefault(durationSeconds(), 'Lifetime of on-demand identities (`--cert-lifetime` too).', '1h'),
    attestation: section(
      mapping({
        kubernetes: v.optional(
          v.pipe(
            v.nullable(
              mapping({
                kubeletUrl: optional(
                  textWith((u) => /^https?:\/\/[^/]+\/?$/.test(u), (issue) => `expected http(s)://host:port such as https://127.0.0.1:10250, got ${describe(issue.input)}`),
                  'Default `https://127.0.0.1:10250` (needs hostNetwork); `http://127.0.0.1:10255` is the read-only port.',
                ),
                tokenFile: optional(filePath(ctx), 'Bearer token for the kubelet. Default: the pod\'s service-account token.'),
                caFile: optional(filePath(ctx), 'CA of the kubelet\'s serving certificate. Default: the service-account CA.'),
                skipKubeletVerification: optional(boolean(), 'Do not verify the kubelet\'s certificate.'),
                procRoot: optional(filePath(ctx, 'directory'), 'Where `<pid>/cgroup` is read. Default `/proc` (the host\'s: hostPID: true).'),
              }),
            ),
            v.transform((k) => k ?? {}),
            v.description('Turns on the Kubernetes workload attestor (`k8s:*` selectors; an empty value takes every default). The unix attestor always runs.'),
          ),
        ),
      }),
      'Workload attestors.',
    ),
  });
}

/** The config file as parsed by the schema (file field names, defaults applied). */
export type ConfigFile = v.InferOutput<ReturnType<typeof configFileSchema>>;
