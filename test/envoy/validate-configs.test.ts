/**
 * Every Envoy config we ship or generate is accepted by the real Envoy binary
 * (`envoy --mode validate`): the example configs under examples/ and this harness's bootstraps.
 */
import { mkdir, mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { REPO_ROOT, describeWithEnvoy, envoy, envoyVersion, pinnedEnvoyVersion } from './find-envoy.js';
import { clientSideBootstrap, sdsListenersBootstrap, sdsTlsListener, serverSideBootstrap, validateEnvoyConfig, writeBootstrap, writeLdsFile } from './harness.js';
import { BUNDLE, CLIENT_ID, SERVER_DNS, SERVER_ID, UPSTREAM_CLUSTER } from './mesh.js';

/** `examples/**\/*envoy*.{yaml,yml,json}`, relative to the repository root, sorted. */
async function exampleEnvoyConfigs(root = REPO_ROOT): Promise<string[]> {
  const examples = path.join(root, 'examples');
  let entries: string[];
  try {
    entries = await readdir(examples, { recursive: true });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw err;
  }
  return entries
    .filter((rel) => {
      const base = path.basename(rel);
      return base.includes('envoy') && /\.(ya?ml|json)$/.test(base);
    })
    .map((rel) => path.join('examples', rel))
    .sort();
}

describeWithEnvoy('Envoy configs pass `envoy --mode validate`', (envoyBin) => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'sds-envoy-validate-'));
  });
  afterAll(async () => {
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  async function validateAll(files: string[]): Promise<void> {
    const results = await Promise.all(files.map(async (file) => ({ file, ...(await validateEnvoyConfig(envoyBin, path.resolve(REPO_ROOT, file))) })));
    expect(results).toHaveLength(files.length);
    const failed = results.filter((r) => !r.ok).map((r) => `${r.file}:\n${r.output}`);
    expect(failed, failed.join('\n')).toEqual([]);
  }

  it('every example Envoy config under examples/ (examples/**/*envoy*.{yaml,yml,json})', async () => {
    const files = await exampleEnvoyConfigs();
    console.log(`validating ${files.length} example Envoy config(s)${files.length ? `: ${files.join(', ')}` : ''}`);
    await validateAll(files);
  });

  it('the bootstraps this harness generates', async () => {
    // Placeholder socket path and ports: validate mode binds and connects nothing.
    const common = { adminPort: 9901, socketPath: '/tmp/sds-server/sds.sock', certificate: SERVER_ID, bundle: BUNDLE };
    const files = [
      await writeBootstrap(dir, 'server-side', serverSideBootstrap({ ...common, listenPort: 15000, appPort: 8080, clientSpiffeId: CLIENT_ID })),
      await writeBootstrap(
        dir,
        'client-side',
        clientSideBootstrap({
          ...common,
          certificate: CLIENT_ID,
          listenPort: 15001,
          upstreamPort: 15000,
          clusterName: UPSTREAM_CLUSTER,
          sni: SERVER_DNS,
          serverSpiffeId: SERVER_ID,
          maxRequestsPerConnection: 1,
        }),
      ),
      await writeBootstrap(
        dir,
        'sds-listeners',
        sdsListenersBootstrap({
          nodeId: 'listeners',
          adminPort: 9901,
          socketPath: common.socketPath,
          listeners: [
            sdsTlsListener({ name: 'sotw', port: 15002, certificate: SERVER_ID, sds: { apiType: 'GRPC', backOff: 'envoy-default' } }),
            sdsTlsListener({ name: 'delta', port: 15003, certificate: CLIENT_ID, sds: { apiType: 'DELTA_GRPC' } }),
          ],
        }),
      ),
    ];
    // Listeners from a watched LDS file (test/envoy/listener-removal.test.ts).
    const ldsFile = path.join(dir, 'lds', 'lds.yaml');
    await mkdir(path.dirname(ldsFile), { recursive: true });
    await writeLdsFile(ldsFile, [sdsTlsListener({ name: 'front', port: 15004, certificate: SERVER_ID })]);
    files.push(await writeBootstrap(dir, 'lds-file', sdsListenersBootstrap({ nodeId: 'lds', adminPort: 9901, socketPath: common.socketPath, ldsFile })));
    await validateAll(files);
  });

  it('runs the Envoy version pinned in envoy-version.txt when it uses the project install', () => {
    const found = envoy();
    const version = envoyVersion(envoyBin);
    console.log(`Envoy ${version ?? '(unknown version)'} at ${envoyBin}${found.found ? ` (from ${found.via})` : ''}`);
    expect(version).toBeDefined();
    if (found.found && found.via === '.venv/envoy') expect(version).toBe(pinnedEnvoyVersion());
  });

  it('rejects a broken config (the validation really runs)', async () => {
    const file = await writeBootstrap(dir, 'broken', { node: { id: 'x', cluster: 'y' }, no_such_field: true });
    const result = await validateEnvoyConfig(envoyBin, file);
    expect(result.ok).toBe(false);
    expect(result.output).toContain('no_such_field');
  });
});
