/**
 * Makes the certificates examples/config/sds-server.yaml names, so that example runs as shipped:
 *
 *   npx tsx scripts/examples/config-certs.ts [DIR]     (DIR: default examples/config)
 *
 * writes, under DIR/certs/ (replacing what is there):
 *   ca.crt           root of trust domain example.org (with URI SAN spiffe://example.org)
 *   ca-next.crt      a second example.org root, as during a CA rollover (the bundle lists both)
 *   partner-ca.crt   root of trust domain partner.test (a federated bundle)
 *   front/tls.crt, front/tls.key   spiffe://example.org/front, issued by ca.crt
 *   back/tls.crt,  back/tls.key    spiffe://example.org/back, issued by ca.crt
 * Keys are PKCS#8 PEM, mode 0600; leaves are ECDSA P-256 and valid 90 days, roots 1 year. The CA
 * keys are not kept: these files are for trying the example, not for issuing more. Made with the
 * project's own x509 helpers (src/x509/issue.ts), so no openssl is needed.
 */
import { chmod, mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { createRootCa, issueLeaf } from '../../src/x509/issue.js';

const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const DAY_MS = 24 * 60 * 60 * 1000;

/** Writes the example's certificates under `dir`/certs; returns the files written (absolute). */
export async function makeConfigCerts(dir: string): Promise<string[]> {
  const certs = path.join(dir, 'certs');
  const written: string[] = [];
  const put = async (rel: string, content: string, mode: number): Promise<void> => {
    const file = path.join(certs, rel);
    await mkdir(path.dirname(file), { recursive: true, mode: 0o755 });
    await writeFile(file, content, { mode });
    await chmod(file, mode); // a file that was there keeps its old mode through writeFile
    written.push(file);
  };
  const ca = await createRootCa({ commonName: 'example.org root CA', trustDomain: 'example.org' });
  const next = await createRootCa({ commonName: 'example.org next root CA', trustDomain: 'example.org' });
  const partner = await createRootCa({ commonName: 'partner.test root CA', trustDomain: 'partner.test' });
  await put('ca.crt', ca.certPem, 0o644);
  await put('ca-next.crt', next.certPem, 0o644);
  await put('partner-ca.crt', partner.certPem, 0o644);
  const notAfter = new Date(Date.now() + 90 * DAY_MS);
  for (const name of ['front', 'back']) {
    const leaf = await issueLeaf(ca, { spiffeId: `spiffe://example.org/${name}`, dnsNames: [name], notAfter });
    await put(`${name}/tls.crt`, leaf.chainPem, 0o644);
    await put(`${name}/tls.key`, leaf.keyPem, 0o600);
  }
  return written;
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const dir = path.resolve(process.argv[2] ?? path.join(REPO_ROOT, 'examples', 'config'));
  const files = await makeConfigCerts(dir);
  for (const f of files) console.log(path.relative(process.cwd(), f) || f);
}
