/**
 * The Envoy topology of the end-to-end tests, with the files our sds-server serves from:
 *
 *   test --HTTP--> client-side Envoy --mTLS--> server-side Envoy --HTTP--> upstream app
 *                        \______ SDS over the Unix socket ______/
 *                                        sds-server (in this process)
 *
 * Identities live in files the way real deployments rotate them: the server-side leaf is replaced
 * by write-temp-and-rename, the client-side leaf by a Kubernetes `..data` symlink swap, the trust
 * bundle by rename. Nothing here imports vitest.
 */
import { readFileSync } from 'node:fs';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import https from 'node:https';
import { tmpdir } from 'node:os';
import path from 'node:path';
import tls from 'node:tls';
import { startApp, type RunningApp } from '../../src/cli/app.js';
import { defaultConfig, type ServerConfig } from '../../src/cli/config.js';
import { createLogger } from '../../src/core/logger.js';
import { createRootCa, issueLeaf, type CertificateAuthority, type IssuedLeaf } from '../../src/x509/issue.js';
import { KubernetesAtomicWriter, RenameWriter } from '../helpers/files.js';
import {
  EnvoyProcess,
  clientSideBootstrap,
  freePorts,
  httpRequest,
  serverSideBootstrap,
  startUpstreamApp,
  writeBootstrap,
  type Config,
  type HttpResult,
  type UpstreamApp,
} from './harness.js';

export const TRUST_DOMAIN = 'example.org';
/** SDS name of the trust bundle: the trust-domain ID. */
export const BUNDLE = `spiffe://${TRUST_DOMAIN}`;
export const SERVER_ID = `spiffe://${TRUST_DOMAIN}/server`;
export const CLIENT_ID = `spiffe://${TRUST_DOMAIN}/client`;
/** DNS SAN of the server leaf, and the SNI the client-side Envoy sends. */
export const SERVER_DNS = 'server.example.org';
/** The client-side Envoy's mTLS cluster: stats are `cluster.backend.ssl.*`. */
export const UPSTREAM_CLUSTER = 'backend';

export async function newCa(name: string): Promise<CertificateAuthority> {
  return createRootCa({ commonName: `${TRUST_DOMAIN} ${name}`, trustDomain: TRUST_DOMAIN });
}

/** The cert, key and CA files our sds-server watches, and the identities currently in them. */
export class MeshFiles {
  readonly server: RenameWriter;
  readonly client: KubernetesAtomicWriter;
  readonly bundle: RenameWriter;
  /** CAs currently in the bundle file. */
  cas: CertificateAuthority[] = [];
  serverLeaf!: IssuedLeaf;
  clientLeaf!: IssuedLeaf;

  constructor(readonly dir: string) {
    this.server = new RenameWriter(path.join(dir, 'server'));
    this.client = new KubernetesAtomicWriter(path.join(dir, 'client'));
    this.bundle = new RenameWriter(path.join(dir, 'bundle'));
  }

  /** Writes a first bundle and leaves from `ca`. */
  async init(ca: CertificateAuthority): Promise<void> {
    for (const d of [this.server.dir, this.client.dir, this.bundle.dir]) await mkdir(d, { recursive: true });
    this.cas = [ca];
    await this.bundle.init({ 'ca.pem': ca.certPem });
    this.serverLeaf = await issueServerLeaf(ca);
    await this.server.init({ 'tls.crt': this.serverLeaf.chainPem, 'tls.key': this.serverLeaf.keyPem });
    this.clientLeaf = await issueLeaf(ca, { spiffeId: CLIENT_ID });
    await this.client.init({ 'tls.crt': this.clientLeaf.chainPem, 'tls.key': this.clientLeaf.keyPem });
  }

  /** Replaces the server-side leaf (write temp + rename). */
  async rotateServer(leaf: IssuedLeaf): Promise<IssuedLeaf> {
    await this.server.rotate({ 'tls.crt': leaf.chainPem, 'tls.key': leaf.keyPem });
    this.serverLeaf = leaf;
    return leaf;
  }

  /** Replaces the client-side leaf (Kubernetes `..data` swap). */
  async rotateClient(leaf: IssuedLeaf): Promise<IssuedLeaf> {
    await this.client.rotate({ 'tls.crt': leaf.chainPem, 'tls.key': leaf.keyPem });
    this.clientLeaf = leaf;
    return leaf;
  }

  async setBundle(...cas: CertificateAuthority[]): Promise<void> {
    await this.bundle.rotate({ 'ca.pem': cas.map((c) => c.certPem).join('') });
    this.cas = cas;
  }

  /** sds-server configuration serving these files on `socketPath`. */
  config(socketPath: string): ServerConfig {
    const config = defaultConfig();
    config.socket.path = socketPath;
    config.certificates = [
      { name: SERVER_ID, cert: this.server.path('tls.crt'), key: this.server.path('tls.key'), names: [] },
      { name: CLIENT_ID, cert: this.client.path('tls.crt'), key: this.client.path('tls.key'), names: [] },
    ];
    config.bundles = [{ name: BUNDLE, ca: [this.bundle.path('ca.pem')], trustDomain: TRUST_DOMAIN, names: [] }];
    return config;
  }
}

export function issueServerLeaf(ca: CertificateAuthority, spiffeId = SERVER_ID): Promise<IssuedLeaf> {
  return issueLeaf(ca, { spiffeId, dnsNames: [SERVER_DNS] });
}

export function issueClientLeaf(ca: CertificateAuthority): Promise<IssuedLeaf> {
  return issueLeaf(ca, { spiffeId: CLIENT_ID });
}

export interface MeshOptions {
  envoyBin: string;
  /** Start sds-server before the Envoys (default true). */
  sdsFirst?: boolean;
  /** Upstream requests per connection of the client-side Envoy (default 1: a handshake per request). */
  maxRequestsPerConnection?: number;
  /** Node metadata of the server-side Envoy, e.g. `{ disable_spiffe_cert_validation: true }`. */
  serverNodeMetadata?: Config;
  /**
   * Where sds-server gets the identities: the watched files (default), or its embedded CA issuing
   * both leaves with this lifetime (keys in memory, renewed at half the lifetime).
   */
  embeddedCa?: { lifetimeSeconds: number };
  /** Give sds-server an admin listener (loopback, a free port): /status, /clients, /metrics. */
  admin?: boolean;
}

/** sds-server configuration with both identities issued by its embedded CA (root in memory). */
export function embeddedCaConfig(socketPath: string, lifetimeSeconds: number): ServerConfig {
  const config = defaultConfig();
  config.socket.path = socketPath;
  config.ca = { ...config.ca, trustDomain: TRUST_DOMAIN, jitterFraction: 0.01, bundlePropagationMs: 500, bundleRefreshMs: 0 };
  config.identities = [
    { spiffeId: SERVER_ID, dnsNames: [SERVER_DNS], keyType: 'ec-p256', lifetimeSeconds, names: [] },
    { spiffeId: CLIENT_ID, dnsNames: [], keyType: 'ec-p256', lifetimeSeconds, names: [] },
  ];
  return config;
}

export class Mesh {
  /** sds-server's log lines (JSON), across restarts. */
  readonly sdsLog: string[] = [];
  sds: RunningApp | undefined;
  serverEnvoy!: EnvoyProcess;
  clientEnvoy!: EnvoyProcess;

  private constructor(
    readonly opts: MeshOptions,
    readonly dir: string,
    readonly files: MeshFiles,
    readonly app: UpstreamApp,
    readonly socketPath: string,
    readonly ports: { serverAdmin: number; serverListener: number; clientAdmin: number; clientListener: number },
  ) {}

  /**
   * Files, upstream app, sds-server and both Envoys, ready to serve (unless `sdsFirst: false`).
   * Tries again with new ports when another process took one of the free ports found for Envoy.
   */
  static async start(opts: MeshOptions): Promise<Mesh> {
    for (let attempt = 1; ; attempt++) {
      try {
        return await Mesh.startOnce(opts);
      } catch (err) {
        if (attempt >= 3 || !/Address already in use/.test((err as Error).message)) throw err;
      }
    }
  }

  private static async startOnce(opts: MeshOptions): Promise<Mesh> {
    const dir = await mkdtemp(path.join(tmpdir(), 'sds-envoy-'));
    const files = new MeshFiles(dir);
    await files.init(await newCa('root CA 1'));
    const app = await startUpstreamApp();
    const [serverAdmin, serverListener, clientAdmin, clientListener] = (await freePorts(4)) as [number, number, number, number];
    const mesh = new Mesh(opts, dir, files, app, path.join(dir, 'sds.sock'), { serverAdmin, serverListener, clientAdmin, clientListener });
    try {
      const sdsFirst = opts.sdsFirst ?? true;
      if (sdsFirst) await mesh.startSds();
      await mesh.startEnvoys({ waitReady: sdsFirst });
    } catch (err) {
      const report = mesh.report();
      await mesh.close();
      throw new Error(`could not start the Envoy mesh: ${(err as Error).message}\n${report}`);
    }
    return mesh;
  }

  serverBootstrap(): ReturnType<typeof serverSideBootstrap> {
    return serverSideBootstrap({
      adminPort: this.ports.serverAdmin,
      socketPath: this.socketPath,
      listenPort: this.ports.serverListener,
      appPort: this.app.port,
      certificate: SERVER_ID,
      bundle: BUNDLE,
      clientSpiffeId: CLIENT_ID,
      ...(this.opts.serverNodeMetadata ? { nodeMetadata: this.opts.serverNodeMetadata } : {}),
    });
  }

  clientBootstrap(): ReturnType<typeof clientSideBootstrap> {
    return clientSideBootstrap({
      adminPort: this.ports.clientAdmin,
      socketPath: this.socketPath,
      listenPort: this.ports.clientListener,
      upstreamPort: this.ports.serverListener,
      clusterName: UPSTREAM_CLUSTER,
      sni: SERVER_DNS,
      certificate: CLIENT_ID,
      bundle: BUNDLE,
      serverSpiffeId: SERVER_ID,
      maxRequestsPerConnection: this.opts.maxRequestsPerConnection ?? 1,
    });
  }

  async startEnvoys({ waitReady }: { waitReady: boolean }): Promise<void> {
    const serverFile = await writeBootstrap(this.dir, 'server-side-envoy', this.serverBootstrap());
    const clientFile = await writeBootstrap(this.dir, 'client-side-envoy', this.clientBootstrap());
    const common = { bin: this.opts.envoyBin, waitReady };
    const [server, client] = await Promise.allSettled([
      EnvoyProcess.start({ ...common, name: 'server-side envoy', bootstrapFile: serverFile, adminPort: this.ports.serverAdmin }),
      EnvoyProcess.start({ ...common, name: 'client-side envoy', bootstrapFile: clientFile, adminPort: this.ports.clientAdmin }),
    ]);
    // Keep whichever started, so close() stops it even when the other one failed.
    if (server.status === 'fulfilled') this.serverEnvoy = server.value;
    if (client.status === 'fulfilled') this.clientEnvoy = client.value;
    if (server.status === 'rejected') throw server.reason;
    if (client.status === 'rejected') throw client.reason;
  }

  async startSds(): Promise<RunningApp> {
    if (this.sds) throw new Error('sds-server is already running');
    const log = createLogger({ level: 'info', write: (line) => this.sdsLog.push(line) });
    const config = this.opts.embeddedCa ? embeddedCaConfig(this.socketPath, this.opts.embeddedCa.lifetimeSeconds) : this.files.config(this.socketPath);
    if (this.opts.admin) config.admin = { host: '127.0.0.1', port: 0 };
    this.sds = await startApp(config, log);
    return this.sds;
  }

  async stopSds(): Promise<void> {
    const sds = this.sds;
    this.sds = undefined;
    await sds?.stop();
  }

  /** sds-server log records (parsed JSON lines). */
  sdsRecords(): Array<Record<string, unknown>> {
    return this.sdsLog.map((l) => JSON.parse(l) as Record<string, unknown>);
  }

  /** A request through the whole chain: client-side Envoy's plain listener. */
  request(pathname = '/', timeoutMs = 5_000): Promise<HttpResult> {
    return httpRequest({ port: this.ports.clientListener, path: pathname, timeoutMs });
  }

  /**
   * An HTTPS keep-alive agent straight to the server-side Envoy's mTLS listener, presenting a
   * client leaf of its own (one socket, reused while the server keeps it open).
   */
  directAgent(clientLeaf: IssuedLeaf, cas: CertificateAuthority[]): https.Agent {
    return new https.Agent({
      keepAlive: true,
      maxSockets: 1,
      cert: clientLeaf.chainPem,
      key: clientLeaf.keyPem,
      ca: cas.map((c) => c.certPem),
      servername: SERVER_DNS,
    });
  }

  /** A fresh TLS connection to the server-side Envoy: the certificate it presents now. */
  async serverPresentedCert(clientLeaf: IssuedLeaf, cas: CertificateAuthority[]): Promise<tls.PeerCertificate> {
    const socket = tls.connect({
      host: '127.0.0.1',
      port: this.ports.serverListener,
      servername: SERVER_DNS,
      cert: clientLeaf.chainPem,
      key: clientLeaf.keyPem,
      ca: cas.map((c) => c.certPem),
      ALPNProtocols: ['http/1.1'],
    });
    try {
      await new Promise<void>((resolve, reject) => {
        socket.once('secureConnect', () => resolve());
        socket.once('error', reject);
      });
      return socket.getPeerCertificate();
    } finally {
      socket.destroy();
    }
  }

  /** Envoy output, bootstraps and sds-server logs, for a failed test. */
  report(): string {
    const parts: string[] = [];
    for (const envoy of [this.serverEnvoy, this.clientEnvoy]) {
      if (!envoy) continue;
      let bootstrap: string;
      try {
        bootstrap = readFileSync(envoy.bootstrapFile, 'utf8');
      } catch (err) {
        bootstrap = `(cannot read: ${(err as Error).message})`;
      }
      parts.push(`===== ${envoy.name} (pid ${envoy.isRunning ? envoy.pid : 'exited'}, admin 127.0.0.1:${envoy.adminPort}) =====`);
      parts.push(`----- bootstrap ${envoy.bootstrapFile} -----\n${bootstrap}`);
      parts.push(`----- output -----\n${envoy.output()}`);
    }
    parts.push(`===== sds-server log =====\n${this.sdsLog.join('\n')}`);
    return parts.join('\n');
  }

  async close(): Promise<void> {
    await Promise.all([this.serverEnvoy?.stop(), this.clientEnvoy?.stop()]);
    await this.stopSds();
    await this.app.close();
    await rm(this.dir, { recursive: true, force: true });
  }
}

/** An HTTPS response, with the serial of the certificate the server presented on that connection. */
export interface DirectResult extends HttpResult {
  peerSerial: string;
}

/** GET over an agent from {@link Mesh.directAgent}. */
export async function requestAgent(agent: https.Agent, port: number, pathname = '/'): Promise<DirectResult> {
  return new Promise((resolve, reject) => {
    const req = https.request({ host: '127.0.0.1', port, path: pathname, agent, timeout: 5_000 }, (res) => {
      const chunks: Buffer[] = [];
      const peerSerial = (res.socket as tls.TLSSocket).getPeerCertificate().serialNumber;
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('error', reject);
      res.on('end', () =>
        resolve({
          status: res.statusCode ?? 0,
          body: Buffer.concat(chunks).toString('utf8'),
          headers: res.headers,
          reusedSocket: req.reusedSocket,
          peerSerial,
        }),
      );
    });
    req.on('timeout', () => req.destroy(new Error(`GET https://127.0.0.1:${port}${pathname} timed out`)));
    req.on('error', reject);
    req.end();
  });
}

/** Envoy stat names (as Envoy 1.40 spells them). */
export const STAT = {
  /** TLS stats of the server-side Envoy's mTLS listener. */
  listenerSsl: (port: number, name: string): string => `listener.127.0.0.1_${port}.ssl.${name}`,
  /** TLS stats of the client-side Envoy's upstream mTLS cluster. */
  clusterSsl: (name: string): string => `cluster.${UPSTREAM_CLUSTER}.ssl.${name}`,
  /** Per-secret SDS stats; Envoy writes `spiffe://x` as `spiffe_x`. */
  sds: (secret: string, name: string): string => `sds.${secret.replace('://', '_')}.${name}`,
};
