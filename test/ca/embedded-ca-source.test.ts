import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { X509Certificate } from 'node:crypto';
import { EmbeddedCa } from '../../src/ca/embedded/embedded-ca.js';
import type { CaBackend, SignRequest } from '../../src/ca/ca-backend.js';
import { CaSource } from '../../src/sources/ca-source.js';
import { SecretStore } from '../../src/secrets/store.js';
import { createLogger, silentLogger } from '../../src/core/logger.js';
import { createRootCa, issueLeaf } from '../../src/x509/issue.js';
import { startServer, type RunningServer } from '../helpers/server.js';
import { SdsTestClient, decodeSecret, envoyNode } from '../helpers/sds-client.js';

const TD = 'example.org';
const FRONT = 'spiffe://example.org/front';

const leafOf = (store: SecretStore, name: string): X509Certificate => {
  const v = store.get(name)?.value;
  if (v?.kind !== 'tls-certificate') throw new Error(`${name} not served`);
  return new X509Certificate(v.certificateChainPem);
};
const rootsOf = (store: SecretStore): X509Certificate[] => {
  const v = store.get(`spiffe://${TD}`)?.value;
  if (v?.kind !== 'trust-bundle') throw new Error('bundle not served');
  return v.bundles.flatMap((b) => b.rootsPem.map((p) => new X509Certificate(p)));
};

describe('embedded CA', () => {
  let dir: string;
  beforeEach(async () => {
    dir = await fs.mkdtemp(path.join(os.tmpdir(), 'sds-ca-'));
  });
  afterEach(async () => {
    await fs.rm(dir, { recursive: true, force: true });
  });

  it('creates a root on first start, keeps its key 0600 in the data dir, and reuses it after a restart', async () => {
    const dataDir = path.join(dir, 'data');
    const first = await EmbeddedCa.open({ trustDomain: TD, dataDir, log: silentLogger });
    expect((await fs.stat(path.join(dataDir, 'ca.key'))).mode & 0o777).toBe(0o600);
    const again = await EmbeddedCa.open({ trustDomain: TD, dataDir, log: silentLogger });
    expect(again.rootPem).toBe(first.rootPem);
    expect(new X509Certificate(first.rootPem).subjectAltName).toContain('spiffe://example.org');
  });

  it('a data dir it cannot write, or one holding another trust domain\'s root: SDS_ERR_CA_DATA_DIR naming the directory (and both trust domains)', async () => {
    // A file where the directory should be: nothing can be created under it (a user whose home is
    // /nonexistent sees the same kind of failure).
    const blocked = path.join(dir, 'file');
    await fs.writeFile(blocked, '');
    const unwritable = EmbeddedCa.open({ trustDomain: TD, dataDir: path.join(blocked, 'ca'), log: silentLogger });
    await expect(unwritable).rejects.toMatchObject({ code: 'SDS_ERR_CA_DATA_DIR' });
    await expect(unwritable).rejects.toThrow(`cannot keep the embedded CA root in ${path.join(blocked, 'ca')}`);

    const dataDir = path.join(dir, 'data');
    await EmbeddedCa.open({ trustDomain: TD, dataDir, log: silentLogger });
    const other = EmbeddedCa.open({ trustDomain: 'other.test', dataDir, log: silentLogger });
    await expect(other).rejects.toMatchObject({ code: 'SDS_ERR_CA_DATA_DIR' });
    await expect(other).rejects.toThrow(`the CA root kept in ${dataDir} is for spiffe://example.org, not spiffe://other.test`);
  });

  it('signs with an operator-provided CA certificate and key', async () => {
    const ca = await createRootCa({ trustDomain: TD });
    await fs.writeFile(path.join(dir, 'ca.crt'), ca.certPem);
    await fs.writeFile(path.join(dir, 'ca.key'), ca.keyPem);
    const backend = await EmbeddedCa.open({ trustDomain: TD, caCertFile: path.join(dir, 'ca.crt'), caKeyFile: path.join(dir, 'ca.key'), log: silentLogger });
    const store = new SecretStore();
    const source = new CaSource({ backend, trustDomain: TD, identities: [{ spiffeId: FRONT, dnsNames: ['front.apps.local'], keyType: 'ec-p256', lifetimeSeconds: 3600, names: [] }], publisher: store, log: silentLogger, bundleRefreshMs: 0 });
    await source.start();
    const leaf = leafOf(store, FRONT);
    expect(leaf.verify(new X509Certificate(ca.certPem).publicKey)).toBe(true);
    expect(leaf.subjectAltName).toContain('URI:spiffe://example.org/front');
    expect(leaf.subjectAltName).toContain('DNS:front.apps.local');
    await source.close();
  });
  it('refuses to issue a SPIFFE ID outside its trust domain (SDS_ERR_SPIFFE_ID_MISMATCH), without asking the backend to sign', async () => {
    const embedded = await EmbeddedCa.open({ trustDomain: TD, dataDir: path.join(dir, 'data'), log: silentLogger });
    const signed: string[] = [];
    const backend: CaBackend = Object.assign(Object.create(embedded) as CaBackend, {
      sign: (req: SignRequest, signal: AbortSignal) => {
        signed.push(req.spiffeId);
        return embedded.sign(req, signal);
      },
    });
    const store = new SecretStore();
    let refusal: (line: Record<string, unknown>) => void = () => undefined;
    const refused = new Promise<Record<string, unknown>>((resolve) => (refusal = resolve));
    const log = createLogger({ level: 'warn', write: (l) => {
      const line = JSON.parse(l) as Record<string, unknown>;
      if (line.msg === 'could not issue identity; keeping the current one and retrying') refusal(line);
    } });
    const source = new CaSource({ backend, trustDomain: TD, identities: [], publisher: store, log, bundleRefreshMs: 0 });
    await source.start();
    const OUTSIDE = 'spiffe://other.test/uid/0';
    source.addIdentity(OUTSIDE);
    expect(await refused).toMatchObject({ secret: OUTSIDE, code: 'SDS_ERR_SPIFFE_ID_MISMATCH', error: `${OUTSIDE} is outside the CA's trust domain ${TD}; not issued` });
    expect(signed).toEqual([]);
    expect(store.get(OUTSIDE)?.value).toBeUndefined();
    await source.close();
  });
});

describe('CA-issued identities (embedded CA)', () => {
  let srv: RunningServer;
  let client: SdsTestClient;
  let sources: CaSource[];
  beforeEach(async () => {
    srv = await startServer();
    client = new SdsTestClient(srv.socketPath);
    sources = [];
  });
  afterEach(async () => {
    for (const s of sources) await s.close();
    client.close();
    await srv.stop();
  });

  const source = (backend: CaBackend, extra: Partial<ConstructorParameters<typeof CaSource>[0]> = {}, lifetimeSeconds = 3600): CaSource => {
    const s = new CaSource({
      backend,
      trustDomain: TD,
      identities: [{ spiffeId: FRONT, dnsNames: [], keyType: 'ec-p256', lifetimeSeconds, names: [] }],
      publisher: srv.store,
      log: createLogger({ write: (l) => srv.logs.push(JSON.parse(l) as Record<string, unknown>) }),
      bundleRefreshMs: 0,
      bundlePropagationMs: 50,
      ...extra,
    });
    sources.push(s);
    return s;
  };

  it('issues a key-in-memory identity, and renews it at half its lifetime with a push to subscribed streams', async () => {
    const backend = await EmbeddedCa.open({ trustDomain: TD, log: silentLogger });
    const s = source(backend, { jitterFraction: 0 }, 4);
    const t0 = Date.now();
    await s.start();
    srv.store.markSettled();
    const stream = client.stream();
    stream.send({ node: envoyNode(), resource_names: [FRONT], type_url: client.typeUrl });
    const first = await stream.next();
    stream.send({ version_info: first.version_info, resource_names: [FRONT], type_url: client.typeUrl, response_nonce: first.nonce });
    const firstLeaf = new X509Certificate(decodeSecret(first.resources[0]!).tls_certificate!.certificate_chain!.inline_bytes!);
    const renewal = s.status().find((x) => x.name === FRONT)?.nextRenewalAt;
    expect(renewal).toBeDefined();
    // Half of a 4 s lifetime: the push arrives about 2 s after issuance, well before expiry.
    const pushed = await stream.next(6000);
    const elapsed = Date.now() - t0;
    const secondLeaf = new X509Certificate(decodeSecret(pushed.resources[0]!).tls_certificate!.certificate_chain!.inline_bytes!);
    expect(secondLeaf.serialNumber).not.toBe(firstLeaf.serialNumber);
    expect(elapsed).toBeGreaterThan(1200);
    expect(elapsed).toBeLessThan(3500);
    expect(new Date(secondLeaf.validTo).getTime()).toBeGreaterThan(new Date(firstLeaf.validTo).getTime());
    // And again: renewal keeps going, at the same pace (not a burst).
    stream.send({ version_info: pushed.version_info, resource_names: [FRONT], type_url: client.typeUrl, response_nonce: pushed.nonce });
    const firstPushAt = Date.now();
    const third = await stream.next(6000);
    // X.509 times have whole seconds, so "half of 4 s" is 1.5-2 s after each issuance.
    expect(Date.now() - firstPushAt).toBeGreaterThan(1200);
    expect(third.nonce).not.toBe(pushed.nonce);
    stream.end();
  }, 20_000);
});
