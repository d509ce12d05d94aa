/**
 * Helpers for the interop scenarios (issue #15): an in-process sds-server over files for several
 * trust domains that can be restarted with a different configuration, an Envoy listener that
 * terminates mTLS with secrets from SDS and answers by itself, a direct mTLS GET from Node, and
 * the rewriting of an example bootstrap (socket path, ports) so a test runs the file we ship.
 * Nothing here imports vitest.
 */
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import https from 'node:https';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { startApp, type RunningApp } from '../../src/cli/app.js';
import { defaultConfig, type ServerConfig } from '../../src/cli/config.js';
import { createLogger } from '../../src/core/logger.js';
import { createRootCa, issueLeaf, type CertificateAuthority, type IssuedLeaf } from '../../src/x509/issue.js';
import { RenameWriter } from '../helpers/files.js';
import { TYPE, directResponseFilter, sdsConfigSource, type Config, type SdsConfigSourceOptions } from './harness.js';
import type tls from 'node:tls';

/** One trust domain: its CA, its bundle file and the leaves issued for it. */
export interface TrustDomainFiles {
  trustDomain: string;
  /** `spiffe://<trust domain>`: the SDS name of its bundle. */
  id: string;
  ca: CertificateAuthority;
  bundle: RenameWriter;
}

/**
 * Files for several trust domains (one bundle each) and leaves for some SPIFFE IDs, served by an
 * in-process sds-server that can be stopped and started again with part of the configuration
 * (the server reads its configuration at start; SIGHUP only re-reads the secret files).
 */
export class MultiDomainSecrets {
  readonly domains = new Map<string, TrustDomainFiles>();
  readonly leaves = new Map<string, { files: RenameWriter; leaf: IssuedLeaf }>();
  readonly log: string[] = [];
  app: RunningApp | undefined;

  private constructor(readonly dir: string) {}

  readonly socketPath = (): string => path.join(this.dir, 'sds.sock');

  static async create(trustDomains: string[]): Promise<MultiDomainSecrets> {
    const secrets = new MultiDomainSecrets(await mkdtemp(path.join(tmpdir(), 'sds-interop-')));
    for (const trustDomain of trustDomains) {
      const ca = await createRootCa({ commonName: `${trustDomain} root`, trustDomain });
      const bundle = new RenameWriter(path.join(secrets.dir, `bundle-${trustDomain}`));
      await mkdir(bundle.dir);
      await bundle.init({ 'ca.pem': ca.certPem });
      secrets.domains.set(trustDomain, { trustDomain, id: `spiffe://${trustDomain}`, ca, bundle });
    }
    return secrets;
  }

  domain(trustDomain: string): TrustDomainFiles {
    const d = this.domains.get(trustDomain);
    if (!d) throw new Error(`no trust domain ${trustDomain}`);
    return d;
  }

  /** Issues a leaf for `spiffeId` from its trust domain's CA; `serve` also writes it for the server. */
  async issue(spiffeId: string, { serve = false }: { serve?: boolean } = {}): Promise<IssuedLeaf> {
    const trustDomain = new URL(spiffeId).host;
    const leaf = await issueLeaf(this.domain(trustDomain).ca, { spiffeId });
    if (serve) {
      const files = new RenameWriter(path.join(this.dir, `leaf-${this.leaves.size}`));
      await mkdir(files.dir);
      await files.init({ 'tls.crt': leaf.chainPem, 'tls.key': leaf.keyPem });
      this.leaves.set(spiffeId, { files, leaf });
    }
    return leaf;
  }

  /** Configuration serving every served leaf and the bundles of `trustDomains` (default: all). */
  config(trustDomains: string[] = [...this.domains.keys()]): ServerConfig {
    const config = defaultConfig();
    config.socket.path = this.socketPath();
    config.certificates = [...this.leaves].map(([name, { files }]) => ({ name, cert: files.path('tls.crt'), key: files.path('tls.key'), names: [] }));
    config.bundles = trustDomains.map((td) => {
      const d = this.domain(td);
      return { name: d.id, ca: [d.bundle.path('ca.pem')], trustDomain: td, names: [] };
    });
    return config;
  }

  async start(config: ServerConfig = this.config()): Promise<RunningApp> {
    if (this.app) throw new Error('sds-server is already running');
    this.app = await startApp(config, createLogger({ level: 'info', write: (line) => this.log.push(line) }));
    return this.app;
  }

  async stop(): Promise<void> {
    const app = this.app;
    this.app = undefined;
    await app?.stop();
  }

  async close(): Promise<void> {
    await this.stop();
    await rm(this.dir, { recursive: true, force: true });
  }
}

/**
 * A listener on 127.0.0.1 that requires a client certificate: its own certificate is the SDS
 * secret `certificate`, peers are validated with the SDS secret `validation` (merged with
 * `matchSan` URI SANs when given), and it answers 200 `<name>` itself.
 */
export function mtlsDirectListener(o: {
  name: string;
  port: number;
  certificate: string;
  validation: string;
  matchSan?: string[];
  /** SotW (default) or Delta, for both secrets. */
  sds?: SdsConfigSourceOptions;
}): Config {
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
            require_client_certificate: true,
            common_tls_context: {
              tls_certificate_sds_secret_configs: [{ name: o.certificate, sds_config: sdsConfigSource(o.sds) }],
              combined_validation_context: {
                default_validation_context: o.matchSan
                  ? { match_typed_subject_alt_names: o.matchSan.map((exact) => ({ san_type: 'URI', matcher: { exact } })) }
                  : {},
                validation_context_sds_secret_config: { name: o.validation, sds_config: sdsConfigSource(o.sds) },
              },
            },
          },
        },
      },
    ],
  };
}

/** `peerSerial`: the serial of the certificate the server presented (upper-case hex, as Node prints it). */
export type MtlsResult = { ok: true; status: number; body: string; peerSerial: string } | { ok: false; error: string };

/**
 * One GET over a new mTLS connection to 127.0.0.1:`port`, presenting `client` and trusting
 * `serverCas` (the server's SPIFFE certificate has no DNS name to check: only the chain is
 * verified). Never rejects: a refused handshake is `{ ok: false }`.
 */
export function mtlsGet(port: number, client: IssuedLeaf, serverCas: CertificateAuthority[]): Promise<MtlsResult> {
  return new Promise((resolve) => {
    const req = https.request(
      {
        host: '127.0.0.1',
        port,
        path: '/',
        agent: false,
        cert: client.chainPem,
        key: client.keyPem,
        ca: serverCas.map((c) => c.certPem),
        checkServerIdentity: () => undefined,
        timeout: 5_000,
      },
      (res) => {
        const chunks: Buffer[] = [];
        const peerSerial = (res.socket as tls.TLSSocket).getPeerCertificate().serialNumber;
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('error', (err) => resolve({ ok: false, error: err.message }));
        res.on('end', () => resolve({ ok: true, status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8'), peerSerial }));
      },
    );
    req.on('timeout', () => req.destroy(new Error(`GET https://127.0.0.1:${port}/ timed out`)));
    req.on('error', (err) => resolve({ ok: false, error: err.message }));
    req.end();
  });
}

/**
 * A copy of an example bootstrap made runnable here: every `pipe.path` becomes `socketPath`,
 * `0.0.0.0` becomes 127.0.0.1 (tests listen on loopback only) and every `port_value` is replaced
 * through `ports` (a port the map does not name is an error, so an
 * example cannot bind a fixed port in a test).
 */
export function rewriteExampleBootstrap(config: unknown, socketPath: string, ports: Map<number, number>): Config {
  const walk = (node: unknown): unknown => {
    if (Array.isArray(node)) return node.map(walk);
    if (node === null || typeof node !== 'object') return node;
    const out: Config = {};
    for (const [key, value] of Object.entries(node as Config)) {
      if (key === 'pipe' && value !== null && typeof value === 'object') {
        out[key] = { ...(value as Config), path: socketPath };
      } else if (key === 'address' && value === '0.0.0.0') {
        out[key] = '127.0.0.1';
      } else if (key === 'port_value' && typeof value === 'number') {
        const port = ports.get(value);
        if (port === undefined) throw new Error(`example binds port ${value}, which the test did not map`);
        out[key] = port;
      } else {
        out[key] = walk(value);
      }
    }
    return out;
  };
  return walk(config) as Config;
}
