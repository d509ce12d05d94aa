import { afterEach, expect, it } from 'vitest';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { X509Certificate } from 'node:crypto';
import { describeWithCfssl, startCfssl, type CfsslServer } from '../helpers/cfssl-server.js';
import { startApp, type RunningApp } from '../../src/cli/app.js';
import { parseConfigFile } from '../../src/cli/config.js';
import { createLogger } from '../../src/core/logger.js';
import { SdsTestClient, decodeSecret, envoyNode } from '../helpers/sds-client.js';

const WEB = 'spiffe://example.org/web';

describeWithCfssl('sds-server with a real cfssl CA (config -> backend -> renewal)', (bin) => {
  let cfssl: CfsslServer | undefined;
  let app: RunningApp | undefined;
  let dir: string | undefined;
  afterEach(async () => {
    await app?.stop();
    await cfssl?.stop();
    if (dir) await fs.rm(dir, { recursive: true, force: true });
  });

  it('issues from the YAML config over HTTPS with the HMAC key from a file, and keeps serving while cfssl is down', async () => {
    cfssl = await startCfssl(bin, { tls: true });
    dir = await fs.mkdtemp(path.join(os.tmpdir(), 'sds-cfssl-'));
    await fs.writeFile(path.join(dir, 'cfssl.key'), `${cfssl.authKey}\n`, { mode: 0o600 });
    await fs.writeFile(path.join(dir, 'cfssl-ca.pem'), cfssl.tlsCaPem ?? '');
    const file = path.join(dir, 'sds.yaml');
    const config = parseConfigFile(
      [
        `socket: { path: ${path.join(dir, 'sds.sock')} }`,
        'ca:',
        '  backend: cfssl',
        '  trustDomain: example.org',
        `  cfssl: { url: "${cfssl.url}", authKeyFile: cfssl.key, caFile: cfssl-ca.pem }`,
        '  backoff: { initialMs: 100, maxMs: 400 }',
        '  timeoutMs: 2000',
        'identities:',
        `  - { spiffeId: "${WEB}", dnsNames: [web.apps.local], lifetime: 1h }`,
      ].join('\n'),
      file,
    );
    const logs: Array<Record<string, unknown>> = [];
    app = await startApp(config, createLogger({ write: (l) => logs.push(JSON.parse(l) as Record<string, unknown>) }));

    const client = new SdsTestClient(app.socketPath);
    const res = await client.fetch({ node: envoyNode({ metadata: { disable_spiffe_cert_validation: true } }), resource_names: [WEB, 'ROOTCA'] });
    const [cert, bundle] = res.resources.map((r) => decodeSecret(r));
    const leaf = new X509Certificate(cert!.tls_certificate!.certificate_chain!.inline_bytes!);
    expect(leaf.subjectAltName).toContain(`URI:${WEB}`);
    expect(leaf.subjectAltName).toContain('DNS:web.apps.local');
    expect(leaf.verify(new X509Certificate(cfssl.root.certPem).publicKey)).toBe(true);
    // The bundle is cfssl's root, as cfssl's /info reports it.
    expect(new X509Certificate(bundle!.validation_context!.trusted_ca!.inline_bytes!).fingerprint256).toBe(new X509Certificate(cfssl.root.certPem).fingerprint256);
    client.close();

    // The CA goes away: renewal fails with a clear reason, retries with backoff, the leaf stays served.
    const served = app.store.get(WEB);
    await cfssl.stop();
    cfssl = undefined;
    expect(app.status().secrets.find((s) => s.name === WEB)?.state).toBe('ok');
    await app.renewCaIdentities();
    const after = app.status().secrets.find((s) => s.name === WEB)!;
    // The served leaf is still good: the status says so (issue 12), with the reason the renewal failed.
    expect(after.state).toBe('serving-last-good');
    expect(after.lastError?.code).toBe('SDS_ERR_CA_UNAVAILABLE');
    expect(after.lastError?.message).toMatch(/ECONNREFUSED|unreachable/);
    expect(app.store.get(WEB)).toBe(served);
    expect(after.nextRenewalAt).toBeDefined();
    expect(logs.some((l) => l.msg === 'could not issue identity; keeping the current one and retrying' && l.retryInMs !== undefined)).toBe(true);
  });
});
