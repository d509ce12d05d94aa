import { generateKeyPair, generateKeyPairSync, webcrypto, type KeyObject } from 'node:crypto';

/**
 * Key generation for issued identities and CAs (WebCrypto, as @peculiar/x509 signs with it). Kept
 * apart from ./issue.ts so that issuing with the embedded CA does not load @peculiar/x509.
 */
export type KeyType = 'ec-p256' | 'ec-p384' | 'rsa-2048';

/** An extractable key pair usable for sign/verify: ECDSA P-256 (default) or P-384, or RSASSA-PKCS1-v1_5 2048 with SHA-256. */
export async function generateKeys(keyType: KeyType = 'ec-p256'): Promise<webcrypto.CryptoKeyPair> {
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

/**
 * A key pair as node:crypto KeyObjects, for keys that stay in this process (CA-issued identities).
 * EC keys are generated on the calling thread (~0.1 ms, less than a thread-pool round trip);
 * RSA keys (~100 ms) on the thread pool.
 */
export async function generateKeyObjects(keyType: KeyType = 'ec-p256'): Promise<{ publicKey: KeyObject; privateKey: KeyObject }> {
  switch (keyType) {
    case 'ec-p256':
      return generateKeyPairSync('ec', { namedCurve: 'P-256' });
    case 'ec-p384':
      return generateKeyPairSync('ec', { namedCurve: 'P-384' });
    case 'rsa-2048':
      return new Promise((resolve, reject) =>
        generateKeyPair('rsa', { modulusLength: 2048, publicExponent: 0x10001 }, (err, publicKey, privateKey) => (err ? reject(err) : resolve({ publicKey, privateKey }))),
      );
  }
}
