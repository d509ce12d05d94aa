/**
 * Helpers to run real Envoy processes in tests and scripts: free loopback ports, Envoy bootstraps
 * that take their TLS secrets from our SDS socket, starting/stopping Envoy with its output kept,
 * the admin endpoints (/ready, /certs, /stats), a tiny upstream HTTP app and an HTTP client.
 *
 * This file does not import vitest, so scripts (scripts/envoy/measure-rotation.ts) can use it.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { rename, writeFile } from 'node:fs/promises';
import http from 'node:http';
import net from 'node:net';
import path from 'node:path';
import { stringify as toYaml } from 'yaml';

export const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** Polls `check` until it returns a value other than undefined/false; throws with `what` and the last error after `timeoutMs`. */
export async function waitUntil<T>(
  what: string,
  check: () => Promise<T | undefined | false> | T | undefined | false,
  { timeoutMs = 5_000, intervalMs = 25 }: { timeoutMs?: number; intervalMs?: number } = {},
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  for (;;) {
    try {
      const value = await check();
      if (value !== undefined && value !== false) return value;
    } catch (err) {
      lastError = err;
    }
    if (Date.now() > deadline) {
      const why = lastError instanceof Error ? ` (last error: ${lastError.message})` : '';
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${why}`);
    }
    await sleep(intervalMs);
  }
}

// ---------------------------------------------------------------------------------------------
// Ports

/**
 * `count` distinct free TCP ports on 127.0.0.1: listen on port 0, read the port, close.
 * All listeners are open at once so the ports are distinct; another process could still take one
 * before Envoy binds it (Mesh.start then tries again with new ports).
 */
export async function freePorts(count: number): Promise<number[]> {
  const servers: net.Server[] = [];
  try {
    const ports: number[] = [];
    for (let i = 0; i < count; i++) {
      const server = net.createServer();
      servers.push(server);
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen(0, '127.0.0.1', () => resolve());
      });
      ports.push((server.address() as net.AddressInfo).port);
    }
    return ports;
  } finally {
    await Promise.all(servers.map((s) => new Promise<void>((resolve) => s.close(() => resolve()))));
  }
}

// ---------------------------------------------------------------------------------------------
// Serial numbers

/** Normalises a hex serial as Envoy (lower case), Node and our store (upper case) print it. */
export function normalizeSerial(serial: string): string {
  return serial.replace(/:/g, '').toLowerCase().replace(/^0+(?=.)/, '');
}

export function sameSerial(a: string | undefined, b: string | undefined): boolean {
  return a !== undefined && b !== undefined && normalizeSerial(a) === normalizeSerial(b);
}

// ---------------------------------------------------------------------------------------------
// Envoy bootstraps

/** A JSON/YAML config object. */
export type Config = { [key: string]: unknown };

export const TYPE = {
  hcm: 'type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager',
  router: 'type.googleapis.com/envoy.extensions.filters.http.router.v3.Router',
  downstreamTls: 'type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext',
  upstreamTls: 'type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext',
  httpOptions: 'type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions',
} as const;

/** Name of the static cluster that reaches the SDS server over its Unix socket. */
export const SDS_CLUSTER = 'sds';

/** The SDS cluster: STATIC, HTTP/2 (gRPC), one `pipe` endpoint at the socket path. */
export function sdsCluster(socketPath: string): Config {
  return {
    name: SDS_CLUSTER,
    type: 'STATIC',
    connect_timeout: '1s',
    typed_extension_protocol_options: {
      'envoy.extensions.upstreams.http.v3.HttpProtocolOptions': {
        '@type': TYPE.httpOptions,
        explicit_http_config: { http2_protocol_options: {} },
      },
    },
    load_assignment: {
      cluster_name: SDS_CLUSTER,
      endpoints: [{ lb_endpoints: [{ endpoint: { address: { pipe: { path: socketPath } } } }] }],
    },
  };
}

/** How Envoy reaches SDS: state of the world (`GRPC`) or incremental (`DELTA_GRPC`). */
export type SdsApiType = 'GRPC' | 'DELTA_GRPC';

export interface SdsConfigSourceOptions {
  /** Default `GRPC`. */
  apiType?: SdsApiType;
  /**
   * Reconnect back-off of the SDS streams. Default: 0.1 s base, 1 s max, so a restarted server is
   * found again quickly. `envoy-default`: leave it out, Envoy then uses 500 ms base and 30 s max
   * (SubscriptionFactory::RetryInitialDelayMs / RetryMaxDelayMs), as most deployments do.
   */
  backOff?: { baseInterval: string; maxInterval: string } | 'envoy-default';
}

/**
 * The config source of an SDS secret: v3 gRPC over the `sds` cluster. No initial fetch timeout
 * (a listener waits for its secrets however long the server takes).
 */
export function sdsConfigSource(opts: SdsConfigSourceOptions = {}): Config {
  const backOff = opts.backOff ?? { baseInterval: '0.1s', maxInterval: '1s' };
  return {
    resource_api_version: 'V3',
    initial_fetch_timeout: '0s',
    api_config_source: {
      api_type: opts.apiType ?? 'GRPC',
      transport_api_version: 'V3',
      set_node_on_first_message_only: true,
      grpc_services: [
        {
          envoy_grpc: {
            cluster_name: SDS_CLUSTER,
            ...(backOff === 'envoy-default'
              ? {}
              : { retry_policy: { retry_back_off: { base_interval: backOff.baseInterval, max_interval: backOff.maxInterval } } }),
          },
        },
      ],
    },
  };
}

/** TLS context parts shared by both sides: our certificate and peer validation from SDS. */
export function sdsCommonTlsContext(opts: { certificate: string; bundle: string; peerSpiffeId: string }): Config {
  return {
    tls_certificate_sds_secret_configs: [{ name: opts.certificate, sds_config: sdsConfigSource() }],
    combined_validation_context: {
      // Merged with the validation context from SDS (the trust bundle, as a SPIFFE validator config).
      default_validation_context: {
        match_typed_subject_alt_names: [{ san_type: 'URI', matcher: { exact: opts.peerSpiffeId } }],
      },
      validation_context_sds_secret_config: { name: opts.bundle, sds_config: sdsConfigSource() },
    },
  };
}

function staticCluster(name: string, port: number, extra: Config = {}): Config {
  return {
    name,
    type: 'STATIC',
    connect_timeout: '1s',
    load_assignment: {
      cluster_name: name,
      endpoints: [{ lb_endpoints: [{ endpoint: { address: { socket_address: { address: '127.0.0.1', port_value: port } } } }] }],
    },
    ...extra,
  };
}

function httpConnectionManager(statPrefix: string, cluster: string, extra: Config = {}): Config {
  return {
    name: 'envoy.filters.network.http_connection_manager',
    typed_config: {
      '@type': TYPE.hcm,
      stat_prefix: statPrefix,
      route_config: {
        name: 'local',
        virtual_hosts: [{ name: 'all', domains: ['*'], routes: [{ match: { prefix: '/' }, route: { cluster, timeout: '5s' } }] }],
      },
      http_filters: [{ name: 'envoy.filters.http.router', typed_config: { '@type': TYPE.router } }],
      ...extra,
    },
  };
}

function bootstrapBase(opts: { nodeId: string; adminPort: number; metadata?: Config }): Config {
  return {
    node: { id: opts.nodeId, cluster: 'sds-server-e2e', ...(opts.metadata ? { metadata: opts.metadata } : {}) },
    admin: { address: { socket_address: { address: '127.0.0.1', port_value: opts.adminPort } } },
  };
}

export interface ServerSideOptions {
  nodeId?: string;
  /** Node metadata sent to the SDS server (e.g. `disable_spiffe_cert_validation: true`). */
  nodeMetadata?: Config;
  adminPort: number;
  socketPath: string;
  /** The mTLS listener. */
  listenPort: number;
  /** The upstream app the listener routes to. */
  appPort: number;
  /** SDS name of the certificate this Envoy presents (its SPIFFE ID). */
  certificate: string;
  /** SDS name of the trust bundle (trust-domain ID, `spiffe://example.org`). */
  bundle: string;
  /** Only clients with this URI SAN are accepted. */
  clientSpiffeId: string;
}

/**
 * An Envoy in front of a service: its listener terminates mTLS (client certificate required and
 * checked against the bundle and the client's SPIFFE ID) and routes to the app. The app sees the
 * client certificate in `x-forwarded-client-cert`.
 */
export function serverSideBootstrap(o: ServerSideOptions): Config {
  return {
    ...bootstrapBase({ nodeId: o.nodeId ?? 'server-side-envoy', adminPort: o.adminPort, ...(o.nodeMetadata ? { metadata: o.nodeMetadata } : {}) }),
    static_resources: {
      listeners: [
        {
          name: 'mtls_ingress',
          address: { socket_address: { address: '127.0.0.1', port_value: o.listenPort } },
          filter_chains: [
            {
              filters: [
                httpConnectionManager('ingress', 'app', {
                  forward_client_cert_details: 'SANITIZE_SET',
                  set_current_client_cert_details: { uri: true, cert: true },
                }),
              ],
              transport_socket: {
                name: 'envoy.transport_sockets.tls',
                typed_config: {
                  '@type': TYPE.downstreamTls,
                  require_client_certificate: true,
                  common_tls_context: sdsCommonTlsContext({ certificate: o.certificate, bundle: o.bundle, peerSpiffeId: o.clientSpiffeId }),
                },
              },
            },
          ],
        },
      ],
      clusters: [sdsCluster(o.socketPath), staticCluster('app', o.appPort)],
    },
  };
}

export interface ClientSideOptions {
  nodeId?: string;
  nodeMetadata?: Config;
  adminPort: number;
  socketPath: string;
  /** Plain HTTP listener the test sends requests to. */
  listenPort: number;
  /** The server-side Envoy's mTLS listener. */
  upstreamPort: number;
  /** Name of the cluster that originates mTLS (stats: `cluster.<name>.ssl.*`). */
  clusterName: string;
  sni: string;
  certificate: string;
  bundle: string;
  serverSpiffeId: string;
  /** Requests per upstream connection; 1 = a new TLS handshake for every request. */
  maxRequestsPerConnection?: number;
}

/** An Envoy next to a client: plain HTTP in, mTLS out to the server-side Envoy. */
export function clientSideBootstrap(o: ClientSideOptions): Config {
  return {
    ...bootstrapBase({ nodeId: o.nodeId ?? 'client-side-envoy', adminPort: o.adminPort, ...(o.nodeMetadata ? { metadata: o.nodeMetadata } : {}) }),
    static_resources: {
      listeners: [
        {
          name: 'plain_egress',
          address: { socket_address: { address: '127.0.0.1', port_value: o.listenPort } },
          filter_chains: [{ filters: [httpConnectionManager('egress', o.clusterName)] }],
        },
      ],
      clusters: [
        sdsCluster(o.socketPath),
        staticCluster(o.clusterName, o.upstreamPort, {
          typed_extension_protocol_options: {
            'envoy.extensions.upstreams.http.v3.HttpProtocolOptions': {
              '@type': TYPE.httpOptions,
              ...(o.maxRequestsPerConnection !== undefined
                ? { common_http_protocol_options: { max_requests_per_connection: o.maxRequestsPerConnection } }
                : {}),
              explicit_http_config: { http_protocol_options: {} },
            },
          },
          transport_socket: {
            name: 'envoy.transport_sockets.tls',
            typed_config: {
              '@type': TYPE.upstreamTls,
              sni: o.sni,
              common_tls_context: sdsCommonTlsContext({ certificate: o.certificate, bundle: o.bundle, peerSpiffeId: o.serverSpiffeId }),
            },
          },
        }),
      ],
    },
  };
}

export interface SdsTlsListenerOptions {
  name: string;
  port: number;
  /** SDS name of the certificate the listener presents. */
  certificate: string;
  sds?: SdsConfigSourceOptions;
}

/** An HTTP connection manager that answers every request itself with 200 `<name>`. */
export function directResponseFilter(name: string): Config {
  return {
    name: 'envoy.filters.network.http_connection_manager',
    typed_config: {
      '@type': TYPE.hcm,
      stat_prefix: name,
      route_config: {
        name: 'local',
        virtual_hosts: [{ name: 'all', domains: ['*'], routes: [{ match: { prefix: '/' }, direct_response: { status: 200, body: { inline_string: name } } }] }],
      },
      http_filters: [{ name: 'envoy.filters.http.router', typed_config: { '@type': TYPE.router } }],
    },
  };
}

/**
 * A listener on 127.0.0.1 that terminates TLS with a certificate from SDS (no client certificate)
 * and answers every request itself with 200 `<name>`: no upstream needed.
 */
export function sdsTlsListener(o: SdsTlsListenerOptions): Config {
  return {
    name: o.name,
    address: { socket_address: { address: '127.0.0.1', port_value: o.port } },
    filter_chains: [
      {
        filters: [
          directResponseFilter(o.name),
        ],
        transport_socket: {
          name: 'envoy.transport_sockets.tls',
          typed_config: {
            '@type': TYPE.downstreamTls,
            common_tls_context: { tls_certificate_sds_secret_configs: [{ name: o.certificate, sds_config: sdsConfigSource(o.sds) }] },
          },
        },
      },
    ],
  };
}

/**
 * An Envoy whose listeners are static (`listeners`) or come from a watched LDS file (`ldsFile`:
 * Envoy re-reads it when a file is moved into its directory, so rewrite it with
 * {@link writeLdsFile}), with the `sds` cluster for their secrets.
 */
export function sdsListenersBootstrap(o: {
  nodeId: string;
  adminPort: number;
  socketPath: string;
  listeners?: Config[];
  ldsFile?: string;
  /** Runtime flags (a static runtime layer), e.g. `{ 'envoy.reloadable_features.unified_mux': true }`. */
  runtime?: Config;
}): Config {
  return {
    ...bootstrapBase({ nodeId: o.nodeId, adminPort: o.adminPort }),
    ...(o.runtime ? { layered_runtime: { layers: [{ name: 'static', static_layer: o.runtime }] } } : {}),
    ...(o.ldsFile
      ? {
          dynamic_resources: {
            lds_config: {
              resource_api_version: 'V3',
              path_config_source: { path: o.ldsFile, watched_directory: { path: path.dirname(o.ldsFile) } },
            },
          },
        }
      : {}),
    static_resources: { listeners: o.listeners ?? [], clusters: [sdsCluster(o.socketPath)] },
  };
}

export const LISTENER_TYPE_URL = 'type.googleapis.com/envoy.config.listener.v3.Listener';

/** Writes the LDS file atomically (temp file in the same directory, then rename), as Envoy expects. */
export async function writeLdsFile(file: string, listeners: Config[]): Promise<void> {
  const tmp = path.join(path.dirname(file), `.${path.basename(file)}.tmp`);
  await writeFile(tmp, toYaml({ resources: listeners.map((l) => ({ '@type': LISTENER_TYPE_URL, ...l })) }, { version: '1.1' }));
  await rename(tmp, file);
}

/**
 * Writes `config` as `<dir>/<name>.yaml`. YAML 1.1 rules, as Envoy's parser reads them: strings
 * such as `y` or `on` are quoted rather than becoming booleans.
 */
export async function writeBootstrap(dir: string, name: string, config: Config): Promise<string> {
  const file = path.join(dir, `${name}.yaml`);
  await writeFile(file, toYaml(config, { version: '1.1' }));
  return file;
}

// ---------------------------------------------------------------------------------------------
// Envoy processes

/** Envoy's admin `/certs` JSON. */
export interface EnvoyCertDetails {
  path?: string;
  serial_number: string;
  subject_alt_names?: Array<{ uri?: string; dns?: string; ip_address?: string }>;
  days_until_expiration?: string;
  valid_from?: string;
  expiration_time?: string;
}
export interface EnvoyCerts {
  certificates: Array<{ ca_cert?: EnvoyCertDetails[]; cert_chain?: EnvoyCertDetails[] }>;
}

const MAX_OUTPUT_CHARS = 1_000_000;
const running = new Set<ChildProcess>();
let exitHookInstalled = false;

/** Kill every Envoy still running when this process exits (a crashed test must not leak Envoys). */
function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.once('exit', () => {
    for (const child of running) child.kill('SIGKILL');
  });
}

export interface StartEnvoyOptions {
  bin: string;
  /** Run Envoy as this user (the test runs as root); its bootstrap and binary must be readable by it. */
  user?: { uid: number; gid: number };
  /** Label in output and errors, e.g. `server-side`. */
  name: string;
  bootstrapFile: string;
  adminPort: number;
  /**
   * Wait until /ready says LIVE (default true). Otherwise wait only until the admin endpoint
   * answers, so a config or bind error still fails the start.
   */
  waitReady?: boolean;
  readyTimeoutMs?: number;
  logLevel?: 'trace' | 'debug' | 'info' | 'warn' | 'error';
  /** More command-line arguments, e.g. `['--drain-time-s', '1']`. */
  extraArgs?: string[];
}

export class EnvoyProcess {
  private chunks: string[] = [];
  private chars = 0;
  private exitInfo: { code: number | null; signal: NodeJS.Signals | null } | undefined;
  readonly exited: Promise<void>;

  private constructor(
    readonly name: string,
    readonly adminPort: number,
    readonly bootstrapFile: string,
    private readonly child: ChildProcess,
  ) {
    const collect = (stream: string) => (data: Buffer): void => this.append(stream, data.toString('utf8'));
    child.stdout?.on('data', collect('stdout'));
    child.stderr?.on('data', collect('stderr'));
    this.exited = new Promise((resolve) => {
      child.once('exit', (code, signal) => {
        this.exitInfo = { code, signal };
        running.delete(child);
        this.append('harness', `envoy exited (code ${code}, signal ${signal})\n`);
        resolve();
      });
    });
  }

  static async start(opts: StartEnvoyOptions): Promise<EnvoyProcess> {
    installExitHook();
    const args = [
      '-c', opts.bootstrapFile,
      // Several Envoys run side by side: no shared memory for hot restart.
      '--disable-hot-restart',
      '--log-level', opts.logLevel ?? 'info',
      '--concurrency', '1',
      ...(opts.extraArgs ?? []),
    ];
    const child = spawn(opts.bin, args, { stdio: ['ignore', 'pipe', 'pipe'], ...(opts.user ?? {}) });
    running.add(child);
    const envoy = new EnvoyProcess(opts.name, opts.adminPort, opts.bootstrapFile, child);
    await new Promise<void>((resolve, reject) => {
      child.once('spawn', () => resolve());
      child.once('error', (err) => reject(new Error(`cannot start Envoy ${opts.bin}: ${err.message}`)));
    });
    try {
      if (opts.waitReady ?? true) await envoy.waitReady(opts.readyTimeoutMs);
      else await envoy.waitAdmin(opts.readyTimeoutMs);
    } catch (err) {
      await envoy.stop();
      throw err;
    }
    return envoy;
  }

  get pid(): number {
    if (this.child.pid === undefined) throw new Error(`${this.name}: Envoy has no pid`);
    return this.child.pid;
  }

  get isRunning(): boolean {
    return this.exitInfo === undefined;
  }

  /** Everything Envoy printed (stdout and stderr), capped at the last ~1 MB. */
  output(): string {
    return this.chunks.join('');
  }

  private append(stream: string, text: string): void {
    const chunk = stream === 'stderr' ? text : `[${stream}] ${text}`;
    this.chunks.push(chunk);
    this.chars += chunk.length;
    while (this.chars > MAX_OUTPUT_CHARS && this.chunks.length > 1) this.chars -= this.chunks.shift()?.length ?? 0;
  }

  /** GET on the admin endpoint. */
  async admin(pathAndQuery: string): Promise<HttpResult> {
    return httpRequest({ port: this.adminPort, path: pathAndQuery, timeoutMs: 2_000 });
  }

  async isReady(): Promise<boolean> {
    try {
      return (await this.admin('/ready')).status === 200;
    } catch {
      return false;
    }
  }

  async waitReady(timeoutMs = 10_000): Promise<void> {
    await this.waitAdminState('ready', () => this.isReady(), timeoutMs);
  }

  /** Waits until the admin endpoint answers at all (Envoy has loaded its config and bound its ports). */
  async waitAdmin(timeoutMs = 10_000): Promise<void> {
    const answers = async (): Promise<boolean> => {
      try {
        await this.admin('/ready');
        return true;
      } catch {
        return false;
      }
    };
    await this.waitAdminState('up', answers, timeoutMs);
  }

  private async waitAdminState(state: string, check: () => Promise<boolean>, timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!(await check())) {
      if (!this.isRunning) throw new Error(`${this.name}: Envoy exited before it was ${state} (${JSON.stringify(this.exitInfo)}):\n${this.output()}`);
      if (Date.now() > deadline) throw new Error(`${this.name}: Envoy not ${state} after ${timeoutMs} ms`);
      await sleep(25);
    }
  }

  async certs(): Promise<EnvoyCerts> {
    const res = await this.admin('/certs');
    if (res.status !== 200) throw new Error(`${this.name}: /certs answered ${res.status}`);
    return JSON.parse(res.body) as EnvoyCerts;
  }

  /** Serial of the first certificate of the first TLS context that has one (this harness configures one per Envoy). */
  async servedSerial(): Promise<string | undefined> {
    const certs = await this.certs();
    return certs.certificates.find((c) => (c.cert_chain?.length ?? 0) > 0)?.cert_chain?.[0]?.serial_number;
  }

  /** Counters and gauges by name. */
  async stats(filter?: string): Promise<Map<string, number>> {
    const query = `/stats?format=json${filter ? `&filter=${encodeURIComponent(filter)}` : ''}`;
    const res = await this.admin(query);
    if (res.status !== 200) throw new Error(`${this.name}: ${query} answered ${res.status}`);
    const parsed = JSON.parse(res.body) as { stats?: Array<{ name?: string; value?: number }> };
    const map = new Map<string, number>();
    for (const s of parsed.stats ?? []) if (s.name !== undefined && typeof s.value === 'number') map.set(s.name, s.value);
    return map;
  }

  /**
   * One counter or gauge. Throws when Envoy has no such stat, so a misspelt name cannot pass as 0;
   * `orZero` allows stats Envoy creates lazily.
   */
  async stat(name: string, { orZero = false }: { orZero?: boolean } = {}): Promise<number> {
    const value = (await this.stats(`^${name.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}$`)).get(name);
    if (value === undefined && !orZero) throw new Error(`${this.name}: no stat named ${name}`);
    return value ?? 0;
  }

  /** SIGTERM, then SIGKILL after `graceMs`. */
  async stop(graceMs = 5_000): Promise<void> {
    if (!this.isRunning) return;
    this.child.kill('SIGTERM');
    const timer = setTimeout(() => this.child.kill('SIGKILL'), graceMs);
    await this.exited;
    clearTimeout(timer);
  }
}

/** Runs `envoy --mode validate -c FILE`. */
export function validateEnvoyConfig(bin: string, file: string): Promise<{ ok: boolean; output: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(bin, ['--mode', 'validate', '-c', file, '--disable-hot-restart', '--log-level', 'warn'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    child.stdout.on('data', (d: Buffer) => (output += d.toString('utf8')));
    child.stderr.on('data', (d: Buffer) => (output += d.toString('utf8')));
    child.once('error', reject);
    child.once('exit', (code) => resolve({ ok: code === 0, output }));
  });
}

// ---------------------------------------------------------------------------------------------
// HTTP

export interface HttpResult {
  status: number;
  body: string;
  headers: http.IncomingHttpHeaders;
  /** True when the request went over a kept-alive connection used before. */
  reusedSocket: boolean;
}

export interface HttpRequestOptions {
  port: number;
  path?: string;
  host?: string;
  agent?: http.Agent;
  headers?: http.OutgoingHttpHeaders;
  timeoutMs?: number;
}

/** A GET; resolves with any status, rejects on a connection error or timeout. */
export function httpRequest(o: HttpRequestOptions): Promise<HttpResult> {
  return new Promise((resolve, reject) => {
    const req = http.request(
      {
        host: o.host ?? '127.0.0.1',
        port: o.port,
        path: o.path ?? '/',
        method: 'GET',
        agent: o.agent ?? false,
        headers: o.headers ?? {},
        timeout: o.timeoutMs ?? 5_000,
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('error', reject);
        res.on('end', () =>
          resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8'), headers: res.headers, reusedSocket: req.reusedSocket }),
        );
      },
    );
    req.on('timeout', () => req.destroy(new Error(`GET 127.0.0.1:${o.port}${o.path ?? '/'} timed out`)));
    req.on('error', reject);
    req.end();
  });
}

/** What the upstream app answers: who called, through which Envoy. */
export interface AppResponse {
  app: 'ok';
  path: string;
  /** `x-forwarded-client-cert` as the server-side Envoy set it. */
  xfcc?: string;
}

export interface UpstreamApp {
  port: number;
  requests: number;
  close(): Promise<void>;
}

/** A tiny HTTP app on a free loopback port: 200 with a JSON body echoing the forwarded client certificate. */
export async function startUpstreamApp(): Promise<UpstreamApp> {
  const state = { requests: 0 };
  const server = http.createServer((req, res) => {
    state.requests += 1;
    const xfcc = req.headers['x-forwarded-client-cert'];
    const body: AppResponse = { app: 'ok', path: req.url ?? '/', ...(typeof xfcc === 'string' ? { xfcc } : {}) };
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify(body));
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  return {
    port: (server.address() as net.AddressInfo).port,
    get requests() {
      return state.requests;
    },
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/** The client certificate (PEM) in an XFCC header set with `cert: true`. */
export function certFromXfcc(xfcc: string | undefined): string | undefined {
  const match = /(?:^|;)Cert="([^"]*)"/.exec(xfcc ?? '');
  return match?.[1] !== undefined ? decodeURIComponent(match[1]) : undefined;
}
