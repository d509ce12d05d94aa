/**
 * Measures the time from a certificate file rotation to the push arriving at a subscribed SDS
 * client. The server runs as its own process (the real program); the client is built from the
 * upstream Envoy protos and ACKs like Envoy. Run: npm run bench:rotation
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { X509Certificate } from 'node:crypto';
import { createRootCa, issueLeaf } from '../src/x509/issue.js';
import { SdsTestClient, decodeSecret, envoyNode } from '../test/helpers/sds-client.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const ID = 'spiffe://example.org/bench';
const ROUNDS = Number(process.env.ROUNDS ?? 20);

async function main(): Promise<void> {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'sds-bench-'));
  const ca = await createRootCa({ trustDomain: 'example.org' });
  const plain = path.join(dir, 'plain');
  const k8s = path.join(dir, 'k8s');
  await fs.mkdir(plain);
  await fs.mkdir(k8s);
  let first = await issueLeaf(ca, { spiffeId: ID });
  await fs.writeFile(path.join(plain, 'tls.crt'), first.chainPem);
  await fs.writeFile(path.join(plain, 'tls.key'), first.keyPem);
  const k8sId = 'spiffe://example.org/bench-k8s';
  first = await issueLeaf(ca, { spiffeId: k8sId });
  await k8sWrite(k8s, first.chainPem, first.keyPem, 0);
  await fs.symlink('..data/tls.crt', path.join(k8s, 'tls.crt'));
  await fs.symlink('..data/tls.key', path.join(k8s, 'tls.key'));
  const config = path.join(dir, 'sds.yaml');
  await fs.writeFile(
    config,
    [
      'certificates:',
      `  - { name: "${ID}", cert: plain/tls.crt, key: plain/tls.key }`,
      `  - { name: "${k8sId}", cert: k8s/tls.crt, key: k8s/tls.key }`,
      'log: { level: warn }',
    ].join('\n'),
  );
  const socketPath = path.join(dir, 'sds.sock');
  const server = spawn(process.execPath, ['--import', 'tsx', path.join(ROOT, 'src/cli/main.ts'), '--config', config, '--socket', socketPath], {
    cwd: ROOT,
    stdio: ['ignore', 'inherit', 'inherit'],
  });
  try {
    await waitForSocket(socketPath);
    const results: Array<{ style: string; ms: number[] }> = [];
    for (const [style, name] of [['rename', ID], ['k8s ..data swap', k8sId]] as const) {
      const client = new SdsTestClient(socketPath);
      const stream = client.stream();
      stream.send({ node: envoyNode(), resource_names: [name], type_url: client.typeUrl });
      let res = await stream.next(10_000);
      stream.send({ version_info: res.version_info, resource_names: [name], type_url: client.typeUrl, response_nonce: res.nonce });
      const ms: number[] = [];
      for (let i = 1; i <= ROUNDS; i++) {
        const leaf = await issueLeaf(ca, { spiffeId: name });
        let t0: bigint;
        if (style === 'rename') {
          await fs.writeFile(path.join(plain, 'tls.key.tmp'), leaf.keyPem);
          await fs.writeFile(path.join(plain, 'tls.crt.tmp'), leaf.chainPem);
          await fs.rename(path.join(plain, 'tls.key.tmp'), path.join(plain, 'tls.key'));
          await fs.rename(path.join(plain, 'tls.crt.tmp'), path.join(plain, 'tls.crt'));
          t0 = process.hrtime.bigint();
        } else {
          t0 = await k8sWrite(k8s, leaf.chainPem, leaf.keyPem, i);
        }
        res = await stream.next(10_000);
        const t1 = process.hrtime.bigint();
        const chain = decodeSecret(res.resources[0]!).tls_certificate!.certificate_chain!.inline_bytes!;
        if (new X509Certificate(chain).serialNumber !== leaf.serialNumber) throw new Error(`round ${i}: got an old serial`);
        ms.push(Number(t1 - t0) / 1e6);
        stream.send({ version_info: res.version_info, resource_names: [name], type_url: client.typeUrl, response_nonce: res.nonce });
        // Let the debounce window close so rounds do not merge.
        await new Promise((r) => setTimeout(r, 150));
      }
      stream.end();
      client.close();
      results.push({ style, ms });
    }
    console.log(`\nfile rotation -> push received, ${ROUNDS} rounds each (server debounce 50 ms)\n`);
    console.log('style              median   p95      max');
    for (const { style, ms } of results) {
      console.log(`${style.padEnd(18)} ${fmt(pct(ms, 50))} ${fmt(pct(ms, 95))} ${fmt(Math.max(...ms))}`);
    }
  } finally {
    server.kill('SIGTERM');
    await new Promise((r) => server.once('exit', r));
    await fs.rm(dir, { recursive: true, force: true });
  }
}

/** Kubernetes atomic writer: new timestamped dir, `..data_tmp` symlink, rename over `..data`. */
async function k8sWrite(dir: string, cert: string, key: string, round: number): Promise<bigint> {
  const stamp = `..2026_11_27_00_00_00.${String(round).padStart(6, '0')}`;
  await fs.mkdir(path.join(dir, stamp));
  await fs.writeFile(path.join(dir, stamp, 'tls.crt'), cert);
  await fs.writeFile(path.join(dir, stamp, 'tls.key'), key);
  await fs.symlink(stamp, path.join(dir, '..data_tmp'));
  let previous: string | undefined;
  try {
    previous = await fs.readlink(path.join(dir, '..data'));
  } catch {
    previous = undefined;
  }
  await fs.rename(path.join(dir, '..data_tmp'), path.join(dir, '..data'));
  const t0 = process.hrtime.bigint();
  if (previous) await fs.rm(path.join(dir, previous), { recursive: true });
  return t0;
}

async function waitForSocket(p: string): Promise<void> {
  for (let i = 0; i < 200; i++) {
    try {
      if ((await fs.lstat(p)).isSocket()) return;
    } catch {
      // not yet
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error('server did not create its socket');
}

const pct = (xs: number[], p: number): number => {
  const sorted = [...xs].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)] ?? NaN;
};
const fmt = (ms: number): string => `${ms.toFixed(1)} ms`.padEnd(8);

main().catch((err: Error) => {
  console.error(err);
  process.exit(1);
});
