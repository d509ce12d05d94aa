import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import http from 'node:http';
import parsePrometheusTextFormat from 'parse-prometheus-text-format';
import { startApp, type RunningApp } from '../src/cli/app.js';
import { defaultConfig } from '../src/cli/config.js';
import { silentLogger } from '../src/core/logger.js';
import { issueLeaf } from '../src/x509/issue.js';
import { rootCa } from './helpers/identities.js';
import { SdsTestClient, envoyNode } from './helpers/sds-client.js';

const FRONT = 'spiffe://example.org/front';
const TD = 'spiffe://example.org';

type Families = ReturnType<typeof parsePrometheusTextFormat>;

function sample(families: Families, name: string, labels: Record<string, string> = {}): number | undefined {
  const family = families.find((f) => f.name === name);
  const m = family?.metrics.find((x) => Object.entries(labels).every(([k, v]) => x.labels?.[k] === v));
  if (!m) return undefined;
  return Number(m.value ?? m.count);
}

/** GET over TCP (`host:port`) or a Unix socket (`unix:/path`). */
function get(address: string, p: string): Promise<{ status: number; type: string; text: string }> {
  const target = address.startsWith('unix:') ? { socketPath: address.slice(5) } : { host: address.split(':')[0], port: Number(address.split(':')[1]) };
  return new Promise((resolve, reject) => {
    http
      .get({ ...target, path: p }, (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => (text += c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, type: String(res.headers['content-type']), text }));
      })
      .on('error', reject);
  });
}

async function waitFor(what: string, check: () => Promise<boolean>, timeoutMs = 5000): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

describe('admin /metrics (Prometheus text, parsed with parse-prometheus-text-format)', () => {
  let dir: string;
  let app: RunningApp | undefined;
  beforeEach(async () => {
    dir = await fs.mkdtemp(path.join(os.tmpdir(), 'sds-metrics-'));
  });
  afterEach(async () => {
    await app?.stop();
    app = undefined;
    await fs.rm(dir, { recursive: true, force: true });
  });

  async function start(admin: { host: string; port: number } | { socketPath: string; mode: number }) {
    const ca = await rootCa('example.org');
    const config = defaultConfig();
    config.socket.path = path.join(dir, 'sds.sock');
    config.admin = admin;
    config.watch.pollIntervalMs = 0;
    config.certificates = [{ name: FRONT, cert: path.join(dir, 'tls.crt'), key: path.join(dir, 'tls.key'), names: [] }];
    config.bundles = [{ name: TD, ca: [path.join(dir, 'ca.crt')], trustDomain: 'example.org', names: [] }];
    const notAfter = new Date(Date.now() + 3600_000);
    const leaf = await issueLeaf(ca, { spiffeId: FRONT, notAfter });
    await fs.writeFile(path.join(dir, 'ca.crt'), ca.certPem);
    await fs.writeFile(path.join(dir, 'tls.key'), leaf.keyPem);
    await fs.writeFile(path.join(dir, 'tls.crt'), leaf.chainPem);
    app = await startApp(config, silentLogger);
    return { ca, leaf, notAfter };
  }

  it('the NACK counter, responses, ACKs, the expiry gauge, streams and fan-out move as expected; no key in the output', async () => {
    const { ca, leaf, notAfter } = await start({ host: '127.0.0.1', port: 0 });
    const scrape = async (): Promise<{ families: Families; text: string }> => {
      const res = await get(app!.adminAddress!, '/metrics');
      expect(res.status).toBe(200);
      expect(res.type).toContain('text/plain');
      return { families: parsePrometheusTextFormat(res.text), text: res.text };
    };

    const before = await scrape();
    // prom-client's default process metrics are there.
    expect(sample(before.families, 'process_cpu_user_seconds_total')).toBeGreaterThanOrEqual(0);
    expect(sample(before.families, 'nodejs_heap_size_used_bytes')).toBeGreaterThan(0);
    expect(sample(before.families, 'sds_nacks_total', { secret: FRONT })).toBeUndefined();
    const expiry = sample(before.families, 'sds_certificate_expiry_seconds', { secret: FRONT, serial: leaf.serialNumber })!;
    expect(Math.abs(expiry - (notAfter.getTime() - Date.now()) / 1000)).toBeLessThan(30);

    // A client: response, ACK, then a NACK of a pushed version.
    const client = new SdsTestClient(app!.socketPath);
    const s = client.stream();
    s.send({ node: envoyNode({ id: 'front-1' }), resource_names: [FRONT], type_url: client.typeUrl });
    const first = await s.next();
    s.send({ resource_names: [FRONT], type_url: client.typeUrl, version_info: first.version_info, response_nonce: first.nonce });
    await waitFor('the ACK counted', async () => sample((await scrape()).families, 'sds_acks_total', { secret: FRONT }) === 1);
    const mid = await scrape();
    expect(sample(mid.families, 'sds_responses_total', { secret: FRONT })).toBe(1);
    expect(sample(mid.families, 'sds_streams_open', { api: 'v3', kind: 'sotw' })).toBe(1);
    expect(sample(mid.families, 'sds_streams_opened_total', { api: 'v3', kind: 'sotw' })).toBe(1);
    expect(sample(mid.families, 'sds_connections_open')).toBe(1);

    // The stream opened after the startup publish: its first answer is not a push, so that
    // publish's window (closing 2 s after start, before the one below) adds no observation.
    const fanOutsBefore = sample((await scrape()).families, 'sds_push_fanout_seconds') ?? 0;
    expect(fanOutsBefore).toBe(0);
    // Rotation to a leaf with a shorter life: the expiry gauge moves to it, the push is timed.
    const notAfter2 = new Date(Date.now() + 600_000);
    const leaf2 = await issueLeaf(ca, { spiffeId: FRONT, notAfter: notAfter2 });
    await fs.writeFile(path.join(dir, 'tls.key'), leaf2.keyPem);
    await fs.writeFile(path.join(dir, 'tls.crt'), leaf2.chainPem);
    await app!.reload();
    const pushed = await s.next();
    s.send({ resource_names: [FRONT], type_url: client.typeUrl, version_info: first.version_info, response_nonce: pushed.nonce, error_detail: { code: 13, message: 'refused on purpose' } });
    await waitFor('the NACK counted', async () => sample((await scrape()).families, 'sds_nacks_total', { secret: FRONT }) === 1);
    const after = await scrape();
    expect(sample(after.families, 'sds_responses_total', { secret: FRONT })).toBe(2);
    expect(sample(after.families, 'sds_certificate_expiry_seconds', { secret: FRONT, serial: leaf.serialNumber })).toBeUndefined();
    const expiry2 = sample(after.families, 'sds_certificate_expiry_seconds', { secret: FRONT, serial: leaf2.serialNumber })!;
    expect(Math.abs(expiry2 - (notAfter2.getTime() - Date.now()) / 1000)).toBeLessThan(30);
    expect(expiry2).toBeLessThan(expiry - 2000);
    // The fan-out window (2 s) closes, then the histogram holds the push.
    await waitFor('the fan-out observed', async () => sample((await scrape()).families, 'sds_push_fanout_seconds') === 1, 8000);
    const fanOut = parsePrometheusTextFormat((await scrape()).text).find((f) => f.name === 'sds_push_fanout_seconds')!.metrics[0]!;
    expect(Number(fanOut.sum)).toBeLessThan(1);

    const text = (await scrape()).text;
    expect(text).not.toContain('PRIVATE KEY');
    for (const l of [leaf, leaf2]) for (const line of l.keyPem.split('\n').filter((x) => x && !x.startsWith('-----'))) expect(text).not.toContain(line.slice(0, 16));
    s.end();
    client.close();
  });

  it('every registered sds_ family is documented in docs/metrics.md', async () => {
    await start({ host: '127.0.0.1', port: 0 });
    const doc = await fs.readFile(path.join(__dirname, '..', 'docs', 'metrics.md'), 'utf8');
    const names = (await app!.metrics.registry.getMetricsAsJSON()).map((m) => m.name).filter((n) => n.startsWith('sds_'));
    expect(names.length).toBeGreaterThanOrEqual(10);
    for (const name of names) expect(doc, name).toContain(`\`${name}\``);
  });

  it('--admin unix:/path: the admin endpoint on a Unix socket, mode 0600, removed at stop', async () => {
    const socketPath = path.join(dir, 'admin', 'admin.sock');
    await start({ socketPath, mode: 0o600 });
    expect(app!.adminAddress).toBe(`unix:${socketPath}`);
    expect((await fs.stat(socketPath)).mode & 0o777).toBe(0o600);
    const res = await get(app!.adminAddress!, '/metrics');
    expect(sample(parsePrometheusTextFormat(res.text), 'sds_streams_opened_total', { api: 'v3', kind: 'sotw' }) ?? 0).toBe(0);
    expect((await get(app!.adminAddress!, '/healthz')).status).toBe(200);
    await app!.stop();
    app = undefined;
    await expect(fs.lstat(socketPath)).rejects.toThrow(/ENOENT/);
  });
});
