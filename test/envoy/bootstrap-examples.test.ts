/**
 * The Istio-style and SPIRE-style bootstraps we ship (examples/istio, examples/spire) run with real
 * Envoy against sds-server and carry mTLS (issue #15). The test loads the example file itself and
 * changes only what cannot be fixed in a file: the socket path and the ports (see
 * rewriteExampleBootstrap), so the secret names, validators and SAN matchers tested are the
 * example's own. `envoy --mode validate` of both files: test/envoy/validate-configs.test.ts.
 */
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { afterEach, expect, it } from 'vitest';
import { parse as parseYaml } from 'yaml';
import { REPO_ROOT, describeWithEnvoy } from './find-envoy.js';
import { EnvoyProcess, freePorts, httpRequest, startUpstreamApp, waitUntil, writeBootstrap, type AppResponse, type UpstreamApp } from './harness.js';
import { MultiDomainSecrets, mtlsGet, rewriteExampleBootstrap } from './interop.js';
import { STAT } from './mesh.js';

describeWithEnvoy('example bootstraps with real Envoy: Istio names and SPIRE names', (envoyBin) => {
  let secrets: MultiDomainSecrets | undefined;
  let envoy: EnvoyProcess | undefined;
  let app: UpstreamApp | undefined;

  afterEach(async (ctx) => {
    if (ctx.task.result?.state === 'fail') {
      console.error(`----- Envoy output -----\n${envoy?.output()}\n----- sds-server log -----\n${secrets?.log.join('')}`);
    }
    await envoy?.stop();
    await app?.close();
    await secrets?.close();
    envoy = app = secrets = undefined;
  });

  /** Starts sds-server (serving `served` from the first trust domain's CA), the app and Envoy on the example. */
  async function runExample(example: string, trustDomains: string[], served: string, examplePorts: number[]): Promise<{ envoy: EnvoyProcess; port: (p: number) => number }> {
    secrets = await MultiDomainSecrets.create(trustDomains);
    await secrets.issue(served, { serve: true });
    await secrets.start(secrets.config([trustDomains[0]!]));
    app = await startUpstreamApp();
    const free = await freePorts(examplePorts.length);
    const ports = new Map<number, number>(examplePorts.map((p, i) => [p, free[i]!]));
    ports.set(8080, app.port);
    const port = (p: number): number => {
      const mapped = ports.get(p);
      if (mapped === undefined) throw new Error(`port ${p} not mapped`);
      return mapped;
    };
    const config = rewriteExampleBootstrap(parseYaml(await readFile(path.join(REPO_ROOT, example), 'utf8')), secrets.socketPath(), ports);
    const bootstrapFile = await writeBootstrap(secrets.dir, path.basename(example, '.yaml'), config);
    const admin = port(examplePorts[0]!);
    envoy = await EnvoyProcess.start({ bin: envoyBin, name: path.basename(example), adminPort: admin, bootstrapFile });
    return { envoy, port };
  }

  const uriOfXfcc = (body: string): string | undefined => /(?:^|;)URI=([^;,]*)/.exec((JSON.parse(body) as AppResponse).xfcc ?? '')?.[1];

  it('Istio: `default` and `ROOTCA` carry mTLS from the outbound to the inbound listener, and a peer outside the mesh root is refused', async () => {
    const SERVER = 'spiffe://cluster.local/ns/default/sa/server';
    // admin 15000, inbound 15006, outbound 15001
    const { envoy, port } = await runExample('examples/istio/envoy-istio-sds.yaml', ['cluster.local', 'elsewhere.local'], SERVER, [15000, 15006, 15001]);
    const s = secrets!;

    // App -> outbound (plain) -> mTLS with `default`, server checked against ROOTCA -> inbound -> app.
    const res = await httpRequest({ port: port(15001) });
    expect(res.status, res.body).toBe(200);
    expect(uriOfXfcc(res.body), 'the inbound listener saw the `default` certificate').toBe(SERVER);
    for (const name of ['default', 'ROOTCA']) expect(await envoy.stat(STAT.sds(name, 'update_success')), name).toBeGreaterThan(0);
    // sds-server saw exactly Istio's two names.
    expect([...new Set(s.app!.streams().open.flatMap((st) => st.named))].sort()).toEqual(['ROOTCA', 'default']);

    // Another workload of the mesh, straight to the inbound listener: accepted.
    const client = await s.issue('spiffe://cluster.local/ns/default/sa/client');
    const direct = await mtlsGet(port(15006), client, [s.domain('cluster.local').ca]);
    expect(direct.ok && direct.status, JSON.stringify(direct)).toBe(200);
    // A workload whose certificate does not chain to ROOTCA: refused.
    const outsider = await s.issue('spiffe://elsewhere.local/ns/default/sa/client');
    const failures = (): Promise<number> => envoy.stat(STAT.listenerSsl(port(15006), 'fail_verify_error'), { orZero: true });
    const before = await failures();
    expect((await mtlsGet(port(15006), outsider, [s.domain('cluster.local').ca])).ok).toBe(false);
    await waitUntil('the inbound listener to count the refused handshake', async () => (await failures()) > before);
  }, 30_000);

  it('SPIRE / App Mesh v3: SPIFFE-ID and trust-domain names with the SPIFFE validator accept only the allowed SPIFFE ID', async () => {
    const SERVER = 'spiffe://example.org/server';
    // admin 9901, inbound 8443
    const { envoy, port } = await runExample('examples/spire/envoy-spire-sds.yaml', ['example.org'], SERVER, [9901, 8443]);
    const s = secrets!;
    const ca = s.domain('example.org').ca;

    const client = await s.issue('spiffe://example.org/client');
    const res = await mtlsGet(port(8443), client, [ca]);
    expect(res.ok && res.status, JSON.stringify(res)).toBe(200);
    expect(res.ok && uriOfXfcc(res.body)).toBe('spiffe://example.org/client');

    // The bundle arrived as a SPIFFE validator: Envoy names its CA "<trust domain>: <source>".
    const caCerts = (await envoy.certs()).certificates.flatMap((c) => c.ca_cert ?? []);
    expect(caCerts.map((c) => c.path)).toContainEqual(expect.stringMatching(/^example\.org: /));
    expect([...new Set(s.app!.streams().open.flatMap((st) => st.named))].sort()).toEqual(['spiffe://example.org', SERVER]);

    // Same trust domain, another SPIFFE ID: refused by the example's SAN matcher.
    const intruder = await s.issue('spiffe://example.org/intruder');
    const sanFailures = (): Promise<number> => envoy.stat(STAT.listenerSsl(port(8443), 'fail_verify_san'), { orZero: true });
    const before = await sanFailures();
    expect((await mtlsGet(port(8443), intruder, [ca])).ok).toBe(false);
    await waitUntil('the listener to count the SAN mismatch', async () => (await sanFailures()) > before);
  }, 30_000);
});
