/**
 * Issue 10: which private key types the pinned Envoy loads, and that sds-server refuses the others
 * before Envoy ever sees them, so Envoy never NACKs a key type.
 *
 * For every type the server-side leaf file is rotated to a certificate with that key:
 * - a type sds-server accepts must show up in Envoy's /certs (its serial), with no SDS update rejected;
 * - a type sds-server refuses (SDS_ERR_KEY_UNSUPPORTED) must leave Envoy on the previous certificate
 *   with no update rejected, and, pushed to Envoy bypassing validation, must really be NACKed by
 *   Envoy: that is what proves the refusal is right rather than merely cautious.
 */
import { X509Certificate } from 'node:crypto';
import { afterAll, beforeAll, beforeEach, expect, it } from 'vitest';
import { ErrorCode } from '../../src/core/errors.js';
import type { TlsCertificateValue } from '../../src/secrets/secret.js';
import { describeCertificate } from '../../src/x509/certificate-info.js';
import type { IssuedLeaf } from '../../src/x509/issue.js';
import { issueLeafWithKeyType, LEAF_KEY_TYPES, type LeafKeyType } from '../helpers/key-types.js';
import { describeWithEnvoy } from './find-envoy.js';
import { sameSerial, waitUntil, type EnvoyProcess } from './harness.js';
import { Mesh, SERVER_DNS, SERVER_ID, STAT, issueClientLeaf, issueServerLeaf } from './mesh.js';

/** What Envoy 1.40 loads (established by this test; FIELD-NOTES "What Envoy will load"). */
const ACCEPTED: readonly LeafKeyType[] = ['rsa-2048', 'rsa-3072', 'rsa-4096', 'p-256', 'p-384', 'p-521', 'ed25519'];
const REFUSED: readonly LeafKeyType[] = ['rsa-1024', 'secp256k1'];

describeWithEnvoy('Envoy key types: each loads in Envoy or is refused by sds-server, never NACKed', (envoyBin) => {
  let mesh: Mesh;
  let serverEnvoy: EnvoyProcess;
  const table: string[] = [];

  beforeAll(async () => {
    mesh = await Mesh.start({ envoyBin });
    serverEnvoy = mesh.serverEnvoy;
  }, 60_000);
  afterAll(async () => {
    if (table.length > 0) console.log(`key type table (Envoy 1.40):\n${table.join('\n')}`);
    await mesh?.close();
  });
  beforeEach((ctx) => {
    ctx.onTestFailed(() => {
      console.error(`----- ${ctx.task.name}: Envoy output and sds-server log -----\n${mesh?.report() ?? '(mesh not started)'}`);
    });
  });

  const rejected = (): Promise<number> => serverEnvoy.stat(STAT.sds(SERVER_ID, 'update_rejected'), { orZero: true });
  const serverStatus = () => mesh.sds?.status().secrets.find((s) => s.name === SERVER_ID);
  const waitServed = (leaf: IssuedLeaf, what: string): Promise<unknown> =>
    waitUntil(`Envoy /certs to show the ${what} leaf ${leaf.serialNumber}`, async () => sameSerial(await serverEnvoy.servedSerial(), leaf.serialNumber), { timeoutMs: 10_000, intervalMs: 20 });

  it('covers every key type the issue names', () => {
    expect([...ACCEPTED, ...REFUSED].sort()).toEqual([...LEAF_KEY_TYPES].sort());
  });

  for (const type of ACCEPTED) {
    it(`${type}: accepted by sds-server and loaded by Envoy (/certs shows it), no update rejected`, async () => {
      const before = await rejected();
      const leaf = await issueLeafWithKeyType(mesh.files.cas[0]!, type, { spiffeId: SERVER_ID, dnsNames: [SERVER_DNS] });
      await mesh.files.rotateServer(leaf);
      await waitServed(leaf, type);
      expect(serverStatus()?.state).toBe('ok');
      expect(await rejected()).toBe(before);
      // An mTLS handshake with the server-side Envoy (from a Node client, which offers every curve and
      // signature algorithm) presents it.
      const presented = await mesh.serverPresentedCert(await issueClientLeaf(mesh.files.cas[0]!), mesh.files.cas);
      expect(sameSerial(presented.serialNumber, leaf.serialNumber)).toBe(true);
      // Informational: Envoy-to-Envoy with the client side's default TLS parameters.
      const res = await mesh.request();
      table.push(`  ${type.padEnd(10)} loaded by Envoy (/certs, mTLS handshake from Node); Envoy client with default TLS params: HTTP ${res.status}`);
    }, 40_000);
  }

  for (const type of REFUSED) {
    it(`${type}: refused by sds-server with ${ErrorCode.KeyUnsupported} (Envoy keeps the last good leaf, no NACK); Envoy itself rejects it`, async () => {
      const good = await issueServerLeaf(mesh.files.cas[0]!);
      await mesh.files.rotateServer(good);
      await waitServed(good, 'good P-256');
      const before = await rejected();

      const bad = await issueLeafWithKeyType(mesh.files.cas[0]!, type, { spiffeId: SERVER_ID, dnsNames: [SERVER_DNS] });
      await mesh.files.rotateServer(bad);
      await waitUntil(`sds-server to refuse the ${type} key`, () => serverStatus()?.lastError?.code === ErrorCode.KeyUnsupported);
      const status = serverStatus();
      expect(status?.lastError?.message).toContain(mesh.files.server.path('tls.key'));
      expect(JSON.stringify(status)).not.toContain('PRIVATE KEY');
      expect(sameSerial(status?.certificate?.serialNumber, good.serialNumber)).toBe(true);
      expect(sameSerial(await serverEnvoy.servedSerial(), good.serialNumber)).toBe(true);
      expect(await rejected()).toBe(before);
      expect((await mesh.request()).status).toBe(200);

      // The same certificate and key pushed past validation: Envoy does reject it.
      const value: TlsCertificateValue = { kind: 'tls-certificate', certificateChainPem: bad.chainPem, privateKeyPem: bad.keyPem, leaf: describeCertificate(new X509Certificate(bad.certPem)) };
      expect(mesh.sds?.store.publish(SERVER_ID, value)).toBeDefined();
      await waitUntil(`Envoy to reject the ${type} certificate pushed past validation`, async () => (await rejected()) > before);
      expect(sameSerial(await serverEnvoy.servedSerial(), good.serialNumber)).toBe(true);
      table.push(`  ${type.padEnd(10)} refused by sds-server (${ErrorCode.KeyUnsupported}); pushed past validation, Envoy NACKs it`);

      // Back to a good leaf for the next case.
      const next = await issueServerLeaf(mesh.files.cas[0]!);
      await mesh.files.rotateServer(next);
      await waitServed(next, 'good P-256');
    }, 40_000);
  }
});
