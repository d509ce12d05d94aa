import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { startApp, type RunningApp } from '../src/cli/app.js';
import { defaultConfig } from '../src/cli/config.js';
import { silentLogger } from '../src/core/logger.js';
import { createRootCa, issueLeaf } from '../src/x509/issue.js';
import { captureLogs } from './helpers/files.js';
import { rootCa } from './helpers/identities.js';
import { SdsTestClient, envoyNode } from './helpers/sds-client.js';

const FRONT = 'spiffe://example.org/front';
const TD = 'spiffe://example.org';

describe('admin endpoint: /healthz, /ready, /status, /streams', () => {
  let dir: string;
  let app: RunningApp | undefined;
  beforeEach(async () => {
    dir = await fs.mkdtemp(path.join(os.tmpdir(), 'sds-admin-'));
  });
  afterEach(async () => {
    await app?.stop();
    app = undefined;
    await fs.rm(dir, { recursive: true, force: true });
  });

  const get = async (p: string): Promise<{ status: number; text: string; json: Record<string, unknown> }> => {
    const res = await fetch(`http://${app!.adminAddress}${p}`);
    const text = await res.text();
    return { status: res.status, text, json: JSON.parse(text) as Record<string, unknown> };
  };

  it('reports readiness, certificate details, file errors and NACKs, and never a key', async () => {
    const ca = await rootCa('example.org');
    const config = defaultConfig();
    config.socket.path = path.join(dir, 'sds.sock');
    config.admin = { host: '127.0.0.1', port: 0 };
    config.watch.pollIntervalMs = 0;
    config.certificates = [{ name: FRONT, cert: path.join(dir, 'tls.crt'), key: path.join(dir, 'tls.key'), names: [] }];
    config.bundles = [{ name: TD, ca: [path.join(dir, 'ca.crt')], trustDomain: 'example.org', names: [] }];
    await fs.writeFile(path.join(dir, 'ca.crt'), ca.certPem);
    app = await startApp(config, silentLogger);

    expect((await get('/healthz')).status).toBe(200);
    const notReady = await get('/ready');
    expect(notReady.status).toBe(503);
    expect(JSON.stringify(notReady.json)).toContain('SDS_ERR_FILE_MISSING');

    const leaf = await issueLeaf(ca, { spiffeId: FRONT });
    await fs.writeFile(path.join(dir, 'tls.key'), leaf.keyPem);
    await fs.writeFile(path.join(dir, 'tls.crt'), leaf.chainPem);
    await app.reload();
    expect((await get('/ready')).status).toBe(200);

    // A NACK from a client shows up in the secret's protocol counters.
    const client = new SdsTestClient(app.socketPath);
    const s = client.stream();
    s.send({ node: envoyNode(), resource_names: ['default'], type_url: client.typeUrl });
    const res = await s.next();
    s.send({ resource_names: ['default'], type_url: client.typeUrl, response_nonce: res.nonce, error_detail: { code: 13, message: 'bad key' } });
    await new Promise((r) => setTimeout(r, 200));

    // A broken file: still serving the last good version, and /status says why.
    await fs.writeFile(path.join(dir, 'tls.crt'), '-----BEGIN CERTIFICATE-----\nMIIB');
    await app.reload();
    const status = await get('/status');
    const secrets = status.json.secrets as Array<Record<string, unknown>>;
    const front = secrets.find((x) => x.name === FRONT)!;
    // The last good one is still served: serving-last-good (not error), with the refused update's reason.
    expect(front.state).toBe('serving-last-good');
    expect((front.refusedUpdate as Record<string, string>).code).toBe('SDS_ERR_PEM_INVALID');
    // The served version was NACKed by the client above: count and reason.
    expect(front.nacked).toMatchObject({ version: front.version, count: 1, reason: 'bad key' });
    expect(front.aliases).toEqual(['default']);
    expect((front.certificate as Record<string, unknown>).serialNumber).toBe(leaf.serialNumber);
    expect((front.certificate as Record<string, number>).expiresInSeconds).toBeGreaterThan(3000);
    expect((front.lastError as Record<string, string>).code).toBe('SDS_ERR_PEM_INVALID');
    expect((front.lastError as Record<string, string>).message).toContain(path.join(dir, 'tls.crt'));
    expect(front.protocol).toMatchObject({ responses: 1, nacks: 1, lastNack: { reason: 'bad key' } });
    expect((status.json.streams as Record<string, number>).open).toBe(1);
    expect(status.text).not.toContain('PRIVATE KEY');
    expect(status.text).not.toContain(leaf.keyPem.split('\n')[1]!);
    expect((await get('/ready')).status).toBe(200);
    s.end();
    client.close();
  });

  it('a leaf that does not chain to its trust domain bundle is served, with a warning in the log and /status naming its issuer and the bundle (issue 10)', async () => {
    const [caA, caB] = [await createRootCa({ trustDomain: 'example.org', commonName: 'Root A' }), await createRootCa({ trustDomain: 'example.org', commonName: 'Root B' })];
    const logs = captureLogs();
    const config = defaultConfig();
    config.socket.path = path.join(dir, 'sds.sock');
    config.admin = { host: '127.0.0.1', port: 0 };
    config.watch.pollIntervalMs = 0;
    config.certificates = [{ name: FRONT, cert: path.join(dir, 'tls.crt'), key: path.join(dir, 'tls.key'), names: [] }];
    config.bundles = [{ name: TD, ca: [path.join(dir, 'ca.crt')], trustDomain: 'example.org', names: [] }];
    const leaf = await issueLeaf(caA, { spiffeId: FRONT });
    await fs.writeFile(path.join(dir, 'tls.key'), leaf.keyPem);
    await fs.writeFile(path.join(dir, 'tls.crt'), leaf.chainPem);
    await fs.writeFile(path.join(dir, 'ca.crt'), caB.certPem);
    app = await startApp(config, logs.logger);

    // Served anyway...
    const client = new SdsTestClient(app.socketPath);
    expect((await client.fetch({ node: envoyNode(), resource_names: [FRONT] })).resources).toHaveLength(1);
    client.close();
    // ...and said: in /status and in the log, naming the issuer and the bundle.
    const front = ((await get('/status')).json.secrets as Array<Record<string, any>>).find((x) => x.name === FRONT)!;
    const warning = front.warnings.find((w: { code: string }) => w.code === 'SDS_ERR_LEAF_NOT_IN_BUNDLE');
    expect(warning.message).toContain('is issued by CN=Root A');
    expect(warning.message).toContain(`not a root of bundle ${TD}`);
    expect(warning.message).toContain('roots: CN=Root B');
    expect(warning.message).toContain(path.join(dir, 'tls.crt'));
    const logged = logs.records().filter((r) => r.code === 'SDS_ERR_LEAF_NOT_IN_BUNDLE');
    expect(logged).toHaveLength(1);
    expect(logged[0]).toMatchObject({ level: 'warn', name: FRONT, message: warning.message });

    // The bundle catches up: the warning goes.
    await fs.writeFile(path.join(dir, 'ca.crt'), caB.certPem + caA.certPem);
    await app.reload();
    const after = ((await get('/status')).json.secrets as Array<Record<string, any>>).find((x) => x.name === FRONT)!;
    expect(after.warnings).toEqual([]);
    expect(logs.lines.join('\n')).not.toContain('PRIVATE KEY');
  });

  it('/status and /ready never show file content: a key file given as the certificate, and a key pasted as a path (refused at config) (issue 10)', async () => {
    const ca = await rootCa('example.org');
    const leaf = await issueLeaf(ca, { spiffeId: FRONT });
    await fs.writeFile(path.join(dir, 'tls.key'), leaf.keyPem);
    const config = defaultConfig();
    config.socket.path = path.join(dir, 'sds.sock');
    config.admin = { host: '127.0.0.1', port: 0 };
    config.watch.pollIntervalMs = 0;
    // The key file where the certificate should be (and as the CA file).
    config.certificates = [{ name: FRONT, cert: path.join(dir, 'tls.key'), key: path.join(dir, 'tls.key'), names: [] }];
    config.bundles = [{ name: TD, ca: [path.join(dir, 'tls.key')], trustDomain: 'example.org', names: [] }];
    app = await startApp(config, silentLogger);
    const keyLines = leaf.keyPem.split('\n').filter((l) => l && !l.startsWith('-----'));
    for (const p of ['/status', '/ready']) {
      const { text } = await get(p);
      expect(text).toContain(path.join(dir, 'tls.key'));
      expect(text).not.toContain('PRIVATE KEY');
      for (const line of keyLines) expect(text).not.toContain(line.slice(0, 16));
    }
    const { parseConfigFile } = await import('../src/cli/config.js');
    const yaml = `certificates:\n  - name: ${FRONT}\n    cert: tls.crt\n    key: ${JSON.stringify(leaf.keyPem)}\n`;
    expect(() => parseConfigFile(yaml, path.join(dir, 'sds.yaml'))).toThrow(/certificates\[0\]\.key: contains a PEM block/);
  });

  it('/streams lists per stream the names its client named and was sent, keeps ended streams, and never a key', async () => {
    const ca = await rootCa('example.org');
    const leaf = await issueLeaf(ca, { spiffeId: FRONT });
    await fs.writeFile(path.join(dir, 'tls.key'), leaf.keyPem);
    await fs.writeFile(path.join(dir, 'tls.crt'), leaf.chainPem);
    await fs.writeFile(path.join(dir, 'ca.crt'), ca.certPem);
    const config = defaultConfig();
    config.socket.path = path.join(dir, 'sds.sock');
    config.admin = { host: '127.0.0.1', port: 0 };
    config.certificates = [{ name: FRONT, cert: path.join(dir, 'tls.crt'), key: path.join(dir, 'tls.key'), names: [] }];
    config.bundles = [{ name: TD, ca: [path.join(dir, 'ca.crt')], trustDomain: 'example.org', names: [] }];
    app = await startApp(config, silentLogger);

    const client = new SdsTestClient(app.socketPath);
    const sotw = client.stream();
    sotw.send({ node: envoyNode(), resource_names: [FRONT], type_url: client.typeUrl });
    await sotw.next();
    const delta = client.delta();
    delta.send({ node: envoyNode(), type_url: client.typeUrl, resource_names_subscribe: [TD] });
    const d1 = await delta.next();
    delta.send({ type_url: client.typeUrl, response_nonce: d1.nonce, resource_names_unsubscribe: [TD] });
    await expect.poll(async () => ((await get('/streams')).json.open as Array<{ requests: number }>).map((x) => x.requests)).toEqual([1, 2]);

    const report = await get('/streams');
    expect(report.json.openedTotal).toBe(2);
    expect(report.json.open).toMatchObject([
      { id: 1, api: 'v3', kind: 'sotw', node: envoyNode().id, requests: 1, named: [FRONT], lastRequestNames: [FRONT], unsubscribed: [], sent: [FRONT] },
      { id: 2, api: 'v3', kind: 'delta', requests: 2, named: [TD], lastRequestNames: [], unsubscribed: [TD], sent: [TD] },
    ]);
    expect(report.text).not.toContain('PRIVATE KEY');
    expect(report.text).not.toContain(leaf.keyPem.split('\n')[1]!);

    // An ended stream moves to recentlyClosed with what it was sent.
    sotw.cancel();
    await expect.poll(async () => ((await get('/streams')).json.recentlyClosed as unknown[]).length).toBe(1);
    const after = await get('/streams');
    expect(after.json.recentlyClosed).toMatchObject([{ id: 1, kind: 'sotw', named: [FRONT], sent: [FRONT] }]);
    expect((after.json.open as Array<{ id: number }>).map((x) => x.id)).toEqual([2]);

    // Bounded: a client naming 100 names (one of 2,000 chars) shows the first 64, cut, and a count.
    const many = client.delta();
    const names = Array.from({ length: 100 }, (_, i) => (i === 0 ? 'x'.repeat(2_000) : `n${i}`));
    many.send({ node: envoyNode(), type_url: client.typeUrl, resource_names_subscribe: names });
    await many.next();
    const bounded = ((await get('/streams')).json.open as Array<{ id: number; named: string[]; namesNotKept?: number }>).find((x) => x.id === 3);
    expect(bounded?.named).toHaveLength(64);
    expect(bounded?.named[0]).toBe(`${'x'.repeat(1024)}...(976 more chars)`);
    expect(bounded?.namesNotKept).toBe(36);
    many.end();
    delta.end();
    client.close();
  });
});

describe('admin output never shows a private key', () => {
  it('a status whose error message quotes a PEM private key (status and metrics doubles) is served redacted by /status and /metrics, as valid JSON', async () => {
    const { AdminServer } = await import('../src/ops/admin-server.js');
    const key = (await issueLeaf(await rootCa('example.org'), { spiffeId: FRONT })).keyPem;
    const body = key.split('\n').slice(1, -2).join('\n');
    // As a CA error quotes the first 200 characters of a non-JSON answer: the END line is cut off.
    const cutOff = `cfssl CA: not JSON: ${key.slice(0, 200)}`;
    const whole = `leaked: ${key.trimEnd()} (end)`;
    const status = {
      ready: false,
      socket: '/run/sds.sock',
      streams: { open: 0, byApi: {} },
      secrets: [{ name: FRONT, kind: 'tls-certificate', aliases: [], state: 'error', warnings: [], lastError: { code: 'SDS_ERR_CA_UNAVAILABLE', message: cutOff } }],
      note: whole,
    };
    const admin = new AdminServer({
      host: '127.0.0.1',
      port: 0,
      status: () => status as unknown as ReturnType<ConstructorParameters<typeof AdminServer>[0]['status']>,
      metrics: { contentType: 'text/plain', scrape: async () => `sds_error{message="${cutOff.replace(/\n/g, '\\n')}"} 1\n` },
      log: silentLogger,
    });
    const address = await admin.start();
    try {
      const text = await (await fetch(`http://${address}/status`)).text();
      const json = JSON.parse(text) as typeof status;
      expect(json.secrets[0]!.lastError.message).toBe('cfssl CA: not JSON: [REDACTED PRIVATE KEY]');
      expect(json.note).toBe('leaked: [REDACTED PRIVATE KEY] (end)');
      const metrics = await (await fetch(`http://${address}/metrics`)).text();
      for (const out of [text, metrics]) {
        expect(out).not.toContain('PRIVATE KEY-----');
        expect(out).not.toContain(body.slice(0, 40));
      }
      expect(metrics).toContain('sds_error{message="cfssl CA: not JSON: [REDACTED PRIVATE KEY]');
    } finally {
      await admin.stop();
    }
  });
});
