/**
 * The deployment examples stay true: every YAML/JSON file under examples/ parses; docker-compose.yml,
 * the Dockerfile, the committed demo files and `npm run demo` agree on Envoy configs, socket path
 * and images; the Kubernetes manifests agree on socket paths with the App Mesh controller's default;
 * the App Mesh virtual nodes name secrets the server issues; and the v2 bootstrap is a v2 config
 * whose every secret a real sds-server answers over SDS v2.
 */
import { execFileSync } from 'node:child_process';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { existsSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parse as parseYaml, parseAllDocuments } from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startApp, type RunningApp } from '../src/cli/app.js';
import { defaultConfig, parseConfigFile, type ServerConfig } from '../src/cli/config.js';
import { IdentityTemplate } from '../src/authorization/entitlements.js';
import { decodeAs, protoRoot } from '../src/api/proto-root.js';
import type { Secret__Output as SecretV2__Output } from '../src/api/generated/envoy/api/v2/auth/Secret.js';
import { silentLogger } from '../src/core/logger.js';
import {
  CONTAINER,
  EXAMPLE_FILES,
  IMAGES,
  PEER,
  SDS_CLUSTER,
  SERVICES,
  TRUST_DOMAIN,
  composeFiles,
  composeServerConfig,
  composeSidecar,
  dnsName,
  localSidecar,
  serverConfig,
  sidecarBootstrap,
  spiffeId,
  type Config,
  type LocalPorts,
  type Service,
} from '../scripts/demo/mesh-config.js';
import { SECRET_TYPE_URL, SdsTestClient, envoyNode } from './helpers/sds-client.js';
import { isCi } from './envoy/find-envoy.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const read = (rel: string): string => readFileSync(path.join(ROOT, rel), 'utf8');
/** The App Mesh controller's default `--sds-uds-path`. */
const APPMESH_SDS_SOCKET = '/run/spire/sockets/agent.sock';

type Obj = Record<string, unknown>;
const obj = (v: unknown): Obj => {
  expect(v, 'expected a mapping').toBeTypeOf('object');
  return v as Obj;
};
const list = (v: unknown): unknown[] => {
  expect(Array.isArray(v), `expected a list, got ${JSON.stringify(v)}`).toBe(true);
  return v as unknown[];
};

/** Every (path, key, value) in a parsed document. */
function* walk(node: unknown, at: string[] = []): Generator<{ path: string[]; key: string; value: unknown }> {
  if (Array.isArray(node)) {
    for (let i = 0; i < node.length; i++) yield* walk(node[i], [...at, String(i)]);
  } else if (node && typeof node === 'object') {
    for (const [key, value] of Object.entries(node)) {
      yield { path: [...at, key], key, value };
      yield* walk(value, [...at, key]);
    }
  }
}

/** Leaf paths where two documents differ. */
function differingLeaves(a: unknown, b: unknown, at: string[] = []): string[][] {
  if (a && b && typeof a === 'object' && typeof b === 'object') {
    const keys = new Set([...Object.keys(a), ...Object.keys(b)]);
    return [...keys].flatMap((k) => differingLeaves((a as Obj)[k], (b as Obj)[k], [...at, k]));
  }
  return Object.is(a, b) ? [] : [at];
}

function yamlDocs(rel: string): Obj[] {
  return parseAllDocuments(read(rel)).map((d) => {
    expect(d.errors, `${rel}: ${d.errors.map((e) => e.message).join('; ')}`).toEqual([]);
    return obj(d.toJS());
  });
}

function serverConfigFrom(text: string, file: string): ServerConfig {
  return parseConfigFile(text, path.join(ROOT, file));
}

/** `--flag value` from an args list. */
function flag(args: unknown, name: string): string | undefined {
  const a = list(args).map(String);
  const i = a.indexOf(name);
  return i >= 0 ? a[i + 1] : undefined;
}

/** SDS secret names an Envoy bootstrap asks for. */
function sdsSecretNames(bootstrap: unknown): string[] {
  const names = new Set<string>();
  for (const { key, value } of walk(bootstrap)) {
    if (key === 'tls_certificate_sds_secret_configs') for (const c of list(value)) names.add(String(obj(c).name));
    if (key === 'validation_context_sds_secret_config') names.add(String(obj(value).name));
  }
  return [...names].sort();
}

/** The `pipe` path of a bootstrap's SDS cluster. */
function sdsPipe(bootstrap: unknown, cluster = SDS_CLUSTER): string | undefined {
  const clusters = list(obj(obj(bootstrap).static_resources).clusters).map(obj);
  const c = clusters.find((x) => x.name === cluster);
  for (const { key, value } of walk(c)) if (key === 'pipe') return String(obj(value).path);
  return undefined;
}

describe('every file under examples/ parses', () => {
  it('YAML (all documents) and JSON', async () => {
    const files = (await readdir(path.join(ROOT, 'examples'), { recursive: true }))
      .filter((f) => /\.(ya?ml|json)$/.test(f))
      .map((f) => path.join('examples', f))
      .sort();
    expect(files.length).toBeGreaterThanOrEqual(10);
    for (const file of [...files, 'docker-compose.yml']) {
      if (file.endsWith('.json')) {
        expect(() => JSON.parse(read(file)), file).not.toThrow();
        continue;
      }
      const docs = yamlDocs(file);
      expect(docs.length, file).toBeGreaterThan(0);
    }
  });

  it('the sds-server configs are valid server configs', () => {
    for (const file of [EXAMPLE_FILES.server, 'examples/kubernetes/sidecar/sds-server.yaml', 'examples/quickstart/sds-server.yaml']) {
      expect(() => serverConfigFrom(read(file), file), file).not.toThrow();
    }
  });
});

/** `docker-compose` (Debian package docker-compose), else the `docker compose` plugin; undefined without either. */
function composeCommand(): string[] | undefined {
  for (const cmd of [['docker-compose'], ['docker', 'compose']] as const) {
    try {
      execFileSync(cmd[0], [...cmd.slice(1), 'version'], { stdio: 'ignore', timeout: 30_000 });
      return [...cmd];
    } catch {
      // not installed
    }
  }
  return undefined;
}

describe('docker-compose.yml is valid for Compose', () => {
  const compose = composeCommand();
  const hint = 'install docker-compose (apt-get install -y --no-install-recommends docker-compose) or the docker compose plugin';
  if (!compose && isCi()) throw new Error(`docker-compose is required under CI to validate docker-compose.yml: ${hint}`);
  if (!compose) console.warn(`docker-compose.yml not validated with Compose (no docker-compose): ${hint}`);

  it.skipIf(!compose)('`docker-compose config` accepts it and lists the five services', () => {
    const [bin, ...pre] = compose ?? ['docker-compose'];
    const run = (args: string[]): string => execFileSync(bin!, [...pre, '-f', 'docker-compose.yml', ...args], { cwd: ROOT, encoding: 'utf8', timeout: 60_000 });
    expect(() => run(['config', '-q'])).not.toThrow();
    expect(run(['config', '--services']).trim().split('\n').sort()).toEqual(['back-app', 'back-envoy', 'front-app', 'front-envoy', 'sds-server']);
  }, 60_000);
});

describe('docker-compose.yml, the Dockerfile and `npm run demo` run the same mesh', () => {
  const compose = obj(parseYaml(read('docker-compose.yml')));
  const services = obj(compose.services);
  const service = (name: string): Obj => obj(services[name]);
  const dockerfile = read('Dockerfile');
  const nodeVersion = /^ARG NODE_VERSION=(\S+)$/m.exec(dockerfile)?.[1];

  it('the committed examples/demo files are exactly what scripts/demo/mesh-config.ts renders', () => {
    const files = composeFiles();
    expect(Object.keys(files).sort()).toEqual([...Object.values(EXAMPLE_FILES.envoy), EXAMPLE_FILES.server].sort());
    for (const [rel, content] of Object.entries(files)) {
      expect(read(rel), `${rel} is stale: run npx tsx scripts/demo/render-examples.ts`).toBe(content);
    }
  });

  it('has the server, and an Envoy sidecar and an app per service', () => {
    expect(Object.keys(services).sort()).toEqual(['back-app', 'back-envoy', 'front-app', 'front-envoy', 'sds-server']);
    expect(Object.keys(obj(compose.volumes)).sort()).toEqual(['sds-ca', 'sds-socket']);
  });

  it('sds-server: built from the Dockerfile, the mounted config, the socket on the shared volume', () => {
    const s = service('sds-server');
    expect(s.build).toBe('.');
    expect(obj(s.environment).APPMESH_SDS_SOCKET_PATH).toBe(CONTAINER.socketPath);
    expect(flag(s.command, '--config')).toBe(CONTAINER.serverConfigPath);
    expect(list(s.volumes)).toEqual(
      expect.arrayContaining([`sds-socket:${CONTAINER.socketDir}`, `sds-ca:${path.posix.dirname(CONTAINER.caDataDir)}`, `./${EXAMPLE_FILES.server}:${CONTAINER.serverConfigPath}:ro`]),
    );
    expect(path.posix.dirname(CONTAINER.socketPath)).toBe(CONTAINER.socketDir);
    // The Envoys' group is the socket's group, which the server joins.
    expect(list(s.group_add).map(String)).toEqual([CONTAINER.socketGroup]);
    expect(CONTAINER.envoyUser.split(':')[1]).toBe(CONTAINER.socketGroup);
    const config = serverConfigFrom(read(EXAMPLE_FILES.server), EXAMPLE_FILES.server);
    expect(config.socket.group).toBe(CONTAINER.socketGroup);
    expect(config.socket.path).toBeUndefined(); // from APPMESH_SDS_SOCKET_PATH
    expect(config.ca).toMatchObject({ backend: 'embedded', trustDomain: TRUST_DOMAIN, embedded: { dataDir: CONTAINER.caDataDir } });
    expect(config.identities.map((i) => [i.spiffeId, i.lifetimeSeconds])).toEqual(SERVICES.map((sv) => [spiffeId(sv), 30]));
    // Health check and published port hit the admin address of the config.
    const adminPort = CONTAINER.serverAdmin.split(':')[1];
    expect(config.admin).toEqual({ host: '0.0.0.0', port: Number(adminPort) });
    expect(list(obj(s.healthcheck).test).join(' ')).toContain(`http://127.0.0.1:${adminPort}/ready`);
    expect(list(s.ports)).toContain(`127.0.0.1:${adminPort}:${adminPort}`);
  });

  for (const sv of SERVICES) {
    it(`${sv}: the Envoy sidecar runs examples/demo/${sv}-envoy.yaml on the same socket, the app shares its network`, () => {
      const envoy = service(`${sv}-envoy`);
      expect(envoy.image).toBe(IMAGES.envoy);
      expect(envoy.user).toBe(CONTAINER.envoyUser);
      expect(obj(envoy.environment).APPMESH_SDS_SOCKET_PATH).toBe(CONTAINER.socketPath);
      expect(flag(envoy.command, '-c')).toBe(CONTAINER.envoyConfigPath);
      expect(list(envoy.volumes)).toEqual([`sds-socket:${CONTAINER.socketDir}:ro`, `./${EXAMPLE_FILES.envoy[sv]}:${CONTAINER.envoyConfigPath}:ro`]);
      expect(list(obj(obj(obj(envoy.networks).default)).aliases)).toEqual([dnsName(sv)]);
      expect(obj(obj(envoy.depends_on)['sds-server']).condition).toBe('service_healthy');
      const bootstrap = parseYaml(read(EXAMPLE_FILES.envoy[sv]));
      expect(sdsPipe(bootstrap)).toBe(CONTAINER.socketPath);
      expect(sdsSecretNames(bootstrap)).toEqual([`spiffe://${TRUST_DOMAIN}`, spiffeId(sv)].sort());

      const app = service(`${sv}-app`);
      expect(app.network_mode).toBe(`service:${sv}-envoy`);
      expect(app.image).toBe(`node:${nodeVersion}-slim`);
      expect(list(app.volumes)).toEqual(['./scripts/demo/app.mjs:/demo/app.mjs:ro']);
      expect(obj(app.environment).PORT).toBe(String(CONTAINER.ports.app));
      if (sv === 'front') {
        expect(obj(app.environment).CALL_URL).toBe(`http://127.0.0.1:${CONTAINER.ports.egress}/`);
        expect(String(obj(app.environment).WAIT_FOR)).toContain(`http://${dnsName(PEER[sv])}:${CONTAINER.ports.admin}/ready`);
      }
    });
  }

  it('the Envoy image is the version pinned in envoy-version.txt', () => {
    expect(IMAGES.envoy).toBe(`envoyproxy/envoy:v${read('envoy-version.txt').trim()}`);
  });

  it('the Dockerfile: node build stage, slim non-root runtime with dist/, proto/ and production node_modules', () => {
    expect(nodeVersion).toMatch(/^20\.\d+\.\d+$/);
    expect(dockerfile).toMatch(/^FROM node:\$\{NODE_VERSION\} AS build$/m);
    expect(dockerfile).toMatch(/^FROM node:\$\{NODE_VERSION\}-slim$/m);
    expect(dockerfile).toMatch(/^RUN npm ci\b/m);
    expect(dockerfile).toMatch(/npm run build && npm prune --omit=dev/);
    for (const copied of ['dist', 'proto', 'node_modules', 'package.json']) expect(dockerfile).toMatch(new RegExp(`^COPY .*\\b${copied}\\b`, 'm'));
    expect(dockerfile).toMatch(/^USER node$/m);
    expect(dockerfile).toMatch(/^ENTRYPOINT \["node", "dist\/cli\/main\.js"\]$/m);
    // The shared volume starts from the image's socket directory, owned by the server's user.
    const mkdir = /^RUN mkdir -p (.*) && chown node:node (.*)$/m.exec(dockerfile);
    expect(mkdir?.[1]?.split(' ')).toEqual(expect.arrayContaining([CONTAINER.socketDir, path.posix.dirname(CONTAINER.caDataDir)]));
    const ignored = read('.dockerignore').split('\n');
    for (const entry of ['node_modules', 'dist', '.venv', '.git', 'test']) expect(ignored).toContain(entry);
  });

  it('`npm run demo` renders its bootstraps and server config from the same functions: only addresses, ports and paths differ', () => {
    const ports: Record<Service, LocalPorts> = {
      front: { admin: 40001, inbound: 40002, egress: 40003, app: 40004 },
      back: { admin: 40011, inbound: 40012, egress: 40013, app: 40014 },
    };
    for (const sv of SERVICES) {
      const compose = sidecarBootstrap(composeSidecar(sv));
      const local = sidecarBootstrap(localSidecar(sv, '/tmp/sds-demo-x/sds.sock', ports));
      const diffs = differingLeaves(compose, local);
      expect(diffs.length).toBeGreaterThan(0);
      for (const d of diffs) expect(['address', 'port_value', 'path'], d.join('.')).toContain(d.at(-1));
      expect(sdsPipe(local)).toBe('/tmp/sds-demo-x/sds.sock');
    }
    const local = serverConfig({ lifetime: '30s', dataDir: '/tmp/sds-demo-x/ca', adminAddress: '127.0.0.1:40000', logFormat: 'json' });
    expect(differingLeaves(composeServerConfig(), local).map((d) => d.join('.')).sort()).toEqual(['admin.address', 'ca.embedded.dataDir', 'log.format', 'socket.group']);
    // And the demo really uses them, on the socket named by the same variable, with the same app.
    const demo = read('scripts/demo/demo.ts');
    expect(demo).toContain('sidecarBootstrap(localSidecar(');
    expect(demo).toContain('renderYaml(serverConfig(');
    expect(demo).toContain('APPMESH_SDS_SOCKET_PATH: socketPath');
    expect(demo).toContain("path.join(REPO_ROOT, 'scripts', 'demo', 'app.mjs')");
  });
});

describe('Kubernetes', () => {
  const daemonsetFile = 'examples/kubernetes/daemonset/sds-server-daemonset.yaml';
  const docs = yamlDocs(daemonsetFile);
  const configMap = obj(docs.find((d) => d.kind === 'ConfigMap'));
  const daemonset = obj(docs.find((d) => d.kind === 'DaemonSet'));
  const podSpec = obj(obj(obj(daemonset.spec).template).spec);
  const containers = list(podSpec.containers).map(obj);
  const server = obj(containers.find((c) => c.name === 'sds-server'));
  const configText = String(obj(configMap.data)['sds-server.yaml']);
  const dsConfig = serverConfigFrom(configText, daemonsetFile);

  it('the DaemonSet manifest has the expected kinds, all namespaced ones in one namespace', () => {
    expect(docs.map((d) => d.kind)).toEqual(['Namespace', 'ServiceAccount', 'ClusterRole', 'ClusterRoleBinding', 'ConfigMap', 'DaemonSet']);
    const ns = obj(docs[0]?.metadata).name;
    for (const d of docs.slice(1).filter((d) => !String(d.kind).startsWith('Cluster'))) expect(obj(d.metadata).namespace).toBe(ns);
  });

  it("DaemonSet: each pod's Envoy gets the identity of its namespace and service account, issued on demand (Kubernetes attestation)", () => {
    // The template is the Kubernetes one; the Kubernetes attestor is on and reaches the node's kubelet.
    expect(dsConfig.authorization).toMatchObject({ enabled: true, identityTemplate: 'spiffe://{trustDomain}/ns/{k8s:ns}/sa/{k8s:sa}', kubernetes: { kubeletUrl: 'https://127.0.0.1:10250' } });
    expect(dsConfig.identities).toEqual([]);
    // Caller pids are host pids (SO_PEERCRED), the kubelet listens on the node's loopback.
    expect(podSpec).toMatchObject({ hostPID: true, hostNetwork: true, automountServiceAccountToken: true, serviceAccountName: 'sds-server' });
    // The service account may read the kubelet's /pods (nodes/proxy get), as SPIRE's k8s attestor needs.
    const role = obj(docs.find((d) => d.kind === 'ClusterRole'));
    expect(list(role.rules).map(obj)).toContainEqual({ apiGroups: [''], resources: ['nodes/proxy'], verbs: ['get'] });
    const binding = obj(docs.find((d) => d.kind === 'ClusterRoleBinding'));
    expect(obj(binding.roleRef).name).toBe(obj(role.metadata).name);
    expect(list(binding.subjects).map(obj)).toContainEqual({ kind: 'ServiceAccount', name: 'sds-server', namespace: obj(docs[0]?.metadata).name });
  });

  it("DaemonSet: hostPath socket directory, --socket and the App Mesh controller's default --sds-uds-path agree", () => {
    const volumes = list(podSpec.volumes).map(obj);
    const sockets = obj(volumes.find((v) => v.hostPath));
    const hostPath = obj(sockets.hostPath);
    expect(hostPath.path).toBe(path.posix.dirname(APPMESH_SDS_SOCKET));
    const socketArg = flag(server.args, '--socket') ?? dsConfig.socket.path;
    expect(socketArg).toBe(APPMESH_SDS_SOCKET);
    const mount = list(server.volumeMounts).map(obj).find((m) => m.name === sockets.name);
    expect(mount?.mountPath).toBe(hostPath.path);
    // The init container hands that directory to the server's uid.
    const init = obj(list(podSpec.initContainers)[0]);
    expect(list(init.command).join(' ')).toContain(`chown ${obj(server.securityContext).runAsUser}:`);
    expect(list(init.volumeMounts).map(obj).find((m) => m.name === sockets.name)?.mountPath).toBe(hostPath.path);
  });

  it('DaemonSet: the ConfigMap is the --config file; probes hit /healthz and /ready on the admin port; non-root', () => {
    const configMount = list(server.volumeMounts).map(obj).find((m) => m.name === 'config');
    expect(flag(server.args, '--config')).toBe(configMount?.mountPath);
    expect(configMount?.subPath).toBe('sds-server.yaml');
    const adminPort = dsConfig.admin && 'port' in dsConfig.admin ? dsConfig.admin.port : undefined;
    const port = list(server.ports).map(obj).find((p) => p.containerPort === adminPort);
    expect(port, 'the admin port is a container port').toBeDefined();
    expect(obj(obj(server.livenessProbe).httpGet)).toEqual({ path: '/healthz', port: port?.name });
    expect(obj(obj(server.readinessProbe).httpGet)).toEqual({ path: '/ready', port: port?.name });
    expect(obj(server.securityContext)).toMatchObject({ runAsNonRoot: true, allowPrivilegeEscalation: false, readOnlyRootFilesystem: true });
    expect(Number(obj(server.securityContext).runAsUser)).toBeGreaterThan(0);
    // The CA files the config names are the mounted Secret.
    const caMount = list(server.volumeMounts).map(obj).find((m) => m.name === 'ca');
    expect(path.posix.dirname(String(dsConfig.ca.embedded.caCert))).toBe(caMount?.mountPath);
  });

  describe('sidecar variant', () => {
    const dir = 'examples/kubernetes/sidecar';
    const kustomization = obj(parseYaml(read(`${dir}/kustomization.yaml`)));
    const sideDocs = yamlDocs(`${dir}/deployment.yaml`);
    const deployment = obj(sideDocs.find((d) => d.kind === 'Deployment'));
    const pod = obj(obj(obj(deployment.spec).template).spec);
    const byName = (name: string): Obj => obj(list(pod.containers).map(obj).find((c) => c.name === name));
    const mountOf = (container: Obj, volume: string): Obj | undefined => list(container.volumeMounts).map(obj).find((m) => m.name === volume);
    const generated = new Map(
      list(kustomization.configMapGenerator).map((g) => {
        const files = list(obj(g).files).map(String);
        const pairs = files.map((f): [key: string, file: string] => {
          const [key = f, file = f] = f.split('=');
          return [key, file];
        });
        return [String(obj(g).name), pairs] as const;
      }),
    );

    it('kustomization: the resources and generated files exist; kinds are Deployment and Service', () => {
      for (const r of list(kustomization.resources)) expect(existsSync(path.join(ROOT, dir, String(r))), String(r)).toBe(true);
      for (const files of generated.values()) for (const [, file] of files) expect(existsSync(path.join(ROOT, dir, file)), file).toBe(true);
      expect(sideDocs.map((d) => d.kind)).toEqual(['Deployment', 'Service']);
    });

    it('sds-server and Envoy share the emptyDir socket; both configs name the same socket', () => {
      const volumes = list(pod.volumes).map(obj);
      const socketVolume = obj(volumes.find((v) => v.emptyDir !== undefined));
      const server = byName('sds-server');
      const envoy = byName('envoy');
      const socketPath = String(list(server.env).map(obj).find((e) => e.name === 'APPMESH_SDS_SOCKET_PATH')?.value);
      expect(mountOf(server, String(socketVolume.name))?.mountPath).toBe(path.posix.dirname(socketPath));
      expect(mountOf(envoy, String(socketVolume.name))?.mountPath).toBe(path.posix.dirname(socketPath));
      expect(list(envoy.env).map(obj).find((e) => e.name === 'APPMESH_SDS_SOCKET_PATH')?.value).toBe(socketPath);
      expect(sdsPipe(parseYaml(read(`${dir}/sidecar-envoy.yaml`)))).toBe(socketPath);
      expect(envoy.image).toBe(IMAGES.envoy);
      expect(server.image).toBe(obj(containers[0]).image);

      // --config and -c are the generated ConfigMaps' files where they are mounted.
      const configFor = (container: Obj, configMapName: string): string => {
        const volume = obj(volumes.find((v) => v.configMap && obj(v.configMap).name === configMapName));
        const [key] = generated.get(configMapName)?.[0] ?? [];
        return `${mountOf(container, String(volume.name))?.mountPath}/${key}`;
      };
      expect(flag(server.args, '--config')).toBe(configFor(server, 'front-sds-server'));
      expect(flag(envoy.command, '-c')).toBe(configFor(envoy, 'front-envoy'));
    });

    it('socket permissions: server socket group = Envoy runAsGroup = pod fsGroup; non-root everywhere', () => {
      const config = serverConfigFrom(read(`${dir}/sds-server.yaml`), `${dir}/sds-server.yaml`);
      const envoy = byName('envoy');
      expect(config.socket.mode).toBe(0o660);
      expect(config.socket.group).toBe(String(obj(envoy.securityContext).runAsGroup));
      expect(String(obj(pod.securityContext).fsGroup)).toBe(config.socket.group);
      expect(obj(pod.securityContext).runAsNonRoot).toBe(true);
      for (const c of list(pod.containers).map(obj)) expect(Number(obj(c.securityContext).runAsUser), String(c.name)).toBeGreaterThan(0);
      // The files the config serves are the mounted Secret.
      const tls = mountOf(byName('sds-server'), 'tls');
      expect(path.posix.dirname(String(config.certificates[0]?.cert))).toBe(tls?.mountPath);
      expect(config.certificates.map((c) => c.name)).toEqual([spiffeId('front')]);
    });
  });
});

/** A port something in a pod listens on, and who says so. */
type Listener = { container: string; port: number; from: string };

/**
 * The text of the file a container reads at `file`: the volume mounted there (or above it), its
 * ConfigMap, and that ConfigMap's key, from a ConfigMap document of the same manifest or a
 * kustomize `configMapGenerator` file next to it. Undefined when `file` is not in a ConfigMap.
 */
function mountedFile(manifest: string, docs: Obj[], pod: Obj, container: Obj, file: string): string | undefined {
  for (const mount of list(container.volumeMounts ?? []).map(obj)) {
    const at = String(mount.mountPath);
    const key = file === at ? String(mount.subPath ?? '') : file.startsWith(`${at}/`) ? file.slice(at.length + 1) : '';
    if (!key) continue;
    const volume = list(pod.volumes).map(obj).find((v) => v.name === mount.name);
    const configMap = volume?.configMap === undefined ? undefined : String(obj(volume.configMap).name);
    if (!configMap) continue;
    const doc = docs.find((d) => d.kind === 'ConfigMap' && obj(d.metadata).name === configMap);
    if (doc) return String(obj(doc.data)[key]);
    const dir = path.posix.dirname(manifest);
    const kustomization = obj(parseYaml(read(`${dir}/kustomization.yaml`)));
    const generator = list(kustomization.configMapGenerator).map(obj).find((g) => g.name === configMap);
    for (const entry of list(generator?.files ?? []).map(String)) {
      const [name = entry, source = entry] = entry.split('=');
      if (name === key) return read(`${dir}/${source}`);
    }
  }
  return undefined;
}

/**
 * Every port the containers of a pod listen on, read from what each process is given: an
 * sds-server's config file (`--config`, admin address; `--admin` wins), an Envoy bootstrap (`-c`:
 * listeners and admin), an app's `-listen=host:port`. Every declared containerPort must be one of
 * its container's listeners (a probe on a port nobody serves fails as surely as a clash).
 */
function podListeners(manifest: string, docs: Obj[], pod: Obj): Listener[] {
  const found: Listener[] = [];
  for (const c of list(pod.containers).map(obj)) {
    const name = String(c.name);
    const argv = [...list(c.command ?? []), ...list(c.args ?? [])].map(String);
    const own: Listener[] = [];
    const configFile = flag(argv, '--config');
    if (configFile) {
      const text = mountedFile(manifest, docs, pod, c, configFile);
      expect(text, `${manifest}: ${name}: --config ${configFile} is not a mounted ConfigMap`).toBeDefined();
      const config = serverConfigFrom(String(text), manifest);
      const admin = flag(argv, '--admin');
      const port = admin ? Number(admin.split(':').at(-1)) : config.admin && 'port' in config.admin ? config.admin.port : undefined;
      if (port !== undefined) own.push({ container: name, port, from: 'sds-server admin' });
    }
    const bootstrapFile = flag(argv, '-c');
    if (bootstrapFile) {
      const text = mountedFile(manifest, docs, pod, c, bootstrapFile);
      expect(text, `${manifest}: ${name}: -c ${bootstrapFile} is not a mounted ConfigMap`).toBeDefined();
      const bootstrap = obj(parseYaml(String(text)));
      const portOf = (a: unknown): number => Number(obj(obj(obj(a).address).socket_address).port_value);
      own.push({ container: name, port: portOf(bootstrap.admin), from: 'Envoy admin' });
      for (const l of list(obj(bootstrap.static_resources).listeners).map(obj)) own.push({ container: name, port: portOf(l), from: `Envoy listener ${String(l.name)}` });
    }
    for (const arg of argv) {
      const listen = /^--?listen=.*:(\d+)$/.exec(arg);
      if (listen) own.push({ container: name, port: Number(listen[1]), from: arg });
    }
    for (const p of list(c.ports ?? []).map(obj)) {
      expect(own.map((l) => l.port), `${manifest}: ${name}: containerPort ${String(p.containerPort)} (${String(p.name)}) is not a port it listens on`).toContain(p.containerPort);
    }
    found.push(...own);
  }
  return found;
}

describe('Kubernetes: in every pod, every listening port is distinct (one network namespace per pod)', () => {
  const manifests = ['examples/kubernetes/sidecar/deployment.yaml', 'examples/kubernetes/daemonset/sds-server-daemonset.yaml'];

  it('the manifests list every pod under examples/kubernetes', async () => {
    const all = (await readdir(path.join(ROOT, 'examples', 'kubernetes'), { recursive: true }))
      .filter((f) => /\.ya?ml$/.test(f))
      .map((f) => path.posix.join('examples/kubernetes', f))
      .filter((f) => yamlDocs(f).some((d) => ['Deployment', 'DaemonSet', 'StatefulSet', 'Pod', 'Job'].includes(String(d.kind))));
    expect(all.sort()).toEqual([...manifests].sort());
  });

  for (const manifest of manifests) {
    it(manifest, () => {
      const docs = yamlDocs(manifest);
      const workload = obj(docs.find((d) => ['Deployment', 'DaemonSet'].includes(String(d.kind))));
      const pod = obj(obj(obj(workload.spec).template).spec);
      const listeners = podListeners(manifest, docs, pod);
      expect(listeners.length).toBeGreaterThan(0);
      const byPort = new Map<number, Listener[]>();
      for (const l of listeners) byPort.set(l.port, [...(byPort.get(l.port) ?? []), l]);
      const clashes = [...byPort.entries()].filter(([, ls]) => ls.length > 1).map(([port, ls]) => `${port}: ${ls.map((l) => `${l.container} (${l.from})`).join(' and ')}`);
      expect(clashes, 'ports used twice in one pod').toEqual([]);
    });
  }
});

describe('App Mesh virtual nodes (appmesh.k8s.aws/v1beta2) use SDS secrets the DaemonSet serves', () => {
  const docs = yamlDocs('examples/appmesh/virtual-nodes.yaml');
  const dsDocs = yamlDocs('examples/kubernetes/daemonset/sds-server-daemonset.yaml');
  const dsConfig = serverConfigFrom(String(obj(obj(dsDocs.find((d) => d.kind === 'ConfigMap')).data)['sds-server.yaml']), 'examples/kubernetes/daemonset/x.yaml');
  const template = IdentityTemplate.parse(String(dsConfig.authorization.identityTemplate), dsConfig.ca.trustDomain);
  /** What the DaemonSet issues to a pod of namespace `ns` running as service account `sa`. */
  const issuedTo = (ns: string, sa: string): string => {
    if ('problem' in template) throw new Error(template.problem);
    const r = template.render([`k8s:ns:${ns}`, `k8s:sa:${sa}`], dsConfig.ca.trustDomain);
    if ('problem' in r) throw new Error(r.problem);
    return r.spiffeId;
  };
  // Each virtual node's pods run as the service account named after it (README).
  const identities = new Set(docs.map((d) => issuedTo(String(obj(d.metadata).namespace), String(obj(d.metadata).name))));
  const bundle = `spiffe://${dsConfig.ca.trustDomain}`;

  it("every certificate is the identity the DaemonSet's template issues to that node's pods, every trust is the trust-domain bundle, SANs are identities", () => {
    expect(docs.map((d) => [d.apiVersion, d.kind])).toEqual(docs.map(() => ['appmesh.k8s.aws/v1beta2', 'VirtualNode']));
    for (const doc of docs) {
      const spec = obj(doc.spec);
      const listener = obj(list(spec.listeners)[0]);
      const tls = obj(listener.tls);
      expect(tls.mode).toBe('STRICT');
      const own = String(obj(obj(obj(tls.certificate).sds)).secretName);
      expect(own).toBe(issuedTo(String(obj(doc.metadata).namespace), String(obj(doc.metadata).name)));
      let certificates = 0;
      let trusts = 0;
      for (const { path: at, key, value } of walk(spec)) {
        if (key !== 'secretName') continue;
        if (at.includes('certificate')) {
          certificates++;
          expect(value).toBe(own);
        } else {
          trusts++;
          expect(at.slice(-3)).toEqual(['trust', 'sds', 'secretName']);
          expect(value).toBe(bundle);
        }
      }
      expect(certificates).toBeGreaterThan(0);
      expect(trusts).toBeGreaterThan(0);
      for (const { key, value } of walk(spec)) if (key === 'exact') for (const san of list(value)) expect(identities.has(String(san)), String(san)).toBe(true);
    }
  });
});

describe('the v2 bootstrap (examples/appmesh-v2/bootstrap-v2.yaml)', () => {
  const file = 'examples/appmesh-v2/bootstrap-v2.yaml';
  const bootstrap = obj(parseYaml(read(file)));

  it('is not picked up by `envoy --mode validate` (Envoy 1.40 cannot load v2)', () => {
    expect(path.basename(file)).not.toContain('envoy');
  });

  it('every @type is a v2 type; no v3 type or field anywhere', () => {
    const types = [...walk(bootstrap)].filter((e) => e.key === '@type').map((e) => String(e.value));
    expect(types.length).toBeGreaterThanOrEqual(4);
    for (const t of types) expect(t).toMatch(/^type\.googleapis\.com\/envoy\.(api\.v2\.([a-z]+\.)?|config\.filter\.[a-z_.]+\.v2\.)[A-Za-z]+$/);
    expect(read(file)).not.toMatch(/\.v3\.|resource_api_version|match_typed_subject_alt_names/);
    // v2 names: TLS contexts from envoy.api.v2.auth, peer check by match_subject_alt_names.
    expect(types).toEqual(expect.arrayContaining(['type.googleapis.com/envoy.api.v2.auth.DownstreamTlsContext', 'type.googleapis.com/envoy.api.v2.auth.UpstreamTlsContext']));
    expect([...walk(bootstrap)].some((e) => e.key === 'match_subject_alt_names')).toBe(true);
  });

  it('every SDS config is v2 gRPC to the socket cluster on the App Mesh socket path', () => {
    const sources = [...walk(bootstrap)].filter((e) => e.key === 'sds_config').map((e) => obj(e.value));
    expect(sources.length).toBe(4);
    for (const source of sources) {
      expect(Object.keys(source)).toEqual(['api_config_source']);
      const api = obj(source.api_config_source);
      expect(api.api_type).toBe('GRPC');
      expect(api.transport_api_version ?? 'V2').toBe('V2');
      expect(list(api.grpc_services).map((g) => obj(obj(g).envoy_grpc).cluster_name)).toEqual([SDS_CLUSTER]);
    }
    expect(sdsPipe(bootstrap)).toBe(APPMESH_SDS_SOCKET);
    const sdsCluster = list(obj(bootstrap.static_resources).clusters).map(obj).find((c) => c.name === SDS_CLUSTER);
    expect(sdsCluster?.http2_protocol_options).toEqual({});
  });

  describe('sds-server answers every secret it names over SDS v2', () => {
    let dir: string;
    let app: RunningApp;
    let client: SdsTestClient;

    beforeAll(async () => {
      dir = await mkdtemp(path.join(tmpdir(), 'sds-examples-v2-'));
      // The DaemonSet's CA settings, from a throwaway embedded CA instead of the CA Secret. The
      // DaemonSet issues identities by template to attested pods, which this test process is not:
      // here the v2 bootstrap's identity is configured and authorization is off.
      const dsDocs = yamlDocs('examples/kubernetes/daemonset/sds-server-daemonset.yaml');
      const config = serverConfigFrom(String(obj(obj(dsDocs.find((d) => d.kind === 'ConfigMap')).data)['sds-server.yaml']), 'examples/kubernetes/daemonset/x.yaml');
      config.ca.embedded = { dataDir: path.join(dir, 'ca') };
      config.identities = [{ spiffeId: spiffeId('front'), dnsNames: [], keyType: 'ec-p256', lifetimeSeconds: 3600, names: [] }];
      config.authorization = defaultConfig().authorization;
      config.socket.path = path.join(dir, 'sds.sock');
      delete config.admin;
      app = await startApp(config, silentLogger);
      client = new SdsTestClient(app.socketPath, 'v2');
    });
    afterAll(async () => {
      client?.close();
      await app?.stop();
      if (dir) await rm(dir, { recursive: true, force: true });
    });

    it('a v2 Secret per name, decoded with our proto/envoy/api/v2/auth protos', async () => {
      const names = sdsSecretNames(bootstrap);
      expect(names).toEqual([`spiffe://${TRUST_DOMAIN}`, spiffeId('front')]);
      const Secret = protoRoot().lookupType('envoy.api.v2.auth.Secret');
      for (const name of names) {
        const res = await client.fetch({ node: envoyNode({ id: 'front', version: [1, 16, 0] }), resource_names: [name], type_url: SECRET_TYPE_URL.v2 });
        expect(res.type_url).toBe('type.googleapis.com/envoy.api.v2.auth.Secret');
        expect(res.resources).toHaveLength(1);
        expect(res.resources[0]?.type_url).toBe('type.googleapis.com/envoy.api.v2.auth.Secret');
        const secret = decodeAs<SecretV2__Output>(Secret, res.resources[0]!.value);
        expect(secret.name).toBe(name);
        if (name === spiffeId('front')) {
          expect(secret.tls_certificate?.certificate_chain?.inline_bytes?.length).toBeGreaterThan(0);
          expect(secret.tls_certificate?.private_key?.inline_bytes?.length).toBeGreaterThan(0);
        } else {
          // v2 has no SPIFFE validator: the bundle is trusted_ca.
          expect(secret.validation_context?.trusted_ca?.inline_bytes?.length).toBeGreaterThan(0);
        }
      }
    });
  });
});
