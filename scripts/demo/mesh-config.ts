/**
 * The demo mesh, defined once: two services (`front`, `back`), each an HTTP app with an Envoy
 * sidecar, mTLS between the sidecars with SPIFFE identities that sds-server's embedded CA issues
 * and rotates.
 *
 *   front app --HTTP--> front Envoy (egress) --mTLS--> back Envoy (inbound) --HTTP--> back app
 *                              \____ SDS over one Unix socket ____/
 *                                           sds-server
 *
 * Everything both runs of the mesh need comes from here, so they cannot drift apart:
 *   - docker-compose.yml mounts the files rendered by {@link composeFiles} (committed under
 *     examples/demo/, re-rendered by `npx tsx scripts/demo/render-examples.ts`, compared by test/examples.test.ts);
 *   - `npm run demo` (scripts/demo/run-demo.ts) renders the same bootstraps and server config with
 *     {@link localSidecar} / {@link serverConfig}: temp socket path, free loopback ports.
 *
 * No vitest import: scripts and tests both use this module.
 */
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { stringify as toYaml } from 'yaml';

/** A JSON/YAML config object. */
export type Config = { [key: string]: unknown };

export const TRUST_DOMAIN = 'example.org';
/** SDS name of the trust bundle: the trust-domain ID. */
export const BUNDLE = `spiffe://${TRUST_DOMAIN}`;
export const SERVICES = ['front', 'back'] as const;
export type Service = (typeof SERVICES)[number];
export const PEER: Record<Service, Service> = { front: 'back', back: 'front' };

export const spiffeId = (service: Service): string => `spiffe://${TRUST_DOMAIN}/${service}`;
/** The DNS SAN of a service's certificate and the name its peers reach it by (a compose network alias). */
export const dnsName = (service: Service): string => `${service}.apps.local`;

/** Certificate lifetime of the demo identities (renewed at half: a rotation every ~15 s). */
export const DEFAULT_LIFETIME = '30s';

/** The SDS cluster name App Mesh uses in its Envoy bootstraps. */
export const SDS_CLUSTER = 'static_cluster_sds_unix_socket';
/** Stat prefix of the inbound mTLS listener: stats are `listener.inbound_mtls.ssl.*`. */
export const INBOUND_STAT_PREFIX = 'inbound_mtls';

/** Envoy stats the demo prints (and an operator would check by hand on the admin endpoint). */
export const STATS = {
  /** Handshakes completed by a sidecar's inbound mTLS listener (the server side of the demo traffic). */
  inboundHandshake: `listener.${INBOUND_STAT_PREFIX}.ssl.handshake`,
  /** Failed TLS handshakes on the inbound listener. */
  inboundConnectionError: `listener.${INBOUND_STAT_PREFIX}.ssl.connection_error`,
  /** Failed TLS handshakes of the sidecar's outbound cluster to its peer. */
  egressConnectionError: (service: Service): string => `cluster.${PEER[service]}.ssl.connection_error`,
} as const;

/** Fixed paths and ports inside the containers of docker-compose.yml. */
export const CONTAINER = {
  /** Shared volume mounted by sds-server (read-write) and both Envoys (read-only). */
  socketDir: '/run/sds',
  socketPath: '/run/sds/sds.sock',
  /**
   * Group that may connect to the socket: the Envoys run as 1337:1337 (App Mesh's Envoy uid), the
   * server joins the group (compose `group_add`) and sets the socket to root-less mode 0660 with it.
   */
  envoyUser: '1337:1337',
  socketGroup: '1337',
  serverConfigPath: '/etc/sds-server/sds-server.yaml',
  envoyConfigPath: '/etc/envoy/envoy.yaml',
  caDataDir: '/var/lib/sds-server/ca',
  serverAdmin: '0.0.0.0:9000',
  ports: { app: 8080, inbound: 15000, egress: 15001, admin: 9901 },
} as const;

/** The files docker-compose.yml mounts, relative to the repository root. */
export const EXAMPLE_FILES = {
  envoy: { front: 'examples/demo/front-envoy.yaml', back: 'examples/demo/back-envoy.yaml' } as Record<Service, string>,
  server: 'examples/demo/sds-server.yaml',
} as const;

/** Pinned images (the Envoy tag matches envoy-version.txt; the Node tag is the Dockerfile's base). */
export const IMAGES = { envoy: 'envoyproxy/envoy:v1.40.0' } as const;

// ---------------------------------------------------------------------------------------------
// Envoy sidecar bootstrap

export interface SidecarOptions {
  service: Service;
  /** sds-server's socket. */
  socketPath: string;
  /** Address of the inbound mTLS listener and the admin endpoint: 0.0.0.0 in containers, 127.0.0.1 locally. */
  bindAddress: string;
  ports: { admin: number; inbound: number; egress: number; app: number };
  /** Where the peer's inbound mTLS listener is. */
  peer: { host: string; port: number };
}

const TYPE = {
  hcm: 'type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager',
  router: 'type.googleapis.com/envoy.extensions.filters.http.router.v3.Router',
  downstreamTls: 'type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext',
  upstreamTls: 'type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext',
  httpOptions: 'type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions',
} as const;

function socketAddress(address: string, port: number): Config {
  return { socket_address: { address, port_value: port } };
}

/** Every SDS secret: v3 over gRPC on the socket cluster; wait for it however long it takes. */
function sdsConfig(): Config {
  return {
    resource_api_version: 'V3',
    initial_fetch_timeout: '0s',
    api_config_source: {
      api_type: 'GRPC',
      transport_api_version: 'V3',
      set_node_on_first_message_only: true,
      grpc_services: [
        { envoy_grpc: { cluster_name: SDS_CLUSTER, retry_policy: { retry_back_off: { base_interval: '0.1s', max_interval: '1s' } } } },
      ],
    },
  };
}

/** Our certificate and the peer check: trust bundle from SDS, peer must be `peer`'s SPIFFE ID. */
function commonTlsContext(self: Service, peer: Service): Config {
  return {
    tls_certificate_sds_secret_configs: [{ name: spiffeId(self), sds_config: sdsConfig() }],
    combined_validation_context: {
      default_validation_context: {
        match_typed_subject_alt_names: [{ san_type: 'URI', matcher: { exact: spiffeId(peer) } }],
      },
      validation_context_sds_secret_config: { name: BUNDLE, sds_config: sdsConfig() },
    },
  };
}

function httpConnectionManager(statPrefix: string, cluster: string, extra: Config = {}): Config {
  return {
    name: 'envoy.filters.network.http_connection_manager',
    typed_config: {
      '@type': TYPE.hcm,
      stat_prefix: statPrefix,
      ...extra,
      route_config: {
        name: statPrefix,
        virtual_hosts: [{ name: cluster, domains: ['*'], routes: [{ match: { prefix: '/' }, route: { cluster, timeout: '5s' } }] }],
      },
      http_filters: [{ name: 'envoy.filters.http.router', typed_config: { '@type': TYPE.router } }],
    },
  };
}

function endpoint(cluster: string, address: Config): Config {
  return { cluster_name: cluster, endpoints: [{ lb_endpoints: [{ endpoint: { address } }] }] };
}

/**
 * One sidecar: an inbound mTLS listener in front of the app (only the peer's SPIFFE ID gets in, the
 * app sees it in `x-forwarded-client-cert`), a plain egress listener on loopback that originates
 * mTLS to the peer (checking the peer's SPIFFE ID), and the SDS cluster on the Unix socket.
 */
export function sidecarBootstrap(o: SidecarOptions): Config {
  const peer = PEER[o.service];
  return {
    node: { id: o.service, cluster: o.service },
    admin: { address: socketAddress(o.bindAddress, o.ports.admin) },
    static_resources: {
      listeners: [
        {
          name: 'inbound_mtls',
          stat_prefix: INBOUND_STAT_PREFIX,
          address: socketAddress(o.bindAddress, o.ports.inbound),
          filter_chains: [
            {
              filters: [
                httpConnectionManager('inbound', 'local_app', {
                  forward_client_cert_details: 'SANITIZE_SET',
                  set_current_client_cert_details: { uri: true },
                }),
              ],
              transport_socket: {
                name: 'envoy.transport_sockets.tls',
                typed_config: { '@type': TYPE.downstreamTls, require_client_certificate: true, common_tls_context: commonTlsContext(o.service, peer) },
              },
            },
          ],
        },
        {
          name: 'egress',
          address: socketAddress('127.0.0.1', o.ports.egress),
          filter_chains: [{ filters: [httpConnectionManager('egress', peer)] }],
        },
      ],
      clusters: [
        {
          name: 'local_app',
          type: 'STATIC',
          connect_timeout: '1s',
          load_assignment: endpoint('local_app', socketAddress('127.0.0.1', o.ports.app)),
        },
        {
          name: peer,
          type: 'STRICT_DNS',
          dns_lookup_family: 'V4_ONLY',
          connect_timeout: '1s',
          load_assignment: endpoint(peer, socketAddress(o.peer.host, o.peer.port)),
          typed_extension_protocol_options: {
            'envoy.extensions.upstreams.http.v3.HttpProtocolOptions': {
              '@type': TYPE.httpOptions,
              // A new connection, so a new mTLS handshake, for every request: a rotated certificate is
              // used (and counted in ssl.handshake) at once. Drop this outside a demo.
              common_http_protocol_options: { max_requests_per_connection: 1 },
              explicit_http_config: { http_protocol_options: {} },
            },
          },
          transport_socket: {
            name: 'envoy.transport_sockets.tls',
            typed_config: { '@type': TYPE.upstreamTls, sni: dnsName(peer), common_tls_context: commonTlsContext(o.service, peer) },
          },
        },
        {
          name: SDS_CLUSTER,
          type: 'STATIC',
          connect_timeout: '1s',
          typed_extension_protocol_options: {
            'envoy.extensions.upstreams.http.v3.HttpProtocolOptions': {
              '@type': TYPE.httpOptions,
              explicit_http_config: { http2_protocol_options: {} },
            },
          },
          load_assignment: endpoint(SDS_CLUSTER, { pipe: { path: o.socketPath } }),
        },
      ],
    },
  };
}

/** The sidecar of `service` in docker-compose.yml: fixed paths and ports, peers by DNS name. */
export function composeSidecar(service: Service): SidecarOptions {
  return {
    service,
    socketPath: CONTAINER.socketPath,
    bindAddress: '0.0.0.0',
    ports: { ...CONTAINER.ports },
    peer: { host: dnsName(PEER[service]), port: CONTAINER.ports.inbound },
  };
}

/** Ports of one service in the local run (all on 127.0.0.1). */
export interface LocalPorts {
  admin: number;
  inbound: number;
  egress: number;
  app: number;
}

/** The sidecar of `service` in `npm run demo`: temp socket, free loopback ports. */
export function localSidecar(service: Service, socketPath: string, ports: Record<Service, LocalPorts>): SidecarOptions {
  return {
    service,
    socketPath,
    bindAddress: '127.0.0.1',
    ports: { ...ports[service] },
    peer: { host: '127.0.0.1', port: ports[PEER[service]].inbound },
  };
}

// ---------------------------------------------------------------------------------------------
// sds-server configuration

export interface ServerConfigOptions {
  /** Certificate lifetime, e.g. `30s`. */
  lifetime: string;
  /** Where the embedded CA keeps its root. */
  dataDir: string;
  /** `host:port` of /healthz, /ready, /status. */
  adminAddress: string;
  logFormat: 'json' | 'text';
  /** Group allowed to connect to the socket (mode 0660). */
  socketGroup?: string;
}

/**
 * sds-server config: the embedded CA issues one identity per service. The socket path is not in
 * the file: the server takes it from APPMESH_SDS_SOCKET_PATH, as App Mesh sets it.
 */
export function serverConfig(o: ServerConfigOptions): Config {
  return {
    socket: { mode: '0660', ...(o.socketGroup !== undefined ? { group: o.socketGroup } : {}) },
    admin: { address: o.adminAddress },
    log: { format: o.logFormat, level: 'info' },
    ca: { backend: 'embedded', trustDomain: TRUST_DOMAIN, embedded: { dataDir: o.dataDir } },
    identities: SERVICES.map((s) => ({ spiffeId: spiffeId(s), dnsNames: [dnsName(s)], lifetime: o.lifetime, names: [s] })),
  };
}

/** The server config docker-compose.yml mounts. */
export function composeServerConfig(): Config {
  return serverConfig({ lifetime: DEFAULT_LIFETIME, dataDir: CONTAINER.caDataDir, adminAddress: CONTAINER.serverAdmin, logFormat: 'text', socketGroup: CONTAINER.socketGroup });
}

// ---------------------------------------------------------------------------------------------
// Rendering

/** YAML as Envoy reads it (YAML 1.1: `on`, `y` and friends stay strings), after a comment header. */
export function renderYaml(config: Config, header: string[] = []): string {
  const comments = header.map((line) => (line ? `# ${line}` : '#')).join('\n');
  return `${comments ? `${comments}\n` : ''}${toYaml(config, { version: '1.1', lineWidth: 0 })}`;
}

const GENERATED = 'Generated by scripts/demo/mesh-config.ts (npx tsx scripts/demo/render-examples.ts); do not edit by hand.';
const CHECKED = 'test/examples.test.ts fails when this file and the generator disagree.';

/** The committed files docker-compose.yml mounts: repository-relative path -> content. */
export function composeFiles(): Record<string, string> {
  const files: Record<string, string> = {};
  for (const service of SERVICES) {
    const peer = PEER[service];
    files[EXAMPLE_FILES.envoy[service]] = renderYaml(sidecarBootstrap(composeSidecar(service)), [
      `Envoy sidecar of "${service}" in docker-compose.yml (Envoy v3 API, validated with \`envoy --mode validate\`).`,
      GENERATED,
      CHECKED,
      '',
      `- inbound_mtls  0.0.0.0:${CONTAINER.ports.inbound}: mTLS with ${spiffeId(service)}; only ${spiffeId(peer)} gets in -> app 127.0.0.1:${CONTAINER.ports.app}`,
      `- egress        127.0.0.1:${CONTAINER.ports.egress}: plain HTTP from the app -> mTLS to ${dnsName(peer)}:${CONTAINER.ports.inbound}, must be ${spiffeId(peer)}`,
      `- admin         0.0.0.0:${CONTAINER.ports.admin}: /certs, /stats, /ready`,
      `- certificate and trust bundle (${BUNDLE}) from sds-server over ${CONTAINER.socketPath} (cluster ${SDS_CLUSTER})`,
    ]);
  }
  files[EXAMPLE_FILES.server] = renderYaml(composeServerConfig(), [
    'sds-server configuration of docker-compose.yml: the embedded CA issues both demo identities with a',
    `${DEFAULT_LIFETIME} lifetime and renews each at half its lifetime, so Envoy gets a new certificate every ~15 s.`,
    `The socket path comes from APPMESH_SDS_SOCKET_PATH (${CONTAINER.socketPath}); the Envoys (uid/gid ${CONTAINER.envoyUser})`,
    `connect through group ${CONTAINER.socketGroup}, which the server joins with compose \`group_add\`.`,
    GENERATED,
    CHECKED,
  ]);
  return files;
}

/** Repository root (this file is scripts/demo/mesh-config.ts). */
export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
