/**
 * Who holds what (issue 12): two real Envoys against sds-server, seen through the admin endpoint's
 * /clients and `sds-server status`; then a test client that NACKs, and its reason.
 */
import { afterAll, beforeAll, beforeEach, expect, it } from 'vitest';
import { readAdmin, renderClientsTable, runStatusCommand } from '../../src/cli/status-command.js';
import type { ClientsReport } from '../../src/ops/clients.js';
import { SdsTestClient, envoyNode } from '../helpers/sds-client.js';
import { describeWithEnvoy, envoyVersion } from './find-envoy.js';
import { waitUntil } from './harness.js';
import { BUNDLE, CLIENT_ID, Mesh, SERVER_ID } from './mesh.js';

describeWithEnvoy('/clients and sds-server status with real Envoys', (envoyBin) => {
  let mesh: Mesh;
  // What Envoy reports in its node (user_agent_build_version): the binary under test, not the pinned one.
  const version = envoyVersion(envoyBin);
  beforeAll(async () => {
    mesh = await Mesh.start({ envoyBin, admin: true });
  });
  afterAll(async () => {
    await mesh?.close();
  });
  beforeEach((ctx) => {
    ctx.onTestFailed(() => console.error(mesh?.report() ?? '(mesh not started)'));
  });

  const admin = (): string => mesh.sds!.adminAddress!;
  const clients = async (): Promise<ClientsReport> => JSON.parse(await readAdmin(admin(), '/clients')) as ClientsReport;
  const noKeys = (text: string): void => {
    expect(text).not.toContain('PRIVATE KEY');
    for (const leaf of [mesh.files.serverLeaf, mesh.files.clientLeaf]) {
      if (!leaf) continue;
      for (const line of leaf.keyPem.split('\n').filter((l) => l && !l.startsWith('-----'))) expect(text).not.toContain(line.slice(0, 16));
    }
  };

  it('shows both Envoys: node id, cluster, Envoy version, names, and the version each ACKed', async () => {
    // Each Envoy opens one stream per secret (certificate and bundle): four streams, all ACKed.
    await waitUntil('four ACKed streams', async () => {
      const r = await clients();
      return r.clients.length === 4 && r.clients.every((c) => c.versionAcked !== undefined && c.versionAcked === c.versionSent);
    }, { timeoutMs: 10_000, intervalMs: 50 });
    const report = await clients();
    const byNode = (id: string) => report.clients.filter((c) => c.node?.id === id);
    for (const [node, certificate] of [['server-side-envoy', SERVER_ID], ['client-side-envoy', CLIENT_ID]] as const) {
      const streams = byNode(node);
      expect(streams.map((s) => s.names).sort()).toEqual([[certificate], [BUNDLE]].sort());
      for (const s of streams) {
        expect(s).toMatchObject({ api: 'v3', kind: 'sotw', nacks: 0, node: { id: node, cluster: 'sds-server-e2e', envoyVersion: version } });
        expect(s.sent).toEqual(s.names);
        // The /streams record of the same stream, in the same view.
        expect(s.record).toMatchObject({ named: s.names, lastRequestNames: s.names, unsubscribed: [], sent: s.names });
        expect(s.record.requests).toBeGreaterThanOrEqual(2);
        expect(Date.parse(s.connectedSince)).toBeLessThanOrEqual(Date.now());
      }
      // The version each holds is the one /status says is served.
      const status = JSON.parse(await readAdmin(admin(), '/status')) as { secrets: Array<{ name: string; version: string; state: string }> };
      const served = status.secrets.find((x) => x.name === certificate)!;
      expect(streams.find((s) => s.names[0] === certificate)!.versionAcked).toBe(served.version);
      expect(served.state).toBe('ok');
    }

    // `sds-server status`: the same as a table.
    let out = '';
    let err = '';
    expect(await runStatusCommand(['--admin', admin()], (s) => (out += s), (s) => (err += s))).toBe(0);
    expect(err).toBe('');
    expect(out).toMatch(/^4 open stream\(s\)\n/);
    expect(out).toMatch(/STREAM\s+PEER\s+NODE\s+CLUSTER\s+ENVOY/);
    expect(out.split('\n').filter((l) => l.includes('server-side-envoy') && l.includes(version ?? '(unknown)') && l.includes('v3/sotw'))).toHaveLength(2);
    expect(out.split('\n').filter((l) => l.includes('client-side-envoy'))).toHaveLength(2);
    noKeys(out);
    noKeys(JSON.stringify(report));
  });

  it('after a NACK: the stream shows its reason and time, and /status shows the served version as NACKed', async () => {
    const client = new SdsTestClient(mesh.socketPath);
    const s = client.stream();
    s.send({ node: envoyNode({ id: 'nacking-client' }), resource_names: [SERVER_ID], type_url: client.typeUrl });
    const res = await s.next();
    const reason = 'Failed to load certificate chain: refused on purpose by the test';
    s.send({ resource_names: [SERVER_ID], type_url: client.typeUrl, response_nonce: res.nonce, error_detail: { code: 13, message: reason } });
    await waitUntil('the NACK in /clients', async () => (await clients()).clients.some((c) => c.node?.id === 'nacking-client' && c.nacks === 1), {
      timeoutMs: 5_000,
      intervalMs: 20,
    });
    const report = await clients();
    const nacking = report.clients.find((c) => c.node?.id === 'nacking-client')!;
    expect(nacking).toMatchObject({ names: [SERVER_ID], versionSent: res.version_info, nacks: 1, lastNack: { reason } });
    expect(nacking.versionAcked).toBeUndefined();
    expect(Date.now() - Date.parse(nacking.lastNack!.at)).toBeLessThan(60_000);
    // The Envoys are unaffected.
    expect(report.clients.filter((c) => c.node?.id.endsWith('-envoy')).every((c) => c.nacks === 0)).toBe(true);

    const status = JSON.parse(await readAdmin(admin(), '/status')) as { secrets: Array<Record<string, unknown>> };
    const server = status.secrets.find((x) => x.name === SERVER_ID)!;
    expect(server.state).toBe('nacked');
    expect(server.nacked).toMatchObject({ version: server.version, count: 1, reason });

    const table = renderClientsTable(report);
    expect(table.split('\n').find((l) => l.includes('nacking-client'))).toContain('refused on purpose');
    const metrics = await readAdmin(admin(), '/metrics');
    for (const text of [table, JSON.stringify(report), JSON.stringify(status), metrics, mesh.sdsLog.join('\n')]) noKeys(text);
    // Stream open/close at info, with the node id.
    s.end();
    client.close();
    await waitUntil('the close logged', async () => mesh.sdsRecords().some((r) => r.msg === 'stream closed' && r.node === 'nacking-client'), { timeoutMs: 5_000, intervalMs: 20 });
    expect((await clients()).recentlyClosed.at(-1)).toMatchObject({ node: 'nacking-client', names: [SERVER_ID] });
    expect(mesh.sdsRecords().some((r) => r.msg === 'stream opened' && r.node === 'server-side-envoy' && r.level === 'info')).toBe(true);
  });
});
