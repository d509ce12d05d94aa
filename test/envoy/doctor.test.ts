/**
 * `sds-server doctor` against real Envoys (issue 12): each cause of CERTIFICATE_VERIFY_FAILED and
 * of WRONG_VERSION_NUMBER is produced on purpose in one shared mesh, and doctor must name it both
 * from what we serve (our admin's /certificates) and from the Envoys' admin (/certs, /stats).
 *
 *   test --HTTP--> client-side Envoy --mTLS--> server-side Envoy --> app
 *
 * The cases run in order; each rotates the server-side leaf (or sends plaintext), waits until the
 * server-side Envoy holds it, resets both Envoys' counters (POST /reset_counters) so each case
 * sees only its own handshakes, makes one request through the mesh, then runs doctor in-process
 * (the program itself is run in test/doctor-cli.test.ts).
 *
 * The server-side certificate is configured under the plain name `server` with SERVER_ID as an
 * extra name, so that a leaf with another SPIFFE ID can be served under SERVER_ID (a SAN
 * mismatch the client-side Envoy refuses), which a SPIFFE-ID-named entry would refuse to load.
 */
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, beforeEach, expect, it } from 'vitest';
import { startApp, type RunningApp } from '../../src/cli/app.js';
import { createLogger } from '../../src/core/logger.js';
import { runDoctor } from '../../src/cli/doctor-command.js';
import type { Cause, DoctorReport } from '../../src/ops/doctor.js';
import { issueLeaf, type CertificateAuthority, type IssuedLeaf } from '../../src/x509/issue.js';
import { describeWithEnvoy } from './find-envoy.js';
import { httpRequest, sameSerial, waitUntil } from './harness.js';
import { BUNDLE, CLIENT_ID, Mesh, SERVER_DNS, SERVER_ID, TRUST_DOMAIN, issueServerLeaf, newCa } from './mesh.js';

describeWithEnvoy('sds-server doctor names each TLS failure cause, from our state and from Envoy', (envoyBin) => {
  let mesh: Mesh;
  let sds: RunningApp;
  let ca: CertificateAuthority;
  const log: string[] = [];

  beforeAll(async () => {
    mesh = await Mesh.start({ envoyBin });
    ca = mesh.files.cas[0]!;
    // Replace the mesh's sds-server with one that has an admin endpoint (Envoys reconnect within 1 s).
    await mesh.stopSds();
    const config = mesh.files.config(mesh.socketPath);
    config.certificates = config.certificates.map((c) => (c.name === SERVER_ID ? { ...c, name: 'server', names: [SERVER_ID] } : c));
    config.admin = { host: '127.0.0.1', port: 0 };
    sds = await startApp(config, createLogger({ level: 'info', write: (line) => log.push(line) }));
    mesh.sds = sds;
    await waitUntil('a request through the mesh to succeed', async () => (await mesh.request()).status === 200, { timeoutMs: 15_000 });
  }, 60_000);
  afterAll(async () => {
    await mesh?.close();
  });
  beforeEach((ctx) => {
    ctx.onTestFailed(() => console.error(`----- ${ctx.task.name} -----\n${mesh?.report() ?? ''}\n${log.join('\n')}`));
  });

  const envoyAdmins = (): string[] => [`http://127.0.0.1:${mesh.ports.clientAdmin}`, `http://127.0.0.1:${mesh.ports.serverAdmin}`];
  const resetCounters = async (): Promise<void> => {
    for (const url of envoyAdmins()) expect((await fetch(`${url}/reset_counters`, { method: 'POST' })).status).toBe(200);
  };
  const serve = async (leaf: IssuedLeaf): Promise<void> => {
    await mesh.files.rotateServer(leaf);
    await waitUntil(`server-side Envoy to hold serial ${leaf.serialNumber}`, async () => sameSerial(await mesh.serverEnvoy.servedSerial(), leaf.serialNumber), { timeoutMs: 10_000 });
    await resetCounters();
  };
  const doctor = (o: { pair?: boolean; envoy?: boolean } = {}): Promise<DoctorReport> =>
    runDoctor({
      admin: sds.adminAddress!,
      ...(o.pair ? { client: CLIENT_ID, server: SERVER_ID, expectSan: SERVER_ID } : {}),
      envoyAdmins: o.envoy ? envoyAdmins() : [],
      json: false,
    });
  const causes = (r: DoctorReport): Cause[] => [...new Set(r.findings.filter((f) => f.severity === 'problem').map((f) => f.cause))].sort();

  it('a healthy mesh gets a clean bill', async () => {
    await resetCounters();
    expect((await mesh.request()).status).toBe(200);
    for (const r of [await doctor({ envoy: true }), await doctor({ pair: true, envoy: true })]) {
      expect(r.findings).toEqual([]);
      expect(r.ok).toBe(true);
    }
    // Each Envoy holds the serial we serve for the identity it presents.
    const checked = (await doctor({ envoy: true })).checked.join('\n');
    expect(checked).toContain(`holds ${SERVER_ID} serial ${mesh.files.serverLeaf.serialNumber}: the version we serve`);
    expect(checked).toContain(`holds ${CLIENT_ID} serial ${mesh.files.clientLeaf.serialNumber}: the version we serve`);
  });

  it("--admin given an Envoy's admin address: a problem found (admin-unreachable, SDS_ERR_ADMIN_UNREACHABLE) with the hint to use --envoy-admin", async () => {
    const envoyAdmin = envoyAdmins()[0]!;
    const r = await runDoctor({ admin: envoyAdmin, envoyAdmins: [], json: false });
    expect(r.ok).toBe(false);
    expect(r.findings.map((f) => f.cause)).toEqual(['admin-unreachable']);
    expect(r.findings[0]!.summary).toContain('SDS_ERR_ADMIN_UNREACHABLE');
    expect(r.findings[0]!.details.join('\n')).toContain('this looks like an Envoy admin; use --envoy-admin');
  });

  it('plain HTTP to the TLS listener: handshake errors without verify failures (WRONG_VERSION_NUMBER, bypass)', async () => {
    await resetCounters();
    // The application talks HTTP straight to the server-side Envoy's mTLS port, past its own proxy.
    await httpRequest({ port: mesh.ports.serverListener, path: '/', timeoutMs: 3_000 }).catch(() => undefined);
    const listener = `listener.127.0.0.1_${mesh.ports.serverListener}`;
    await waitUntil('the listener to count the failed handshake', async () => (await mesh.serverEnvoy.stat(`${listener}.ssl.connection_error`, { orZero: true })) > 0);
    const fromUs = await doctor();
    expect(fromUs.ok).toBe(true); // nothing wrong with what we serve
    const r = await doctor({ envoy: true });
    expect(r.ok).toBe(false);
    expect(r.findings.map((f) => [f.cause, f.subject])).toEqual([['envoy-handshake-error', `http://127.0.0.1:${mesh.ports.serverAdmin} ${listener}`]]);
    expect(r.findings[0]?.summary).toContain('WRONG_VERSION_NUMBER');
  });

  it('a server leaf from a foreign CA: untrusted CA from our state, fail_verify_error from the client Envoy', async () => {
    const foreign = await newCa('foreign root');
    const leaf = await issueServerLeaf(foreign);
    await serve(leaf);
    expect((await mesh.request()).status).toBe(503);
    const ours = await doctor();
    expect(causes(ours)).toEqual(['untrusted-ca']);
    expect(ours.findings[0]?.summary).toContain('foreign root');
    expect(causes(await doctor({ pair: true }))).toEqual(['untrusted-ca']);
    const r = await doctor({ envoy: true });
    expect(causes(r)).toEqual(['envoy-verify-error', 'untrusted-ca']);
    expect(r.findings.find((f) => f.cause === 'envoy-verify-error')?.subject).toBe(`http://127.0.0.1:${mesh.ports.clientAdmin} cluster.backend`);
  });

  it('a server leaf that expires while served: expired with its dates, and fail_verify_error from the client Envoy', async () => {
    // The file source refuses to load an expired (or not yet valid) leaf, so the leaf expires in place:
    // valid for a few seconds when loaded, then past notAfter while Envoy still holds it.
    const notAfter = new Date(Math.ceil((Date.now() + 4_000) / 1000) * 1000);
    const leaf = await issueLeaf(ca, { spiffeId: SERVER_ID, dnsNames: [SERVER_DNS], notAfter });
    await serve(leaf);
    const ours = await waitUntil('doctor to see the served leaf expire', async () => {
      const r = await doctor({ pair: true });
      return causes(r).includes('expired') ? r : undefined;
    }, { timeoutMs: 15_000, intervalMs: 250 });
    expect(causes(ours)).toEqual(['expired']);
    expect(ours.findings.find((f) => f.cause === 'expired')?.summary).toContain(`leaf ${leaf.serialNumber} expired at ${notAfter.toISOString()}`);
    expect((await mesh.request()).status).toBe(503);
    expect(causes(await doctor({ envoy: true }))).toEqual(['envoy-verify-error', 'expired']);
  });

  it('a server leaf whose SAN is not the one the client expects: SAN mismatch, fail_verify_san from the client Envoy', async () => {
    const leaf = await issueLeaf(ca, { spiffeId: 'spiffe://example.org/payments', dnsNames: [SERVER_DNS] });
    await serve(leaf);
    expect((await mesh.request()).status).toBe(503);
    expect(causes(await doctor())).toEqual([]); // served and trusted: only a pair knows the expected name
    const pair = await doctor({ pair: true, envoy: true });
    expect(causes(pair)).toEqual(['envoy-verify-san', 'san-mismatch']);
    expect(pair.findings.find((f) => f.cause === 'san-mismatch')?.details).toEqual([`expected: ${SERVER_ID}`, `present: URI:spiffe://example.org/payments, DNS:${SERVER_DNS}`]);
  });

  it('back to a good leaf: clean bill again', async () => {
    await serve(await issueServerLeaf(ca));
    expect((await mesh.request()).status).toBe(200);
    expect((await doctor({ pair: true, envoy: true })).findings).toEqual([]);
  });

  it("doctor against another server whose bundle for our trust domain has another CA: Envoy's ca_cert is a stale bundle", async () => {
    // The Envoys were configured against the mesh's server; this one serves the same leaves but another root.
    const foreign = await newCa('other server root');
    const caFile = path.join(mesh.files.dir, 'other-server-ca.pem');
    await writeFile(caFile, foreign.certPem);
    const config = mesh.files.config(path.join(mesh.files.dir, 'other-sds.sock'));
    config.bundles = [{ name: BUNDLE, ca: [caFile], trustDomain: TRUST_DOMAIN, names: [] }];
    config.admin = { host: '127.0.0.1', port: 0 };
    const other = await startApp(config, createLogger({ level: 'info', write: (line) => log.push(line) }));
    try {
      const r = await runDoctor({ admin: other.adminAddress!, envoyAdmins: envoyAdmins(), json: false });
      // (Its own leaves, from our CA, are untrusted by its bundle: untrusted-ca, not the point here.)
      const fromEnvoys = r.findings.filter((f) => f.cause.startsWith('envoy-'));
      expect(fromEnvoys.map((f) => [f.cause, f.subject])).toEqual(envoyAdmins().map((url) => ['envoy-stale-bundle', url]));
      expect(fromEnvoys[0]?.summary).toMatch(new RegExp(`^trusts for trust domain ${TRUST_DOMAIN} CA serial\\(s\\) [0-9A-F]+, none of the roots we serve for it \\(serial\\(s\\) ${foreign.serialNumber}\\)$`));
    } finally {
      await other.stop();
    }
  });
});
