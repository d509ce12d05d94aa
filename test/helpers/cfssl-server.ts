/**
 * A real `cfssl serve` (github.com/cloudflare/cfssl) for tests: root (or root + intermediate) made
 * with src/x509/issue.ts, a signing config with HMAC-authenticated profiles, optional HTTPS, in a
 * fresh temp dir, on a free loopback port. Started, waited for (GET /api/v1/cfssl/health), stopped.
 *
 * The binary: $CFSSL_BIN, else .tools/bin/cfssl (built by scripts/ca/install-cfssl.sh). Without it
 * the tests are skipped with one line saying how to get it, except under CI (`CI` set), where the
 * test file fails while collecting.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes, webcrypto } from 'node:crypto';
import { existsSync } from 'node:fs';
import fs from 'node:fs/promises';
import * as http from 'node:http';
import * as https from 'node:https';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import * as x509 from '@peculiar/x509';
import { describe } from 'vitest';
import { createIntermediateCa, createRootCa, type CertificateAuthority } from '../../src/x509/issue.js';
import { toPem } from '../../src/x509/pem.js';

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
export const CFSSL_INSTALL_SCRIPT = 'scripts/ca/install-cfssl.sh';
const INSTALL_HINT = `run \`bash ${CFSSL_INSTALL_SCRIPT}\` (builds cfssl into .tools/bin, ~2 min) or set CFSSL_BIN`;

export function findCfssl(env: NodeJS.ProcessEnv = process.env): { bin: string } | { problem: string } {
  const fromEnv = env.CFSSL_BIN?.trim();
  if (fromEnv) return existsSync(fromEnv) ? { bin: fromEnv } : { problem: `CFSSL_BIN=${fromEnv} does not exist` };
  const local = path.join(REPO, '.tools/bin/cfssl');
  return existsSync(local) ? { bin: local } : { problem: `no cfssl binary (CFSSL_BIN unset, ${local} missing)` };
}

function isCi(env: NodeJS.ProcessEnv = process.env): boolean {
  const ci = (env.CI ?? '').trim().toLowerCase();
  return ci !== '' && ci !== '0' && ci !== 'false';
}

let skipAnnounced = false;

/** `describe` for tests that need cfssl: skipped without it, a loud failure under CI. */
export function describeWithCfssl(name: string, fn: (bin: string) => void): void {
  const found = findCfssl();
  if ('problem' in found) {
    if (isCi()) throw new Error(`cfssl is required under CI: ${found.problem}; ${INSTALL_HINT}`);
    if (!skipAnnounced) console.warn(`cfssl tests skipped: ${found.problem}; ${INSTALL_HINT}`);
    skipAnnounced = true;
  }
  describe.skipIf('problem' in found)(name, () => fn('bin' in found ? found.bin : 'cfssl-not-found'));
}

export interface CfsslProfileSpec {
  /** Lifetime from issuance, seconds: the profile gets expiry = lifetime + backdate (30 s). */
  lifetimeSeconds: number;
}

export interface CfsslServerOptions {
  /** Serve HTTPS with a certificate for 127.0.0.1 issued by the test root. */
  tls?: boolean;
  /** Sign with an intermediate under the root instead of the root itself. */
  intermediate?: boolean;
  /** Require the HMAC auth key on every profile (so only /authsign exists). Default true. */
  auth?: boolean;
  /** Named profiles; the default profile gets `defaultLifetimeSeconds` (3600). */
  profiles?: Record<string, CfsslProfileSpec>;
  defaultLifetimeSeconds?: number;
}

export interface CfsslServer {
  /** Base URL, e.g. https://127.0.0.1:41234 */
  url: string;
  root: CertificateAuthority;
  /** The CA cfssl signs with: `root`, or the intermediate. */
  signer: CertificateAuthority;
  /** Hex HMAC key of the profiles (when `auth`). */
  authKey: string | undefined;
  /** PEM to trust for HTTPS to the server (the root) when `tls`. */
  tlsCaPem: string | undefined;
  dir: string;
  /** cfssl's stderr so far. */
  log(): string;
  stop(): Promise<void>;
}

const BACKDATE_SECONDS = 30;
// Everything but what the backend uses; `newcert` would even sign server-generated keys.
const DISABLED_ENDPOINTS = ['newcert', 'newkey', 'init_ca', 'scan', 'scaninfo', 'certinfo', 'certadd', 'gencrl', 'bundle', '/'];

export async function startCfssl(bin: string, opts: CfsslServerOptions = {}): Promise<CfsslServer> {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'cfssl-test-'));
  try {
    const root = await createRootCa({ commonName: 'cfssl test root', trustDomain: 'example.org' });
    const signer = opts.intermediate ? await createIntermediateCa(root, { commonName: 'cfssl test intermediate' }) : root;
    const auth = opts.auth ?? true;
    const authKey = auth ? randomBytes(16).toString('hex') : undefined;

    const usages = ['digital signature', 'key encipherment', 'server auth', 'client auth'];
    const profile = (lifetimeSeconds: number): Record<string, unknown> => ({
      usages,
      expiry: `${lifetimeSeconds + BACKDATE_SECONDS}s`,
      backdate: `${BACKDATE_SECONDS}s`,
      ...(auth ? { auth_key: 'sds' } : {}),
    });
    const config = {
      signing: {
        default: profile(opts.defaultLifetimeSeconds ?? 3600),
        profiles: Object.fromEntries(Object.entries(opts.profiles ?? {}).map(([name, p]) => [name, profile(p.lifetimeSeconds)])),
      },
      ...(auth ? { auth_keys: { sds: { type: 'standard', key: authKey } } } : {}),
    };
    await fs.writeFile(path.join(dir, 'ca.pem'), signer.certPem);
    await fs.writeFile(path.join(dir, 'ca-key.pem'), signer.keyPem, { mode: 0o600 });
    await fs.writeFile(path.join(dir, 'config.json'), JSON.stringify(config, null, 2));
    const tlsArgs: string[] = [];
    if (opts.tls) {
      const tls = await serverCertificate(root);
      await fs.writeFile(path.join(dir, 'tls.pem'), tls.certPem);
      await fs.writeFile(path.join(dir, 'tls-key.pem'), tls.keyPem, { mode: 0o600 });
      tlsArgs.push('-tls-cert', path.join(dir, 'tls.pem'), '-tls-key', path.join(dir, 'tls-key.pem'));
    }

    // A free port can be taken between probing and cfssl's bind: retry a few times.
    let lastError: unknown;
    for (let attempt = 0; attempt < 3; attempt++) {
      const port = await freePort();
      const args = [
        'serve', '-address', '127.0.0.1', '-port', String(port),
        '-ca', path.join(dir, 'ca.pem'), '-ca-key', path.join(dir, 'ca-key.pem'),
        '-config', path.join(dir, 'config.json'),
        '-disable', DISABLED_ENDPOINTS.join(','),
        '-loglevel', '1',
        ...tlsArgs,
      ];
      const child = spawn(bin, args, { cwd: dir, stdio: ['ignore', 'ignore', 'pipe'] });
      let stderr = '';
      child.stderr?.setEncoding('utf8').on('data', (s: string) => (stderr += s));
      const url = `${opts.tls ? 'https' : 'http'}://127.0.0.1:${port}`;
      try {
        await waitReady(url, child, () => stderr, opts.tls ? root.certPem : undefined);
        return {
          url,
          root,
          signer,
          authKey,
          tlsCaPem: opts.tls ? root.certPem : undefined,
          dir,
          log: () => stderr,
          stop: async () => {
            await stopChild(child);
            await fs.rm(dir, { recursive: true, force: true });
          },
        };
      } catch (err) {
        lastError = err;
        await stopChild(child);
        if (!/address already in use/i.test(stderr)) break;
      }
    }
    throw lastError;
  } catch (err) {
    await fs.rm(dir, { recursive: true, force: true });
    throw err;
  }
}

/** A certificate for 127.0.0.1 (IP SAN) issued by `ca`, for cfssl's HTTPS listener. */
async function serverCertificate(ca: CertificateAuthority): Promise<{ certPem: string; keyPem: string }> {
  const keys = await webcrypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, true, ['sign', 'verify']);
  const now = Date.now();
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: randomBytes(8).toString('hex').replace(/^./, '1'),
    subject: 'CN=cfssl test server',
    issuer: ca.cert.subjectName,
    publicKey: keys.publicKey,
    signingKey: ca.keys.privateKey,
    signingAlgorithm: { name: 'ECDSA', hash: 'SHA-256' },
    notBefore: new Date(now - 60_000),
    notAfter: new Date(now + 3_600_000),
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
      new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth]),
      new x509.SubjectAlternativeNameExtension([{ type: 'ip', value: '127.0.0.1' }]),
    ],
  });
  return {
    certPem: toPem('CERTIFICATE', cert.rawData),
    keyPem: toPem('PRIVATE KEY', await webcrypto.subtle.exportKey('pkcs8', keys.privateKey)),
  };
}

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      const port = typeof address === 'object' && address ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}

async function waitReady(url: string, child: ChildProcess, stderr: () => string, caPem: string | undefined): Promise<void> {
  const deadline = Date.now() + 15_000;
  let exited: string | undefined;
  child.once('exit', (code, sig) => (exited = `exited with ${sig ?? code}`));
  child.once('error', (err) => (exited = `could not start: ${err.message}`));
  while (Date.now() < deadline) {
    if (exited) throw new Error(`cfssl serve ${exited}:\n${stderr()}`);
    if (await healthy(`${url}/api/v1/cfssl/health`, caPem)) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`cfssl serve at ${url} not healthy within 15 s:\n${stderr()}`);
}

function healthy(url: string, caPem: string | undefined): Promise<boolean> {
  return new Promise((resolve) => {
    const get = url.startsWith('https:') ? https.get : http.get;
    const req = get(url, { ...(caPem ? { ca: caPem } : {}), timeout: 1000 }, (res) => {
      res.resume();
      resolve(res.statusCode === 200);
    });
    req.on('error', () => resolve(false));
    req.on('timeout', () => req.destroy());
  });
}

async function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const gone = new Promise<void>((r) => child.once('exit', () => r()));
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), 2000);
  await gone;
  clearTimeout(timer);
}
