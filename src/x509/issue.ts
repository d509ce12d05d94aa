/**
 * Key and certificate generation for the embedded throwaway CA and for tests.
 * Uses @peculiar/x509 over Node's WebCrypto; output is PEM that OpenSSL/BoringSSL (Envoy) accepts.
 */
import { KeyObject, createPrivateKey, randomBytes, webcrypto } from 'node:crypto';
import * as x509 from '@peculiar/x509';
import { signingAlgorithm } from './key-algorithms.js';
import { toPem } from './pem.js';
import { CLOCK_SKEW_MS, LeafSigner } from './leaf-signer.js';
import { generateKeys, type KeyType } from './keys.js';

// @peculiar/x509 types its provider with the DOM `Crypto`; Node's webcrypto implements the same API.
x509.cryptoProvider.set(webcrypto as unknown as Parameters<typeof x509.cryptoProvider.set>[0]);

export { generateKeys, type KeyType } from './keys.js';
type CryptoKey = webcrypto.CryptoKey;
type CryptoKeyPair = webcrypto.CryptoKeyPair;

export interface CertificateAuthority {
  certPem: string;
  /** PKCS#8 PEM. */
  keyPem: string;
  /** Upper-case hex, as X509Certificate.serialNumber prints it. */
  serialNumber: string;
  readonly cert: x509.X509Certificate;
  readonly keys: CryptoKeyPair;
  /** Signs this CA's leaves; made on first use (it encodes what every leaf shares once). */
  signer?: LeafSigner;
}

export interface CaOptions {
  commonName?: string;
  /** Adds the URI SAN `spiffe://<trustDomain>` (as SPIRE does for its CAs). */
  trustDomain?: string;
  notBefore?: Date;
  notAfter?: Date;
  keyType?: KeyType;
}

export interface LeafOptions {
  spiffeId?: string;
  dnsNames?: string[];
  commonName?: string;
  notBefore?: Date;
  notAfter?: Date;
  keyType?: KeyType;
}

export interface IssuedLeaf {
  certPem: string;
  /** PKCS#8 PEM. */
  keyPem: string;
  serialNumber: string;
  /** Leaf, then the issuing CA's certificate when that CA is an intermediate (not self-signed). */
  chainPem: string;
}

const MINUTE = 60_000;
const HOUR = 60 * MINUTE;
const YEAR = 365 * 24 * HOUR;
// Back-date notBefore so peers with slightly slow clocks accept a fresh certificate.
const CLOCK_SKEW = CLOCK_SKEW_MS;

export async function createRootCa(opts: CaOptions = {}): Promise<CertificateAuthority> {
  const keys = await generateKeys(opts.keyType);
  const serialNumber = randomSerial();
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber,
    name: subjectName(opts.commonName ?? 'sds-server root CA'),
    keys,
    signingAlgorithm: signingAlgorithm(keys.privateKey),
    ...validity(opts, YEAR),
    extensions: await caExtensions(keys, opts.trustDomain),
  });
  return toAuthority(cert, keys, serialNumber);
}

export async function createIntermediateCa(
  parent: CertificateAuthority,
  opts: CaOptions = {},
): Promise<CertificateAuthority> {
  const keys = await generateKeys(opts.keyType);
  const serialNumber = randomSerial();
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber,
    subject: subjectName(opts.commonName ?? 'sds-server intermediate CA'),
    issuer: parent.cert.subjectName,
    publicKey: keys.publicKey,
    signingKey: parent.keys.privateKey,
    signingAlgorithm: signingAlgorithm(parent.keys.privateKey),
    ...validity(opts, YEAR),
    extensions: [...(await caExtensions(keys, opts.trustDomain)), await authorityKeyId(parent)],
  });
  return toAuthority(cert, keys, serialNumber);
}

export async function issueLeaf(ca: CertificateAuthority, opts: LeafOptions = {}): Promise<IssuedLeaf> {
  const keys = await generateKeys(opts.keyType);
  const signed = await signLeaf(ca, keys.publicKey, opts);
  return { ...signed, keyPem: await exportKeyPem(keys.privateKey) };
}

/**
 * Issues a leaf for a public key the CA does not own (a CSR's key): end entity, serverAuth +
 * clientAuth, the SPIFFE ID as URI SAN, DNS SANs, 1 h unless `notAfter` says otherwise. Signed by
 * {@link LeafSigner} (DER written directly; see there for why).
 */
export async function signLeaf(
  ca: CertificateAuthority,
  publicKey: CryptoKey,
  opts: Omit<LeafOptions, 'keyType'> = {},
): Promise<Omit<IssuedLeaf, 'keyPem'>> {
  ca.signer ??= new LeafSigner(ca.certPem, KeyObject.from(ca.keys.privateKey));
  const spki = await webcrypto.subtle.exportKey('spki', publicKey);
  const { certPem, serialNumber } = ca.signer.sign(spki, {
    ...(opts.spiffeId !== undefined ? { spiffeId: opts.spiffeId } : {}),
    ...(opts.dnsNames ? { dnsNames: opts.dnsNames } : {}),
    ...(opts.commonName !== undefined ? { commonName: opts.commonName } : {}),
    ...validity(opts, HOUR),
  });
  return { certPem, serialNumber, chainPem: ca.signer.selfSigned ? certPem : certPem + ca.certPem };
}

/** 16 random bytes, first byte in 0x01..0x7f: positive and minimally DER-encoded at full length. */
function randomSerial(): string {
  const bytes = randomBytes(16);
  bytes[0] = ((bytes[0] ?? 0) & 0x7f) || 0x01;
  return bytes.toString('hex').toUpperCase();
}

function subjectName(commonName: string): x509.JsonName {
  // JSON form, so commas or `=` in the name need no RFC 4514 escaping.
  return [{ CN: [commonName] }];
}

function validity(opts: { notBefore?: Date; notAfter?: Date }, lifetime: number): { notBefore: Date; notAfter: Date } {
  const now = Date.now();
  return {
    notBefore: opts.notBefore ?? new Date(now - CLOCK_SKEW),
    notAfter: opts.notAfter ?? new Date(now + lifetime),
  };
}

async function caExtensions(keys: CryptoKeyPair, trustDomain: string | undefined): Promise<x509.Extension[]> {
  const extensions: x509.Extension[] = [
    new x509.BasicConstraintsExtension(true, undefined, true),
    new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
    await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
  ];
  if (trustDomain !== undefined) {
    extensions.push(new x509.SubjectAlternativeNameExtension([{ type: 'url', value: `spiffe://${trustDomain}` }]));
  }
  return extensions;
}

/** AKI equal to the issuer's SKI, which is how OpenSSL and BoringSSL match issuers. */
async function authorityKeyId(issuer: CertificateAuthority): Promise<x509.Extension> {
  const ski = issuer.cert.getExtension(x509.SubjectKeyIdentifierExtension);
  if (ski) return new x509.AuthorityKeyIdentifierExtension(ski.keyId);
  return x509.AuthorityKeyIdentifierExtension.create(issuer.keys.publicKey);
}

async function toAuthority(
  cert: x509.X509Certificate,
  keys: CryptoKeyPair,
  serialNumber: string,
): Promise<CertificateAuthority> {
  return {
    certPem: toPem('CERTIFICATE', cert.rawData),
    keyPem: await exportKeyPem(keys.privateKey),
    serialNumber,
    cert,
    keys,
  };
}

async function exportKeyPem(key: CryptoKey): Promise<string> {
  return toPem('PRIVATE KEY', await webcrypto.subtle.exportKey('pkcs8', key));
}
