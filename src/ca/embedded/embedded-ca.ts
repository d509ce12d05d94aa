import { readSecretFileOrThrow } from '../../core/read-secret-file.js';
import fs from 'node:fs/promises';
import * as x509 from '@peculiar/x509';
import { trustDomainId } from '../../x509/spiffe.js';
import path from 'node:path';
import type { Logger } from '../../core/logger.js';
import { ErrorCode, SdsError } from '../../core/errors.js';
import { pseudoFilesystemOf } from '../../core/pseudo-filesystem.js';
import { createRootCa, loadAuthority, signLeaf, type CertificateAuthority, type KeyType } from '../../x509/issue.js';
import { readCsr } from '../../x509/csr.js';
import type { CaBackend, SignRequest, SignedCertificate } from '../ca-backend.js';

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

const CERT_FILE = 'ca.crt';
const KEY_FILE = 'ca.key';

/**
 * A CA inside the server: the default backend. It signs CSRs with its own root (generated on first
 * start and persisted, or provided by the operator). `rotateRoot()` starts a CA rollover.
 */
export class EmbeddedCa implements CaBackend {
  readonly kind = 'embedded';

  private constructor(
    private authority: CertificateAuthority,
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
    const { publicKey } = await readCsr(request.csrPem);
    const caNotAfter = this.authority.cert.notAfter.getTime();
    // A leaf never outlives its CA.
    const notAfter = new Date(Math.min(Date.now() + request.lifetimeSeconds * 1000, caNotAfter));
    const leaf = await signLeaf(this.authority, publicKey, { spiffeId: request.spiffeId, dnsNames: request.dnsNames, notAfter });
    return { chainPem: leaf.chainPem };
  }

  async trustBundle(signal: AbortSignal): Promise<string[]> {
    signal.throwIfAborted();
    return [this.authority.certPem];
  }

  /** Replaces the root with a new one (persisted when a data dir is set): a CA rollover. */
  async rotateRoot(): Promise<void> {
    if (this.opts.caCertFile) throw new SdsError(ErrorCode.ConfigInvalid, 'the CA is provided by the operator (caCert/caKey); replace those files to roll it');
    const next = await createRootCa({ commonName: rootName(this.opts.trustDomain), trustDomain: this.opts.trustDomain, keyType: this.opts.keyType ?? 'ec-p256' });
    if (this.opts.dataDir) await persist(this.opts.dataDir, next);
    this.opts.log.info('embedded CA root rotated', { trustDomain: this.opts.trustDomain, serial: next.serialNumber });
    this.authority = next;
  }

  async close(): Promise<void> {}
}

async function loadOrCreate(opts: EmbeddedCaOptions): Promise<CertificateAuthority> {
  if (opts.caCertFile || opts.caKeyFile) {
    if (!opts.caCertFile || !opts.caKeyFile) throw new SdsError(ErrorCode.ConfigInvalid, 'embedded CA: give both caCert and caKey, or neither');
    const [cert, key] = await Promise.all([readSecretFileOrThrow(opts.caCertFile), readSecretFileOrThrow(opts.caKeyFile)]);
    try {
      return await loadAuthority(cert, key);
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
      const authority = await loadAuthority(existing.cert, existing.key);
      // A root kept for one trust domain must not sign another's identities: its bundle would name
      // the wrong trust domain and every peer validating by trust domain would refuse it.
      const kept = authority.cert.getExtension(x509.SubjectAlternativeNameExtension)?.names.items.find((n) => n.type === 'url')?.value;
      if (kept !== undefined && kept !== trustDomainId(opts.trustDomain)) {
        throw new SdsError(ErrorCode.CaDataDir, `the CA root kept in ${opts.dataDir} is for ${kept}, not ${trustDomainId(opts.trustDomain)}; give each trust domain its own --data-dir`);
      }
      opts.log.info('embedded CA loaded', { dataDir: opts.dataDir, serial: authority.serialNumber, notAfter: authority.cert.notAfter.toISOString() });
      return authority;
    }
  }
  const authority = await createRootCa({ commonName: rootName(opts.trustDomain), trustDomain: opts.trustDomain, keyType: opts.keyType ?? 'ec-p256' });
  if (opts.dataDir) {
    const dir = opts.dataDir;
    await inDataDir(dir, () => persist(dir, authority));
  }
  opts.log.info('embedded CA created', { trustDomain: opts.trustDomain, serial: authority.serialNumber, ...(opts.dataDir ? { dataDir: opts.dataDir } : { persisted: false }) });
  return authority;
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
async function persist(dir: string, authority: CertificateAuthority): Promise<void> {
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
