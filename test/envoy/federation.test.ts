/**
 * Federation with real Envoy (issue #15): two trust domains, `ALL` served as one SPIFFE validator
 * config with both, and a listener validating peers with `ALL` accepts a client of the second
 * (federated) trust domain; once that domain's bundle is removed from the server's configuration,
 * the same client is refused while the home domain keeps working, with no Envoy restart.
 *
 * The server reads its configuration at start (SIGHUP re-reads only the secret files), so the
 * bundle is removed the way an operator removes it: the server restarts with the new
 * configuration on the same socket, and Envoy's SDS stream reconnects and gets the new `ALL`.
 */
import { afterAll, beforeAll, beforeEach, expect, it } from 'vitest';
import type { IssuedLeaf } from '../../src/x509/issue.js';
import { describeWithEnvoy } from './find-envoy.js';
import { EnvoyProcess, freePorts, sdsListenersBootstrap, waitUntil, writeBootstrap } from './harness.js';
import { MultiDomainSecrets, mtlsDirectListener, mtlsGet } from './interop.js';
import { STAT } from './mesh.js';

const HOME = 'example.org';
const FEDERATED = 'partner.org';
const STRANGER = 'stranger.org';
const SERVER_ID = `spiffe://${HOME}/server`;

describeWithEnvoy('Envoy and federation: ALL as a SPIFFE validator with two trust domains', (envoyBin) => {
  let secrets: MultiDomainSecrets;
  let envoy: EnvoyProcess;
  let port: number;
  let homeClient: IssuedLeaf;
  let federatedClient: IssuedLeaf;
  let strangerClient: IssuedLeaf;

  beforeAll(async () => {
    secrets = await MultiDomainSecrets.create([HOME, FEDERATED, STRANGER]);
    await secrets.issue(SERVER_ID, { serve: true });
    [homeClient, federatedClient, strangerClient] = await Promise.all([
      secrets.issue(`spiffe://${HOME}/client`),
      secrets.issue(`spiffe://${FEDERATED}/client`),
      secrets.issue(`spiffe://${STRANGER}/client`),
    ]);
    // The server knows the home and the federated trust domain; the stranger's CA is nowhere.
    await secrets.start(secrets.config([HOME, FEDERATED]));
    const [adminPort, listenPort] = await freePorts(2);
    port = listenPort!;
    const bootstrap = sdsListenersBootstrap({
      nodeId: 'federation',
      adminPort: adminPort!,
      socketPath: secrets.socketPath(),
      listeners: [mtlsDirectListener({ name: 'federated_ingress', port, certificate: SERVER_ID, validation: 'ALL' })],
    });
    envoy = await EnvoyProcess.start({ bin: envoyBin, name: 'federation', adminPort: adminPort!, bootstrapFile: await writeBootstrap(secrets.dir, 'federation', bootstrap) });
  }, 30_000);
  afterAll(async () => {
    await envoy?.stop();
    await secrets?.close();
  });
  beforeEach((ctx) => {
    ctx.onTestFailed(() => console.error(`----- Envoy output -----\n${envoy?.output()}\n----- sds-server log -----\n${secrets?.log.join('')}`));
  });

  const homeCa = () => [secrets.domain(HOME).ca];
  const failVerify = (): Promise<number> => envoy.stat(STAT.listenerSsl(port, 'fail_verify_error'), { orZero: true });

  it('accepts clients of both trust domains, refuses a third, and holds both CAs in one SPIFFE validator', async () => {
    expect(await mtlsGet(port, homeClient, homeCa())).toMatchObject({ ok: true, status: 200, body: 'federated_ingress' });
    expect(await mtlsGet(port, federatedClient, homeCa())).toMatchObject({ ok: true, status: 200, body: 'federated_ingress' });

    const before = await failVerify();
    expect((await mtlsGet(port, strangerClient, homeCa())).ok).toBe(false);
    await waitUntil('the listener to count the refused handshake', async () => (await failVerify()) > before);

    // The handshakes above are the proof that both CAs are in the validator Envoy built from ALL:
    // /certs cannot show it on every release (Envoy 1.36 lists only the first trust domain's CA
    // of a SPIFFE validator there, 1.40 lists each).
    const caSans = (await envoy.certs()).certificates.flatMap((c) => c.ca_cert ?? []).flatMap((c) => c.subject_alt_names ?? []);
    expect(caSans).toContainEqual({ uri: `spiffe://${HOME}` });
    expect(caSans).not.toContainEqual({ uri: `spiffe://${STRANGER}` });
  });

  it('refuses the federated client once its trust domain is removed; the home domain keeps working without an Envoy restart', async () => {
    const pid = envoy.pid;
    const updates = (): Promise<number> => envoy.stat(STAT.sds('ALL', 'update_success'));
    const updatesBefore = await updates();
    await secrets.stop();
    await secrets.start(secrets.config([HOME]));
    await waitUntil('Envoy to accept the new ALL', async () => (await updates()) > updatesBefore, { timeoutMs: 10_000 });

    const before = await failVerify();
    const refused = await mtlsGet(port, federatedClient, homeCa());
    expect(refused.ok, JSON.stringify(refused)).toBe(false);
    await waitUntil('the listener to count the refused handshake', async () => (await failVerify()) > before);
    expect(await mtlsGet(port, homeClient, homeCa())).toMatchObject({ ok: true, status: 200, body: 'federated_ingress' });

    const caSans = (await envoy.certs()).certificates.flatMap((c) => c.ca_cert ?? []).flatMap((c) => c.subject_alt_names ?? []);
    expect(caSans).toContainEqual({ uri: `spiffe://${HOME}` });
    expect(caSans).not.toContainEqual({ uri: `spiffe://${FEDERATED}` });
    expect(envoy.pid).toBe(pid);
    expect(envoy.isRunning).toBe(true);
  }, 30_000);
});
