/**
 * Key and certificate generation for the embedded throwaway CA and for tests.
 * Uses @peculiar/x509 over Node's WebCrypto; output is PEM that OpenSSL/BoringSSL (Envoy) accepts.
 */
import { createPrivateKey, randomBytes, webcrypto } from 'node:crypto';
import * as x509 from '@peculiar/x509';
import { importAlgorithm, signingAlgorithm } from './key-algorithms.js';
import { toPem } from './pem.js';

// @peculiar/x509 types its provider with the DOM `Crypto`; Node's webcrypto implements the same API.
x509.cryptoProvider.set(webcrypto as unknown as Parameters<typeof x509.cryptoProvider.set>[0]);

export type KeyType = 'ec-p256' | 'ec-p384' | 'rsa-2048';
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
const CLOCK_SKEW = MINUTE;

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

/** Issues a leaf for a public key the CA does not own (a CSR's key): the embedded CA's signing path. */
export async function signLeaf(
  ca: CertificateAuthority,
  publicKey: CryptoKey,
  opts: Omit<LeafOptions, 'keyType'> = {},
): Promise<Omit<IssuedLeaf, 'keyPem'>> {
  const serialNumber = randomSerial();
  const dnsNames = opts.dnsNames ?? [];
  const sans: x509.JsonGeneralNames = [
    ...(opts.spiffeId !== undefined ? [{ type: 'url' as const, value: opts.spiffeId }] : []),
    ...dnsNames.map((value) => ({ type: 'dns' as const, value })),
  ];
  const extensions: x509.Extension[] = [
    new x509.BasicConstraintsExtension(false, undefined, true),
    new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyEncipherment, true),
    new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth, x509.ExtendedKeyUsage.clientAuth]),
    await authorityKeyId(ca),
  ];
  if (sans.length > 0) extensions.push(new x509.SubjectAlternativeNameExtension(sans));
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber,
    // CN is capped at 64 characters, so a SPIFFE ID is not a safe default for it.
    subject: subjectName(opts.commonName ?? dnsNames[0] ?? 'sds-server leaf'),
    issuer: ca.cert.subjectName,
    publicKey,
    signingKey: ca.keys.privateKey,
    signingAlgorithm: signingAlgorithm(ca.keys.privateKey),
    ...validity(opts, HOUR),
    extensions,
  });
  const certPem = toPem('CERTIFICATE', cert.rawData);
  const selfSigned = await ca.cert.isSelfSigned();
  return { certPem, serialNumber, chainPem: selfSigned ? certPem : certPem + ca.certPem };
}

/**
 * Loads an operator-provided (or persisted) CA from PEM certificate and PKCS#8 key.
 * Throws with a message naming what is wrong; never includes key bytes.
 */
export async function loadAuthority(certPem: string, keyPem: string): Promise<CertificateAuthority> {
  const cert = new x509.X509Certificate(certPem);
  const importAlg = importAlgorithm(cert.publicKey.algorithm);
  const pkcs8 = createPrivateKey(keyPem).export({ format: 'der', type: 'pkcs8' });
  const privateKey = await webcrypto.subtle.importKey('pkcs8', pkcs8, importAlg, true, ['sign']);
  const publicKey = await cert.publicKey.export(importAlg, ['verify']);
  return toAuthority(cert, { privateKey, publicKey }, cert.serialNumber.toUpperCase());
}

export async function generateKeys(keyType: KeyType = 'ec-p256'): Promise<CryptoKeyPair> {
  const usages: webcrypto.KeyUsage[] = ['sign', 'verify'];
  switch (keyType) {
    case 'ec-p256':
      return webcrypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, true, usages);
    case 'ec-p384':
      return webcrypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-384' }, true, usages);
    case 'rsa-2048':
      return webcrypto.subtle.generateKey(
        { name: 'RSASSA-PKCS1-v1_5', modulusLength: 2048, publicExponent: new Uint8Array([1, 0, 1]), hash: 'SHA-256' },
        true,
        usages,
      );
  }
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
