/**
 * Leaf certificates signed with Node's crypto, the DER written directly: the embedded CA's hot path.
 *
 * Why not @peculiar/x509 here (it still creates roots, intermediates and CSRs in ./issue.ts and
 * ./csr.ts): its generator spent ~4 ms of CPU per leaf in schema-driven ASN.1 encoding and a full
 * re-parse of the result, against a 5 ms budget for the whole issue + validate (issue 14), and
 * loading it costs a CA-mode start-up ~200 ms. A leaf is one fixed template (RFC 5280 4.1) with six
 * variable fields -- serial, validity, subject CN, public key, SANs, and the issuer's name and key
 * identifier taken from the CA certificate -- so it is written here, and every certificate is read
 * back by OpenSSL (node:crypto X509Certificate) in the callers' validation before it is served.
 */
import { X509Certificate, createHash, createPrivateKey, randomBytes, sign, type KeyObject } from 'node:crypto';
import { ErrorCode, SdsError } from '../core/errors.js';
import { toPem } from './pem.js';

/** What a leaf says besides its key: SANs, CN, validity. */
export interface LeafFields {
  /** URI SAN (RFC 5280 4.2.1.6), e.g. a SPIFFE ID. */
  spiffeId?: string;
  /** DNS SANs. */
  dnsNames?: string[];
  /** Subject CN (at most 64 characters, RFC 5280 upper bound); default: the first DNS name, else `sds-server leaf`. */
  commonName?: string;
  notBefore: Date;
  notAfter: Date;
}

/** Leaves are back-dated this much (ms) so peers with slightly slow clocks accept a fresh one. */
export const CLOCK_SKEW_MS = 60_000;

export interface SignedLeaf {
  certPem: string;
  /** Upper-case hex, as X509Certificate.serialNumber prints it. */
  serialNumber: string;
}

/**
 * Signs leaves (end-entity, digitalSignature + keyEncipherment, serverAuth + clientAuth, AKI = the
 * CA's SKI) with one CA. Built once per CA: the issuer name, key identifier and fixed extensions
 * are encoded here, so a leaf costs one signature and a few buffer copies.
 */
export class LeafSigner {
  /** The CA certificate as OpenSSL reads it. */
  readonly cert: X509Certificate;
  /** Whether the CA is self-signed (a root: leaves are served without it). */
  readonly selfSigned: boolean;
  private readonly issuerName: Buffer;
  private readonly algorithm: { der: Buffer; hash: 'sha256' | 'sha384' };
  private readonly fixedExtensions: Buffer;
  private readonly key: KeyObject;

  /**
   * @param certPem the CA certificate (PEM)
   * @param key its private key (ECDSA P-256 / P-384 or RSA)
   * @throws SdsError naming what is wrong: SDS_ERR_KEY_MISMATCH (the key is not the certificate's),
   *   SDS_ERR_KEY_INVALID (unsupported key type), SDS_ERR_PEM_INVALID (unreadable DER); Error
   *   from node:crypto for a certificate it cannot parse. Never includes key bytes.
   */
  constructor(certPem: string, key: KeyObject) {
    this.cert = new X509Certificate(certPem);
    if (!this.cert.checkPrivateKey(key)) throw new SdsError(ErrorCode.KeyMismatch, 'the private key does not belong to the CA certificate');
    this.key = key;
    this.algorithm = signatureAlgorithm(key);
    const tbs = readTbs(this.cert.raw);
    this.issuerName = tbs.subject;
    this.selfSigned = this.cert.checkIssued(this.cert) && this.cert.verify(this.cert.publicKey);
    // RFC 5280 4.2.1.1: AKI = the issuer's SKI; without one, the SHA-1 of its public key (method 1 of 4.2.1.2).
    const keyId = tbs.subjectKeyId ?? createHash('sha1').update(tbs.publicKeyBits).digest();
    this.fixedExtensions = Buffer.concat([
      extension(OID.basicConstraints, true, seq()),
      extension(OID.keyUsage, true, KEY_USAGE_DIGITAL_SIGNATURE_KEY_ENCIPHERMENT),
      extension(OID.extKeyUsage, false, seq(tlv(0x06, OID.serverAuth), tlv(0x06, OID.clientAuth))),
      extension(OID.authorityKeyId, false, seq(tlv(0x80, keyId))),
    ]);
  }

  /** A CA from PEM certificate and private key (PKCS#8, SEC1 or PKCS#1); errors as the constructor's. */
  static fromPem(certPem: string, keyPem: string): LeafSigner {
    return new LeafSigner(certPem, createPrivateKey(keyPem));
  }

  /**
   * Issues a leaf for `spkiDer` (a DER SubjectPublicKeyInfo, e.g. WebCrypto's `exportKey('spki')`).
   * The serial is 16 random bytes, positive (RFC 5280 4.1.2.2: at most 20 octets).
   */
  sign(spkiDer: Uint8Array | ArrayBuffer, fields: LeafFields): SignedLeaf {
    const serial = randomBytes(16);
    serial[0] = (serial[0]! & 0x7f) || 0x01;
    const dnsNames = fields.dnsNames ?? [];
    const sans = [...(fields.spiffeId !== undefined ? [tlv(0x86, Buffer.from(fields.spiffeId, 'ascii'))] : []), ...dnsNames.map((d) => tlv(0x82, Buffer.from(d, 'ascii')))];
    const commonName = fields.commonName ?? dnsNames[0] ?? 'sds-server leaf';
    const tbs = seq(
      VERSION_V3,
      tlv(0x02, serial),
      this.algorithm.der,
      this.issuerName,
      seq(time(fields.notBefore), time(fields.notAfter)),
      seq(tlv(0x31, seq(tlv(0x06, OID.commonName), tlv(0x0c, Buffer.from(commonName, 'utf8'))))),
      Buffer.from(spkiDer instanceof ArrayBuffer ? new Uint8Array(spkiDer) : spkiDer),
      tlv(0xa3, seq(this.fixedExtensions, ...(sans.length > 0 ? [extension(OID.subjectAltName, false, seq(...sans))] : []))),
    );
    const signature = sign(this.algorithm.hash, tbs, this.key);
    const cert = seq(tbs, this.algorithm.der, tlv(0x03, Buffer.concat([Buffer.from([0]), signature])));
    return { certPem: toPem('CERTIFICATE', cert), serialNumber: serial.toString('hex').toUpperCase() };
  }
}

// ---- DER (X.690) ---------------------------------------------------------------------------------

const OID = {
  commonName: Buffer.from('550403', 'hex'), // 2.5.4.3
  subjectKeyId: Buffer.from('551d0e', 'hex'), // 2.5.29.14
  keyUsage: Buffer.from('551d0f', 'hex'), // 2.5.29.15
  subjectAltName: Buffer.from('551d11', 'hex'), // 2.5.29.17
  basicConstraints: Buffer.from('551d13', 'hex'), // 2.5.29.19
  authorityKeyId: Buffer.from('551d23', 'hex'), // 2.5.29.35
  extKeyUsage: Buffer.from('551d25', 'hex'), // 2.5.29.37
  serverAuth: Buffer.from('2b06010505070301', 'hex'), // 1.3.6.1.5.5.7.3.1
  clientAuth: Buffer.from('2b06010505070302', 'hex'), // 1.3.6.1.5.5.7.3.2
};
/** [0] EXPLICIT INTEGER 2 */
const VERSION_V3 = Buffer.from('a003020102', 'hex');
/** BIT STRING, 5 unused bits: digitalSignature (0) and keyEncipherment (2). */
const KEY_USAGE_DIGITAL_SIGNATURE_KEY_ENCIPHERMENT = Buffer.from('030205a0', 'hex');
const SIGNATURE_ALGORITHMS = {
  // ecdsa-with-SHA256 / -SHA384 (RFC 5758 3.2: parameters absent); sha256WithRSAEncryption (RFC 4055: NULL parameters).
  'ec-sha256': { der: Buffer.from('300a06082a8648ce3d040302', 'hex'), hash: 'sha256' },
  'ec-sha384': { der: Buffer.from('300a06082a8648ce3d040303', 'hex'), hash: 'sha384' },
  'rsa-sha256': { der: Buffer.from('300d06092a864886f70d01010b0500', 'hex'), hash: 'sha256' },
} as const;

function signatureAlgorithm(key: KeyObject): { der: Buffer; hash: 'sha256' | 'sha384' } {
  if (key.asymmetricKeyType === 'rsa') return SIGNATURE_ALGORITHMS['rsa-sha256'];
  if (key.asymmetricKeyType === 'ec') {
    const curve = key.asymmetricKeyDetails?.namedCurve;
    if (curve === 'prime256v1') return SIGNATURE_ALGORITHMS['ec-sha256'];
    if (curve === 'secp384r1') return SIGNATURE_ALGORITHMS['ec-sha384'];
    throw new SdsError(ErrorCode.KeyInvalid, `unsupported CA key curve ${curve ?? 'unknown'} (P-256, P-384 or RSA)`);
  }
  throw new SdsError(ErrorCode.KeyInvalid, `unsupported CA key type ${key.asymmetricKeyType ?? 'unknown'} (P-256, P-384 or RSA)`);
}

function tlv(tag: number, body: Buffer): Buffer {
  const n = body.length;
  const head = n < 0x80 ? [tag, n] : n < 0x100 ? [tag, 0x81, n] : n < 0x10000 ? [tag, 0x82, n >> 8, n & 0xff] : [tag, 0x83, n >> 16, (n >> 8) & 0xff, n & 0xff];
  return Buffer.concat([Buffer.from(head), body]);
}

const seq = (...parts: Buffer[]): Buffer => tlv(0x30, Buffer.concat(parts));

function extension(oid: Buffer, critical: boolean, value: Buffer): Buffer {
  return seq(tlv(0x06, oid), ...(critical ? [Buffer.from('0101ff', 'hex')] : []), tlv(0x04, value));
}

/** RFC 5280 4.1.2.5: UTCTime through 2049, GeneralizedTime from 2050; seconds, Zulu. */
function time(d: Date): Buffer {
  const iso = d.toISOString(); // YYYY-MM-DDTHH:MM:SS.sssZ
  const digits = iso.slice(0, 19).replace(/[-T:]/g, '');
  const year = d.getUTCFullYear();
  return year < 2050 ? tlv(0x17, Buffer.from(`${digits.slice(2)}Z`, 'ascii')) : tlv(0x18, Buffer.from(`${digits}Z`, 'ascii'));
}

/** One DER element at `pos`: its tag, where its content starts and where the element ends. */
function element(buf: Buffer, pos: number): { tag: number; start: number; end: number } {
  const tag = buf[pos]!;
  let len = buf[pos + 1]!;
  let start = pos + 2;
  if (len & 0x80) {
    const bytes = len & 0x7f;
    len = 0;
    for (let i = 0; i < bytes; i++) len = len * 256 + buf[start + i]!;
    start += bytes;
  }
  if (start + len > buf.length) throw new SdsError(ErrorCode.PemInvalid, 'truncated DER in the CA certificate');
  return { tag, start, end: start + len };
}

function children(buf: Buffer, outer: { start: number; end: number }): Array<{ tag: number; start: number; end: number; pos: number }> {
  const out = [];
  for (let pos = outer.start; pos < outer.end; ) {
    const e = element(buf, pos);
    out.push({ ...e, pos });
    pos = e.end;
  }
  return out;
}

/** From a certificate's DER: its subject Name (whole element), SKI (if any) and public key bits. */
function readTbs(der: Buffer): { subject: Buffer; subjectKeyId?: Buffer; publicKeyBits: Buffer } {
  const tbs = children(der, element(der, 0))[0]!;
  const fields = children(der, tbs);
  // [0] version is present in v3 certificates; serial, signature, issuer, validity, subject, spki follow.
  const base = fields[0]!.tag === 0xa0 ? 1 : 0;
  const subject = fields[base + 4]!;
  const spki = children(der, fields[base + 5]!);
  const bits = spki[1]!;
  let subjectKeyId: Buffer | undefined;
  const exts = fields.find((f) => f.tag === 0xa3);
  if (exts) {
    for (const ext of children(der, children(der, exts)[0]!)) {
      const parts = children(der, ext);
      if (der.subarray(parts[0]!.start, parts[0]!.end).equals(OID.subjectKeyId)) {
        const octets = parts[parts.length - 1]!; // extnValue: OCTET STRING holding an OCTET STRING
        const inner = element(der, octets.start);
        subjectKeyId = Buffer.from(der.subarray(inner.start, inner.end));
      }
    }
  }
  return { subject: Buffer.from(der.subarray(subject.pos, subject.end)), ...(subjectKeyId ? { subjectKeyId } : {}), publicKeyBits: Buffer.from(der.subarray(bits.start + 1, bits.end)) };
}
