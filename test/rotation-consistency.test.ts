/**
 * No debounce, yet never a mismatched pair: 200 rotations per style through the running server
 * to a real SDS client on its Unix socket. The key and the certificate land in both orders
 * (temp + rename of each file), with no gap, a same-tick gap or delays between them, in bursts
 * that do not wait for the push and in steps that do; and as Kubernetes' `..data` symlink swap.
 * Every response the client receives must hold a certificate and the key that belongs to it, and
 * the last response must be the last rotation.
 */
import { afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { mkdir, rename, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { X509Certificate, createPrivateKey } from 'node:crypto';
import { startApp, type RunningApp } from '../src/cli/app.js';
import { defaultConfig } from '../src/cli/config.js';
import { ErrorCode } from '../src/core/errors.js';
import { issueLeaf, type CertificateAuthority, type IssuedLeaf } from '../src/x509/issue.js';
import { rootCa } from './helpers/identities.js';
import { captureLogs, KubernetesAtomicWriter, makeTempDir, removeTempDir, sleep, type CapturedLogs } from './helpers/files.js';
import type { DiscoveryRequest as DiscoveryRequestObj } from '../src/api/generated/envoy/service/discovery/v3/DiscoveryRequest.js';
import type { DiscoveryResponse__Output as DiscoveryResponseObj } from '../src/api/generated/envoy/service/discovery/v3/DiscoveryResponse.js';
import { SdsTestClient, decodeSecret, envoyNode, type TestStream } from './helpers/sds-client.js';

const NAME = 'spiffe://example.org/front';
const ROTATIONS = 200;
/** Distinct pairs, used in turn: consecutive rotations always differ. */
const POOL = 12;
/** Gaps between the two files of one rotation (ms); -1: both renames started in the same tick. */
const GAPS = [-1, 0, 1, 3, 10, 20];

let ca: CertificateAuthority;
let pool: IssuedLeaf[];

beforeAll(async () => {
  ca = await rootCa('example.org');
  pool = [];
  for (let i = 0; i < POOL; i++) pool.push(await issueLeaf(ca, { spiffeId: NAME }));
});

interface Received {
  serial: string;
  /** The key belongs to the certificate (OpenSSL's X509_check_private_key). */
  matches: boolean;
}

/** Subscribes, ACKs every response, and checks each pair as it arrives. */
class CheckingSubscriber {
  readonly received: Received[] = [];
  private waiters: Array<{ serial: string; resolve: () => void }> = [];
  private closed = false;

  constructor(private readonly stream: TestStream<DiscoveryRequestObj, DiscoveryResponseObj>, private readonly typeUrl: string) {
    stream.send({ node: envoyNode(), resource_names: [NAME], type_url: typeUrl });
    void this.loop();
  }

  private async loop(): Promise<void> {
    while (!this.closed) {
      let res: DiscoveryResponseObj;
      try {
        res = await this.stream.next(60_000);
      } catch {
        return;
      }
      const secret = decodeSecret(res.resources[0]!);
      const chain = secret.tls_certificate?.certificate_chain?.inline_bytes;
      const key = secret.tls_certificate?.private_key?.inline_bytes;
      let received: Received;
      try {
        const cert = new X509Certificate(chain ?? Buffer.alloc(0));
        received = { serial: cert.serialNumber, matches: cert.checkPrivateKey(createPrivateKey(key ?? Buffer.alloc(0))) };
      } catch {
        received = { serial: 'unparseable', matches: false }; // a half-written file reached the client
      }
      this.received.push(received);
      this.stream.send({ version_info: res.version_info, resource_names: [NAME], type_url: this.typeUrl, response_nonce: res.nonce });
      this.waiters = this.waiters.filter((w) => (w.serial === received.serial ? (w.resolve(), false) : true));
    }
  }

  /** Resolves when a response with `serial` arrives (or has arrived last). */
  until(serial: string): Promise<void> {
    if (this.received.at(-1)?.serial === serial) return Promise.resolve();
    return new Promise((resolve) => this.waiters.push({ serial, resolve }));
  }

  close(): void {
    this.closed = true;
    this.stream.end();
  }
}

/** Write both files under temp names, then rename them over the served names in the given order. */
async function renamePair(dir: string, leaf: IssuedLeaf, keyFirst: boolean, gap: number): Promise<void> {
  await writeFile(path.join(dir, '.tls.crt.tmp'), leaf.chainPem);
  await writeFile(path.join(dir, '.tls.key.tmp'), leaf.keyPem);
  const [first, second] = keyFirst ? ['tls.key', 'tls.crt'] : ['tls.crt', 'tls.key'];
  const move = (base: string): Promise<void> => rename(path.join(dir, `.${base}.tmp`), path.join(dir, base));
  if (gap < 0) {
    await Promise.all([move(first), move(second)]);
    return;
  }
  await move(first);
  // The delay between the two files is the scenario under test, not a wait for a result.
  if (gap > 0) await sleep(gap);
  await move(second);
}

describe.each(['rename', 'kubernetes'] as const)('200 rotations, no debounce, every pushed pair consistent (%s)', (style) => {
  let dir: string;
  let certDir: string;
  let app: RunningApp;
  let client: SdsTestClient;
  let logs: CapturedLogs;
  let k8s: KubernetesAtomicWriter;

  beforeEach(async () => {
    dir = await makeTempDir('sds-consistency-');
    certDir = path.join(dir, 'certs');
    await mkdir(certDir);
    k8s = new KubernetesAtomicWriter(certDir);
    const first = pool[0]!;
    if (style === 'kubernetes') await k8s.init({ 'tls.crt': first.chainPem, 'tls.key': first.keyPem });
    else {
      await writeFile(path.join(certDir, 'tls.crt'), first.chainPem);
      await writeFile(path.join(certDir, 'tls.key'), first.keyPem);
    }
    const config = defaultConfig();
    config.socket.path = path.join(dir, 'sds.sock');
    config.watch.pollIntervalMs = 0; // events only: the poll must not hide a missed event
    config.certificates = [{ name: NAME, cert: path.join(certDir, 'tls.crt'), key: path.join(certDir, 'tls.key'), names: [] }];
    logs = captureLogs();
    app = await startApp(config, logs.logger);
    client = new SdsTestClient(app.socketPath);
  });
  afterEach(async () => {
    client.close();
    await app.stop();
    await removeTempDir(dir);
    expect(logs.lines.filter((l) => l.includes('PRIVATE KEY'))).toEqual([]);
  });

  it('serves only matching pairs, ends on the last rotation, and logs no in-progress mismatch as a warning', async () => {
    const sub = new CheckingSubscriber(client.stream(), client.typeUrl);
    await sub.until(pool[0]!.serialNumber);
    let last = pool[0]!;
    for (let i = 1; i <= ROTATIONS; i++) {
      last = pool[i % POOL]!;
      if (style === 'kubernetes') await k8s.rotate({ 'tls.crt': last.chainPem, 'tls.key': last.keyPem });
      else await renamePair(certDir, last, i % 2 === 0, GAPS[i % GAPS.length]!);
      // Every third rotation waits for its push; the others follow each other at once (bursts).
      if (i % 3 === 0) await sub.until(last.serialNumber);
    }
    await sub.until(last.serialNumber);
    sub.close();

    const bad = sub.received.filter((r) => !r.matches);
    expect(bad).toEqual([]);
    expect(sub.received.at(-1)?.serial).toBe(last.serialNumber);
    // Every waited-for rotation got through, at least.
    expect(sub.received.length).toBeGreaterThanOrEqual(Math.floor(ROTATIONS / 3));
    expect(app.status().secrets.find((s) => s.name === NAME)).toMatchObject({ state: 'ok' });
    const records = logs.records();
    expect(records.filter((r) => r.level === 'error')).toEqual([]);
    // The gaps (at most 20 ms) are far inside the refusal grace: a rotation in progress, not a warning.
    expect(records.filter((r) => r.level === 'warn' && r.code === ErrorCode.KeyMismatch)).toEqual([]);
    if (style === 'rename') {
      // The half-rotated pairs were seen and refused (so this test exercised the refusal).
      expect(records.some((r) => r.level === 'debug' && r.code === ErrorCode.KeyMismatch)).toBe(true);
    }
  });
});
