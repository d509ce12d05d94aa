import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import { X509Certificate } from 'node:crypto';
import { startApp, type RunningApp } from '../src/cli/app.js';
import { defaultConfig } from '../src/cli/config.js';
import { issueLeaf } from '../src/x509/issue.js';
import { silentLogger } from '../src/core/logger.js';
import { rootCa } from './helpers/identities.js';
import { KubernetesAtomicWriter, RenameWriter, makeTempDir, removeTempDir, type RotationStyle } from './helpers/files.js';
import { SdsTestClient, decodeSecret, envoyNode, type ApiLabel } from './helpers/sds-client.js';
import type { CertificateAuthority } from '../src/x509/issue.js';

const FRONT = 'spiffe://example.org/front';

/**
 * The whole path, as Envoy sees it: files rotated on disk -> the running server -> a client built
 * from the upstream Envoy protos over the Unix socket, on v3 and v2.
 */
describe.each<[ApiLabel, 'rename' | 'kubernetes']>([
  ['v3', 'rename'],
  ['v3', 'kubernetes'],
  ['v2', 'rename'],
])('rotation pushed to an SDS %s client (%s)', (api, style) => {
  let dir: string;
  let app: RunningApp;
  let ca: CertificateAuthority;
  let files: RotationStyle;
  let client: SdsTestClient;

  beforeEach(async () => {
    dir = await makeTempDir('sds-push-');
    ca = await rootCa('example.org');
    const certDir = path.join(dir, 'certs');
    await mkdir(certDir);
    files = style === 'rename' ? new RenameWriter(certDir) : new KubernetesAtomicWriter(certDir);
    const first = await issueLeaf(ca, { spiffeId: FRONT });
    await files.init({ 'tls.crt': first.chainPem, 'tls.key': first.keyPem });
    const config = defaultConfig();
    config.socket.path = path.join(dir, 'sds.sock');
    config.watch.pollIntervalMs = 0; // events only: the poll must not hide a missed event
    config.certificates = [{ name: FRONT, cert: files.path('tls.crt'), key: files.path('tls.key'), names: [] }];
    app = await startApp(config, silentLogger);
    client = new SdsTestClient(app.socketPath, api);
  });
  afterEach(async () => {
    client.close();
    await app.stop();
    await removeTempDir(dir);
  });

  it('pushes each rotation, three in a row, and nothing for a mismatched pair', async () => {
    const s = client.stream();
    s.send({ node: envoyNode(), resource_names: [FRONT], type_url: client.typeUrl });
    let res = await s.next();
    const serial = (): string => new X509Certificate(decodeSecret(res.resources[0]!).tls_certificate!.certificate_chain!.inline_bytes!).serialNumber;
    for (let i = 0; i < 3; i++) {
      s.send({ version_info: res.version_info, resource_names: [FRONT], type_url: client.typeUrl, response_nonce: res.nonce });
      const leaf = await issueLeaf(ca, { spiffeId: FRONT });
      await files.rotate({ 'tls.crt': leaf.chainPem, 'tls.key': leaf.keyPem });
      // The latency itself is measured by `npm run bench:rotation`; here only that it arrives.
      res = await s.next(2000);
      expect(serial()).toBe(leaf.serialNumber);
    }
    // A certificate with somebody else's key: refused, nothing pushed, the last good one stays.
    s.send({ version_info: res.version_info, resource_names: [FRONT], type_url: client.typeUrl, response_nonce: res.nonce });
    const [a, b] = [await issueLeaf(ca, { spiffeId: FRONT }), await issueLeaf(ca, { spiffeId: FRONT })];
    await files.rotate({ 'tls.crt': a.chainPem, 'tls.key': b.keyPem });
    expect(await s.nothingWithin(600)).toBe(true);
    expect(app.status().secrets.find((x) => x.name === FRONT)?.lastError?.code).toBe('SDS_ERR_KEY_MISMATCH');
    s.end();
  });
});
