/**
 * `doctor --admin unix:/path`: the admin endpoint on a Unix socket (no TCP port in a pod). The
 * socket is served by a test double: a plain node:http server on a real Unix socket answering
 * /certificates with the view our admin builds from a real store.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import fs from 'node:fs/promises';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { runDoctor } from '../src/cli/doctor-command.js';
import { buildCertificatesView } from '../src/ops/certificates-view.js';
import { SecretStore } from '../src/secrets/store.js';
import { createRootCa } from '../src/x509/issue.js';
import { bundleValue, tlsValue } from './helpers/identities.js';

describe('doctor --admin unix:/path (admin socket test double)', () => {
  let dir: string;
  let server: http.Server;
  const paths: string[] = [];

  beforeAll(async () => {
    dir = await fs.mkdtemp(path.join(os.tmpdir(), 'sds-doctor-unix-'));
    const ca = await createRootCa({ commonName: 'example.org root', trustDomain: 'example.org' });
    const foreign = await createRootCa({ commonName: 'foreign root', trustDomain: 'example.org' });
    const store = new SecretStore();
    store.publish('spiffe://example.org/server', (await tlsValue(foreign, 'spiffe://example.org/server')).value);
    store.publish('spiffe://example.org', bundleValue('example.org', ca));
    server = http.createServer((req, res) => {
      paths.push(req.url ?? '');
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify(buildCertificatesView(store, ['spiffe://example.org/server', 'spiffe://example.org'])));
    });
    await new Promise<void>((resolve) => server.listen(path.join(dir, 'admin.sock'), resolve));
  });
  afterAll(async () => {
    await new Promise<void>((resolve) => server.close(() => resolve()));
    await fs.rm(dir, { recursive: true, force: true });
  });

  it('reads /certificates over the socket and names the untrusted CA', async () => {
    const r = await runDoctor({ admin: `unix:${path.join(dir, 'admin.sock')}`, envoyAdmins: [], json: true });
    expect(paths).toEqual(['/certificates']);
    expect(r.ok).toBe(false);
    expect(r.findings.map((f) => [f.cause, f.subject])).toEqual([['untrusted-ca', 'spiffe://example.org/server']]);
    expect(r.checked[0]).toContain(`sds-server admin unix:${path.join(dir, 'admin.sock')}`);
  });
});
