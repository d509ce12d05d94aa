import { readSecretFileOrThrow } from '../../core/read-secret-file.js';
import { KeyObject } from 'node:crypto';
import fs from 'node:fs/promises';
import { trustDomainId } from '../../x509/spiffe.js';
import path from 'node:path';
import type { Logger } from '../../core/logger.js';
import { ErrorCode, SdsError } from '../../core/errors.js';
import { pseudoFilesystemOf } from '../../core/pseudo-filesystem.js';
import type { KeyType } from '../../x509/issue.js';
import { CLOCK_SKEW_MS, LeafSigner } from '../../x509/leaf-signer.js';
import type { CaBackend, PublicKeySignRequest, SignRequest, SignedCertificate } from '../ca-backend.js';

export interface EmbeddedCaOptions {
  trustDomain: string;
  /** Keeps a generated root here (ca.crt 0644, ca.key 0600) so restarts keep the same trust. */
  dataDir?: string;
  /** An operator-provided CA instead of a generated one. */
  caCertFile?: string;
  caKeyFile?: string;
  /** Key type of a generated root. */
  keyType?: KeyType;
  log: Logger;
}

/**
 * The CA as this backend uses it: PEM (to persist and to serve) and a signer. @peculiar/x509
 * (./issue.ts, ./csr.ts) is imported only to create a root or read a CSR, so a restart with a kept
 * root does not load it (start-up time, BENCHMARKS.md).
 */
interface Authority {
  certPem: string;
  keyPem: string;
  signer: LeafSigner;
  /** ms since the epoch: leaves never outlive it. */
  notAfter: number;
  serialNumber: string;
}

const CERT_FILE = 'ca.crt';
const KEY_FILE = 'ca.key';

/**
 * A CA inside the server: the default backend. It signs CSRs with its own root (generated on first
 * start and persisted, or provided by the operator). `rotateRoot()` starts a CA rollover.
 */
export class EmbeddedCa implements CaBackend {
  readonly kind = 'embedded';

  private constructor(
    private authority: Authority,
    private readonly opts: EmbeddedCaOptions,
  ) {}

  static async open(opts: EmbeddedCaOptions): Promise<EmbeddedCa> {
    return new EmbeddedCa(await loadOrCreate(opts), opts);
  }

  get rootPem(): string {
    return this.authority.certPem;
  }

  async sign(request: SignRequest, signal: AbortSignal): Promise<SignedCertificate> {
    signal.throwIfAborted();
    const { readCsr } = await import('../../x509/csr.js');
    const { publicKey } = await readCsr(request.csrPem);
    return this.signPublicKey({ publicKey: KeyObject.from(publicKey), spiffeId: request.spiffeId, dnsNames: request.dnsNames, lifetimeSeconds: request.lifetimeSeconds }, signal);
  }

  /** Signs a key generated in this process: no CSR to encode and parse back (CaBackend.signPublicKey). */
  async signPublicKey(request: PublicKeySignRequest, signal: AbortSignal): Promise<SignedCertificate> {
    signal.throwIfAborted();
    const spki = request.publicKey.export({ type: 'spki', format: 'der' });
    const now = Date.now();
    const { signer, certPem } = this.authority;
    const leaf = signer.sign(spki, {
      spiffeId: request.spiffeId,
      dnsNames: request.dnsNames,
      notBefore: new Date(now - CLOCK_SKEW_MS),
      // A leaf never outlives its CA.
      notAfter: new Date(Math.min(now + request.lifetimeSeconds * 1000, this.authority.notAfter)),
    });
    return { chainPem: signer.selfSigned ? leaf.certPem : leaf.certPem + certPem };
  }

  async trustBundle(signal: AbortSignal): Promise<string[]> {
    signal.throwIfAborted();
    return [this.authority.certPem];
  }

  /** Replaces the root with a new one (persisted when a data dir is set): a CA rollover. */
  async rotateRoot(): Promise<void> {
    if (this.opts.caCertFile) throw new SdsError(ErrorCode.ConfigInvalid, 'the CA is provided by the operator (caCert/caKey); replace those files to roll it');
    const next = await generateRoot(this.opts);
    if (this.opts.dataDir) await persist(this.opts.dataDir, next);
    this.opts.log.info('embedded CA root rotated', { trustDomain: this.opts.trustDomain, serial: next.serialNumber });
    this.authority = next;
  }

  async close(): Promise<void> {}
}

async function loadOrCreate(opts: EmbeddedCaOptions): Promise<Authority> {
  if (opts.caCertFile || opts.caKeyFile) {
    if (!opts.caCertFile || !opts.caKeyFile) throw new SdsError(ErrorCode.ConfigInvalid, 'embedded CA: give both caCert and caKey, or neither');
    const [cert, key] = await Promise.all([readSecretFileOrThrow(opts.caCertFile), readSecretFileOrThrow(opts.caKeyFile)]);
    try {
      return authority(cert, key);
    } catch (err) {
      throw new SdsError(ErrorCode.KeyInvalid, `embedded CA: cannot use ${opts.caCertFile} with ${opts.caKeyFile}: ${(err as Error).message.split('\n')[0]}`);
    }
  }
  if (opts.dataDir) {
    // Node 20's recursive mkdir on /proc or /sys never returns: refuse before touching it.
    const pseudo = await pseudoFilesystemOf(opts.dataDir);
    if (pseudo) {
      throw new SdsError(ErrorCode.CaDataDir, `cannot keep the embedded CA root in ${opts.dataDir}: it is on the ${pseudo.kind} pseudo filesystem (${pseudo.probe}); give a writable directory with --data-dir (or ca.embedded.dataDir)`);
    }
    const certPath = path.join(opts.dataDir, CERT_FILE);
    const keyPath = path.join(opts.dataDir, KEY_FILE);
    const existing = await inDataDir(opts.dataDir, () => readPair(certPath, keyPath));
    if (existing) {
      const kept = authority(existing.cert, existing.key);
      // A root kept for one trust domain must not sign another's identities: its bundle would name
      // the wrong trust domain and every peer validating by trust domain would refuse it.
      const keptFor = uriSan(kept.signer.cert.subjectAltName);
      if (keptFor !== undefined && keptFor !== trustDomainId(opts.trustDomain)) {
        throw new SdsError(ErrorCode.CaDataDir, `the CA root kept in ${opts.dataDir} is for ${keptFor}, not ${trustDomainId(opts.trustDomain)}; give each trust domain its own --data-dir`);
      }
      opts.log.info('embedded CA loaded', { dataDir: opts.dataDir, serial: kept.serialNumber, notAfter: new Date(kept.notAfter).toISOString() });
      return kept;
    }
  }
  const created = await generateRoot(opts);
  if (opts.dataDir) {
    const dir = opts.dataDir;
    await inDataDir(dir, () => persist(dir, created));
  }
  opts.log.info('embedded CA created', { trustDomain: opts.trustDomain, serial: created.serialNumber, ...(opts.dataDir ? { dataDir: opts.dataDir } : { persisted: false }) });
  return created;
}

/** A CA from PEM certificate and private key (PKCS#8, SEC1 or PKCS#1); throws naming what is wrong, never key bytes. */
function authority(certPem: string, keyPem: string): Authority {
  const signer = LeafSigner.fromPem(certPem, keyPem);
  return { certPem: signer.cert.toString(), keyPem, signer, notAfter: Date.parse(signer.cert.validTo), serialNumber: signer.cert.serialNumber.toUpperCase() };
}

/** A new self-signed root for the trust domain (@peculiar/x509, imported here: creating a root is rare). */
async function generateRoot(opts: EmbeddedCaOptions): Promise<Authority> {
  const { createRootCa } = await import('../../x509/issue.js');
  const root = await createRootCa({ commonName: rootName(opts.trustDomain), trustDomain: opts.trustDomain, keyType: opts.keyType ?? 'ec-p256' });
  const signer = new LeafSigner(root.certPem, KeyObject.from(root.keys.privateKey));
  return { certPem: root.certPem, keyPem: root.keyPem, signer, notAfter: root.cert.notAfter.getTime(), serialNumber: root.serialNumber };
}

/** The first URI SAN in Node's `subjectAltName` text (`URI:spiffe://td, DNS:x`), if any. */
function uriSan(subjectAltName: string | undefined): string | undefined {
  return subjectAltName?.split(', ').find((n) => n.startsWith('URI:'))?.slice('URI:'.length);
}

/** Runs a file operation in the CA's data directory; a failure names the directory and the way out. */
async function inDataDir<T>(dir: string, op: () => Promise<T>): Promise<T> {
  try {
    return await op();
  } catch (err) {
    if (err instanceof SdsError) throw err;
    throw new SdsError(ErrorCode.CaDataDir, `cannot keep the embedded CA root in ${dir}: ${(err as Error).message}; give a writable directory with --data-dir (or ca.embedded.dataDir)`);
  }
}

async function readPair(certPath: string, keyPath: string): Promise<{ cert: string; key: string } | undefined> {
  try {
    return { cert: await fs.readFile(certPath, 'utf8'), key: await fs.readFile(keyPath, 'utf8') };
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
}

/** Writes key then certificate, each atomically (temp file + rename); the key is 0600 from birth. */
async function persist(dir: string, authority: Authority): Promise<void> {
  await fs.mkdir(dir, { recursive: true, mode: 0o700 });
  await writeAtomic(path.join(dir, KEY_FILE), authority.keyPem, 0o600);
  await writeAtomic(path.join(dir, CERT_FILE), authority.certPem, 0o644);
}

async function writeAtomic(file: string, text: string, mode: number): Promise<void> {
  const tmp = `${file}.tmp-${process.pid}`;
  await fs.writeFile(tmp, text, { mode });
  await fs.chmod(tmp, mode);
  await fs.rename(tmp, file);
}

const rootName = (trustDomain: string): string => `sds-server CA ${trustDomain}`.slice(0, 64);
