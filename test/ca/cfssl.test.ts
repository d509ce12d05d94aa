/**
 * CfsslBackend against a real `cfssl serve` (no mocks): HTTPS + HMAC-authenticated profiles for the
 * main tests, a plain-HTTP unauthenticated intermediate-signing server for the chain tests, and tiny
 * node:http servers for the failure modes cfssl itself cannot be made to show (garbage, hangs).
 * Needs the binary: `bash scripts/ca/install-cfssl.sh` (see test/helpers/cfssl-server.ts).
 */
import { X509Certificate, webcrypto } from 'node:crypto';
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import * as x509 from '@peculiar/x509';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import '../../src/x509/issue.js'; // sets @peculiar/x509's crypto provider
import { CfsslBackend } from '../../src/ca/cfssl/cfssl-backend.js';
import { describeWithCfssl, freePort, startCfssl, type CfsslServer } from '../helpers/cfssl-server.js';

const SPIFFE_ID = 'spiffe://example.org/front';
const DNS_NAME = 'front.apps.local';
const PROFILES = [
  { name: 'spiffe-60s', lifetimeSeconds: 60 },
  { name: 'spiffe-1h', lifetimeSeconds: 3600 },
];
// cfssl rounds "now" to the minute before subtracting the backdate: lifetimes are +-30 s.
const LIFETIME_TOLERANCE_S = 32;

async function newCsr(): Promise<{ csrPem: string; spki: Buffer }> {
  const keys = await webcrypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, true, ['sign', 'verify']);
  // The CSR names only a CN: the SANs come from the sign request's `hosts`.
  const csr = await x509.Pkcs10CertificateRequestGenerator.create({
    name: 'CN=front',
    keys,
    signingAlgorithm: { name: 'ECDSA', hash: 'SHA-256' },
  });
  return { csrPem: csr.toString('pem'), spki: Buffer.from(await webcrypto.subtle.exportKey('spki', keys.publicKey)) };
}

function certs(chainPem: string): X509Certificate[] {
  return (chainPem.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? []).map((p) => new X509Certificate(p));
}

const signal = (): AbortSignal => AbortSignal.timeout(10_000);

describeWithCfssl('CfsslBackend with a real cfssl serve (HTTPS, authsign)', (bin) => {
  let server: CfsslServer;
  let backend: CfsslBackend;

  beforeAll(async () => {
    server = await startCfssl(bin, {
      tls: true,
      profiles: Object.fromEntries(PROFILES.map((p) => [p.name, { lifetimeSeconds: p.lifetimeSeconds }])),
    });
    backend = new CfsslBackend({ url: server.url, authKey: server.authKey, caPem: server.tlsCaPem, profiles: PROFILES });
  });
  afterAll(async () => {
    await backend?.close();
    await server?.stop();
  });

  it.each([60, 3600])('issues a leaf with the SPIFFE URI SAN, DNS SAN and CSR key, chained to the root, living ~%i s', async (lifetime) => {
    const { csrPem, spki } = await newCsr();
    const before = Date.now();
    const { chainPem } = await backend.sign({ csrPem, spiffeId: SPIFFE_ID, dnsNames: [DNS_NAME], lifetimeSeconds: lifetime }, signal());
    const chain = certs(chainPem);
    expect(chain).toHaveLength(1); // cfssl signs with the root: no intermediate to send
    const leaf = chain[0]!;
    const sans = (leaf.subjectAltName ?? '').split(', ');
    expect(sans).toContain(`URI:${SPIFFE_ID}`);
    expect(sans).toContain(`DNS:${DNS_NAME}`);
    expect(leaf.publicKey.export({ type: 'spki', format: 'der' }).equals(spki)).toBe(true);
    expect(leaf.ca).toBe(false);

    const bundle = await backend.trustBundle(signal());
    expect(bundle).toHaveLength(1);
    const root = new X509Certificate(bundle[0]!);
    expect(root.fingerprint256).toBe(new X509Certificate(server.root.certPem).fingerprint256);
    expect(leaf.checkIssued(root)).toBe(true);
    expect(leaf.verify(root.publicKey)).toBe(true);

    const notBefore = new Date(leaf.validFrom).getTime();
    const notAfter = new Date(leaf.validTo).getTime();
    expect(notBefore).toBeLessThanOrEqual(Date.now()); // valid at once
    const remaining = (notAfter - before) / 1000;
    expect(Math.abs(remaining - lifetime)).toBeLessThanOrEqual(LIFETIME_TOLERANCE_S);
  });

  it('picks the longest profile not above the requested lifetime', () => {
    expect(backend.profileFor(10)).toBe('spiffe-60s'); // nothing shorter: the shortest
    expect(backend.profileFor(60)).toBe('spiffe-60s');
    expect(backend.profileFor(1800)).toBe('spiffe-60s');
    expect(backend.profileFor(86_400)).toBe('spiffe-1h');
  });

  it('measures issuance time (median of 10 sign calls)', async () => {
    const csrs = await Promise.all(Array.from({ length: 10 }, () => newCsr()));
    const times: number[] = [];
    for (const { csrPem } of csrs) {
      const t0 = performance.now();
      await backend.sign({ csrPem, spiffeId: SPIFFE_ID, dnsNames: [DNS_NAME], lifetimeSeconds: 3600 }, signal());
      times.push(performance.now() - t0);
    }
    const sorted = [...times].sort((a, b) => a - b);
    const median = ((sorted[4] ?? 0) + (sorted[5] ?? 0)) / 2;
    console.log(
      `cfssl issuance (HTTPS, authsign, keep-alive): median ${median.toFixed(1)} ms over 10 signs (min ${sorted[0]?.toFixed(1)}, max ${sorted[9]?.toFixed(1)})`,
    );
    expect(median).toBeLessThan(2000);
  });

  it('names the URL and cfssl\'s answer when the auth key is wrong', async () => {
    const wrong = new CfsslBackend({ url: server.url, authKey: '00'.repeat(16), caPem: server.tlsCaPem, profiles: PROFILES });
    try {
      const { csrPem } = await newCsr();
      const err = await wrong.sign({ csrPem, spiffeId: SPIFFE_ID, dnsNames: [], lifetimeSeconds: 60 }, signal()).catch((e: Error) => e);
      expect(err).toBeInstanceOf(Error);
      expect((err as Error).message).toContain(`${server.url}/api/v1/cfssl/authsign`);
      expect((err as Error).message).toMatch(/HTTP 400: invalid token/);
    } finally {
      await wrong.close();
    }
  });

  it('says so when the unauthenticated /sign is not served (all profiles need the key)', async () => {
    const noKey = new CfsslBackend({ url: server.url, caPem: server.tlsCaPem });
    try {
      const { csrPem } = await newCsr();
      await expect(noKey.sign({ csrPem, spiffeId: SPIFFE_ID, dnsNames: [], lifetimeSeconds: 60 }, signal())).rejects.toThrow(
        new RegExp(`cfssl at ${server.url}/api/v1/cfssl/sign answered HTTP 404`),
      );
    } finally {
      await noKey.close();
    }
  });

  it('rejects a CA whose TLS certificate it does not trust, naming the URL', async () => {
    const untrusting = new CfsslBackend({ url: server.url, authKey: server.authKey });
    try {
      await expect(untrusting.trustBundle(signal())).rejects.toThrow(new RegExp(`cfssl at ${server.url}/api/v1/cfssl/info failed the TLS handshake .*certificate`, 'i'));
    } finally {
      await untrusting.close();
    }
  });

  it('rejects use after close()', async () => {
    const b = new CfsslBackend({ url: server.url, authKey: server.authKey, caPem: server.tlsCaPem });
    await b.close();
    await expect(b.trustBundle(signal())).rejects.toThrow(/after close/);
  });
});

describeWithCfssl('CfsslBackend with cfssl signing through an intermediate (HTTP, /sign)', (bin) => {
  let server: CfsslServer;

  beforeAll(async () => {
    server = await startCfssl(bin, { intermediate: true, auth: false });
  });
  afterAll(async () => {
    await server?.stop();
  });

  it('returns leaf + intermediate, and the configured root as the trust bundle', async () => {
    const backend = new CfsslBackend({ url: server.url, rootsPem: [server.root.certPem] });
    try {
      const { csrPem } = await newCsr();
      const { chainPem } = await backend.sign({ csrPem, spiffeId: SPIFFE_ID, dnsNames: [DNS_NAME], lifetimeSeconds: 3600 }, signal());
      const [leaf, intermediate, ...rest] = certs(chainPem);
      expect(rest).toHaveLength(0);
      expect(intermediate?.fingerprint256).toBe(new X509Certificate(server.signer.certPem).fingerprint256);
      expect(leaf!.verify(intermediate!.publicKey)).toBe(true);
      expect(leaf!.subjectAltName).toContain(`URI:${SPIFFE_ID}`);
      const bundle = await backend.trustBundle(signal());
      expect(bundle).toHaveLength(1);
      const root = new X509Certificate(bundle[0]!);
      expect(root.fingerprint256).toBe(new X509Certificate(server.root.certPem).fingerprint256);
      expect(intermediate!.verify(root.publicKey)).toBe(true);
    } finally {
      await backend.close();
    }
  });

  it('refuses to hand out the intermediate as a trust anchor when no root is configured', async () => {
    const backend = new CfsslBackend({ url: server.url });
    try {
      await expect(backend.trustBundle(signal())).rejects.toThrow(/signs with an intermediate .*CN=cfssl test intermediate.*rootsPem/);
    } finally {
      await backend.close();
    }
  });
});

describe('CfsslBackend failures', () => {
  type Mode = (res: http.ServerResponse) => void;
  const json = (status: number, body: unknown): Mode => (res) => {
    res.writeHead(status, { 'content-type': 'application/json' });
    res.end(JSON.stringify(body));
  };
  const modes: Record<string, Mode> = {
    html: (res) => {
      res.writeHead(200, { 'content-type': 'text/html' });
      res.end('<html><body>Welcome to nginx!</body></html>');
    },
    badgateway: (res) => {
      res.writeHead(502, { 'content-type': 'text/html' });
      res.end('<html><body>502 Bad Gateway</body></html>');
    },
    nocert: json(200, { success: true, result: { usages: ['signing'] }, errors: [], messages: [] }),
    notpem: json(200, { success: true, result: { certificate: 'hello' }, errors: [], messages: [] }),
    notcert: json(200, { success: true, result: { certificate: '-----BEGIN CERTIFICATE-----\nMAA=\n-----END CERTIFICATE-----\n' } }),
    cfsslerror: json(400, { success: false, result: null, errors: [{ code: 1002, message: 'Invalid certificate request' }], messages: [] }),
    slow: () => {}, // never answers
  };
  let garbage: http.Server;
  let base: string;

  beforeAll(async () => {
    garbage = http.createServer((req, res) => {
      req.resume();
      const mode = modes[(req.url ?? '').split('/')[1] ?? ''];
      if (mode) mode(res);
      else json(404, { success: false })(res);
    });
    await new Promise<void>((r) => garbage.listen(0, '127.0.0.1', r));
    base = `http://127.0.0.1:${(garbage.address() as AddressInfo).port}`;
  });
  afterAll(async () => {
    garbage.closeAllConnections();
    await new Promise<void>((r) => garbage.close(() => r()));
  });

  async function signAt(url: string, abort: AbortSignal = signal()): Promise<Error> {
    const backend = new CfsslBackend({ url });
    try {
      const { csrPem } = await newCsr();
      const result = await backend.sign({ csrPem, spiffeId: SPIFFE_ID, dnsNames: [DNS_NAME], lifetimeSeconds: 60 }, abort).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(result).toBeInstanceOf(Error);
      return result as Error;
    } finally {
      await backend.close();
    }
  }

  it('CA down: connection refused, naming the URL', async () => {
    const url = `http://127.0.0.1:${await freePort()}`;
    const err = await signAt(url);
    expect(err.message).toMatch(new RegExp(`^cfssl at ${url}/api/v1/cfssl/sign is unreachable: connect ECONNREFUSED`));
  });

  it.each([
    ['html', /answered HTTP 200 with a body that is not JSON: "<html><body>Welcome to nginx!/],
    ['badgateway', /answered HTTP 502: "<html><body>502 Bad Gateway/],
    ['nocert', /answered without a certificate \(result: .*usages/],
    ['notpem', /answered a "certificate" that is not a PEM certificate: "hello"/],
    ['notcert', /answered a certificate that does not parse/],
    ['cfsslerror', /answered HTTP 400: Invalid certificate request \(code 1002\)/],
  ])('garbage answer (%s) is rejected with what the server said', async (mode, message) => {
    const err = await signAt(`${base}/${mode}`);
    expect(err.message).toContain(`cfssl at ${base}/${mode}/api/v1/cfssl/sign`);
    expect(err.message).toMatch(message);
  });

  it('a server that never answers: the AbortSignal ends the call promptly', async () => {
    const t0 = Date.now();
    const err = await signAt(`${base}/slow`, AbortSignal.timeout(200));
    const elapsed = Date.now() - t0;
    expect(elapsed).toBeLessThan(1500); // includes the CSR's key generation
    expect(err.name).toBe('AbortError');
    expect(err.message).toMatch(new RegExp(`cfssl request to ${base}/slow/api/v1/cfssl/sign aborted: .*timeout`, 'i'));

    const backend = new CfsslBackend({ url: `${base}/slow` });
    const t1 = Date.now();
    await expect(backend.trustBundle(AbortSignal.timeout(200))).rejects.toThrow(/aborted/);
    expect(Date.now() - t1).toBeLessThan(1000);
    await backend.close();
  });

  it('rejects bad options up front', () => {
    expect(() => new CfsslBackend({ url: 'not a url' })).toThrow(/not a URL/);
    expect(() => new CfsslBackend({ url: 'ftp://x' })).toThrow(/http/);
    expect(() => new CfsslBackend({ url: 'http://x', authKey: 'xyz' })).toThrow(/hex/);
  });
});
