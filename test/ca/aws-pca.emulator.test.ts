/**
 * AwsPcaBackend against moto (https://github.com/getmoto/moto) in server mode: an EMULATOR of AWS
 * Private CA, not AWS. Install it with `bash scripts/ca/install-moto.sh` (pinned moto[server]).
 *
 * What moto 5.1.x does with IssueCertificate (moto/acmpca/models.py), and so what these tests assert:
 *  - copies the CSR's subject and SubjectAlternativeName extension into the leaf, for every template;
 *  - IGNORES ApiPassthrough, Validity, ValidityNotBefore, SigningAlgorithm and IdempotencyToken
 *    (its docstring says so): every leaf is valid for 365 days from issuance, and is signed
 *    sha512WithRSAEncryption by an RSA-2048 CA key, whatever KeyAlgorithm the CA was created with;
 *  - with the APIPassthrough template it adds no extension besides the CSR's SAN (no basic
 *    constraints, key usage, EKU, AKI/SKI), unlike AWS, whose template defines them;
 *  - issues synchronously: GetCertificate never answers RequestInProgressException (the polling
 *    path is covered by test/ca/aws-pca.test.ts with a scripted client);
 *  - requires the CA to be activated (ImportCertificateAuthorityCertificate) before
 *    GetCertificateAuthorityCertificate works; IssueCertificate works before, but then the leaf's
 *    chain is empty.
 * The backend itself follows the AWS documentation (see src/ca/aws-pca/aws-pca-backend.ts).
 */
import { X509Certificate, webcrypto } from 'node:crypto';
import {
  ACMPCAClient,
  CreateCertificateAuthorityCommand,
  GetCertificateAuthorityCsrCommand,
  GetCertificateCommand,
  ImportCertificateAuthorityCertificateCommand,
  IssueCertificateCommand,
  type IssueCertificateCommandInput,
} from '@aws-sdk/client-acm-pca';
import * as x509 from '@peculiar/x509';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { AwsPcaBackend, DEFAULT_TEMPLATE_ARN } from '../../src/ca/aws-pca/aws-pca-backend.js';
import { silentLogger } from '../../src/core/logger.js';
import { SecretStore } from '../../src/secrets/store.js';
import { CaSource } from '../../src/sources/ca-source.js';
import { splitPem } from '../../src/x509/pem.js';
import { motoAvailability, startMoto, type MotoServer } from '../helpers/moto.js';

x509.cryptoProvider.set(webcrypto as unknown as Parameters<typeof x509.cryptoProvider.set>[0]);

const moto = motoAvailability(); // throws under CI when moto is missing: the file fails loudly
if (moto.skipReason) console.warn(moto.skipReason);

const REGION = 'us-east-1';
const CREDENTIALS = { accessKeyId: 'testing', secretAccessKey: 'testing' };
const SPIFFE_ID = 'spiffe://example.org/front';
const DNS_NAME = 'front.apps.local';
const ROOT_TEMPLATE = 'arn:aws:acm-pca:::template/RootCACertificate/V1';
const DAY_MS = 24 * 3600 * 1000;

describe.skipIf(!moto.executable)('AwsPcaBackend: AWS Private CA (moto emulator)', () => {
  let server: MotoServer;
  let admin: ACMPCAClient;
  let caArn: string;
  const issuanceMs: number[] = [];

  beforeAll(async () => {
    const started = Date.now();
    server = await startMoto(moto.executable!);
    const startupMs = Date.now() - started;
    // The backend builds its own client: credentials come from the SDK's default chain (env).
    vi.stubEnv('AWS_ACCESS_KEY_ID', CREDENTIALS.accessKeyId);
    vi.stubEnv('AWS_SECRET_ACCESS_KEY', CREDENTIALS.secretAccessKey);
    vi.stubEnv('AWS_SESSION_TOKEN', 'testing');
    vi.stubEnv('AWS_REGION', REGION);
    admin = new ACMPCAClient({ region: REGION, endpoint: server.endpoint, credentials: CREDENTIALS });
    caArn = await createPendingRootCa(admin);
    await activateRootCa(admin, caArn);
    console.log(`moto emulator: started in ${startupMs} ms, root CA ready after ${Date.now() - started} ms`);
  });

  afterAll(async () => {
    if (issuanceMs.length > 0) {
      console.log(`moto emulator: first sign() per test took ${issuanceMs.map((ms) => `${ms.toFixed(1)} ms`).join(', ')}`);
    }
    admin?.destroy();
    await server?.stop();
    vi.unstubAllEnvs();
  });

  function backendWithOwnClient(): AwsPcaBackend {
    return new AwsPcaBackend({ certificateAuthorityArn: caArn, region: REGION, endpoint: server.endpoint });
  }

  async function timedSign(backend: AwsPcaBackend, csrPem: string, lifetimeSeconds: number): Promise<string> {
    const t0 = performance.now();
    const { chainPem } = await backend.sign(
      { csrPem, spiffeId: SPIFFE_ID, dnsNames: [DNS_NAME], lifetimeSeconds },
      AbortSignal.timeout(10_000),
    );
    issuanceMs.push(performance.now() - t0);
    return chainPem;
  }

  it('signs a P-256 CSR: leaf has the URI and DNS SANs and the CSR key, and verifies against trustBundle()', async () => {
    const backend = backendWithOwnClient();
    try {
      const { csrPem, spki } = await makeCsr({ withSans: true });
      const chainPem = await timedSign(backend, csrPem, 3600);
      const certs = splitPem(chainPem).map((b) => new X509Certificate(b.der));
      expect(certs.length).toBe(2); // leaf, then the CA certificate (moto returns it as CertificateChain)
      const leaf = certs[0]!;

      expect(sanEntries(leaf)).toEqual(expect.arrayContaining([`URI:${SPIFFE_ID}`, `DNS:${DNS_NAME}`]));
      expect(Buffer.from(leaf.publicKey.export({ type: 'spki', format: 'der' })).equals(spki)).toBe(true);
      expect(leaf.ca).toBe(false);

      const roots = await backend.trustBundle(AbortSignal.timeout(10_000));
      expect(roots).toHaveLength(1);
      const root = new X509Certificate(roots[0]!);
      expect(root.checkIssued(root) && root.verify(root.publicKey)).toBe(true);
      expect(leaf.checkIssued(root)).toBe(true);
      expect(leaf.verify(root.publicKey)).toBe(true);
      expect(certs[1]!.fingerprint256).toBe(root.fingerprint256); // the chain's CA cert is this root
    } finally {
      await backend.close();
    }
  });

  it('requests notAfter = now + lifetime (Validity ABSOLUTE); moto ignores Validity and always issues for 365 days', async () => {
    const { client, inputs } = capturingClient(server.endpoint);
    const backend = new AwsPcaBackend({ certificateAuthorityArn: caArn, client });
    try {
      const { csrPem } = await makeCsr({ withSans: true });
      const lifetimeSeconds = 300; // minutes-long lifetimes, as the CA source asks for
      const before = Date.now();
      const chainPem = await timedSign(backend, csrPem, lifetimeSeconds);
      const after = Date.now();

      const sent = inputs.find(isIssueCertificate);
      expect(sent?.Validity?.Type).toBe('ABSOLUTE');
      const requestedMs = (sent?.Validity?.Value ?? 0) * 1000;
      expect(requestedMs).toBeGreaterThanOrEqual(Math.floor(before / 1000) * 1000 + lifetimeSeconds * 1000);
      expect(requestedMs).toBeLessThanOrEqual(after + lifetimeSeconds * 1000);

      // What moto really does (AWS would honour the requested notAfter):
      const leaf = new X509Certificate(splitPem(chainPem)[0]!.der);
      const notAfter = new Date(leaf.validTo).getTime();
      expect(Math.abs(notAfter - (before + 365 * DAY_MS))).toBeLessThan(5 * 60_000);
    } finally {
      await backend.close();
      client.destroy();
    }
  });

  it('sends the SANs as ApiPassthrough with the APIPassthrough template; gap: moto ignores ApiPassthrough, so a CSR without SANs gets a leaf without SANs', async () => {
    const { client, inputs } = capturingClient(server.endpoint);
    const backend = new AwsPcaBackend({ certificateAuthorityArn: caArn, client });
    try {
      const { csrPem, spki } = await makeCsr({ withSans: false });
      const chainPem = await timedSign(backend, csrPem, 3600);

      const sent = inputs.find(isIssueCertificate);
      expect(sent).toMatchObject({
        CertificateAuthorityArn: caArn,
        TemplateArn: DEFAULT_TEMPLATE_ARN,
        SigningAlgorithm: 'SHA256WITHECDSA',
        ApiPassthrough: { Extensions: { SubjectAlternativeNames: [{ UniformResourceIdentifier: SPIFFE_ID }, { DnsName: DNS_NAME }] } },
      });
      expect(Buffer.from(sent!.Csr!).toString('utf8')).toBe(csrPem);

      // moto: SANs come only from the CSR. On AWS this leaf would carry the URI and DNS SANs.
      const leaf = new X509Certificate(splitPem(chainPem)[0]!.der);
      expect(leaf.subjectAltName).toBeUndefined();
      expect(Buffer.from(leaf.publicKey.export({ type: 'spki', format: 'der' })).equals(spki)).toBe(true);
    } finally {
      await backend.close();
      client.destroy();
    }
  });

  it('measures issuance time: sign() = IssueCertificate + GetCertificate (median of 10, warm client)', async () => {
    const backend = backendWithOwnClient();
    try {
      const { csrPem } = await makeCsr({ withSans: true });
      await timedSign(backend, csrPem, 3600); // warm-up: credentials, connection
      const runs: number[] = [];
      for (let i = 0; i < 10; i++) {
        const t0 = performance.now();
        await backend.sign({ csrPem, spiffeId: SPIFFE_ID, dnsNames: [DNS_NAME], lifetimeSeconds: 3600 }, AbortSignal.timeout(10_000));
        runs.push(performance.now() - t0);
      }
      runs.sort((a, b) => a - b);
      const median = (runs[4]! + runs[5]!) / 2;
      console.log(
        `moto emulator issuance (warm): median ${median.toFixed(1)} ms over 10 signs (min ${runs[0]!.toFixed(1)}, max ${runs[9]!.toFixed(1)})`,
      );
      expect(median).toBeLessThan(2000);
    } finally {
      await backend.close();
    }
  });

  it('end to end: CaSource (in-memory key, CSR with SANs) serves an identity and bundle issued through moto', async () => {
    const backend = backendWithOwnClient();
    const store = new SecretStore();
    const source = new CaSource({
      backend,
      trustDomain: 'example.org',
      identities: [{ spiffeId: SPIFFE_ID, dnsNames: [DNS_NAME], keyType: 'ec-p256', lifetimeSeconds: 3600, names: [] }],
      publisher: store,
      log: silentLogger,
      bundleRefreshMs: 0,
      bundlePropagationMs: 0,
    });
    try {
      await source.start();
      const served = store.get(SPIFFE_ID)?.value;
      if (served?.kind !== 'tls-certificate') throw new Error(`${SPIFFE_ID} not served: ${JSON.stringify(source.status())}`);
      const leaf = new X509Certificate(served.certificateChainPem);
      expect(sanEntries(leaf)).toEqual(expect.arrayContaining([`URI:${SPIFFE_ID}`, `DNS:${DNS_NAME}`]));
      const bundle = store.get('spiffe://example.org')?.value;
      expect(bundle?.kind).toBe('trust-bundle');
    } finally {
      await source.close();
      await backend.close();
    }
  });

  it('a wrong CA ARN: sign() and trustBundle() reject naming the ARN and the AWS error', async () => {
    const wrongArn = caArn.replace(/certificate-authority\/.*/, 'certificate-authority/00000000-0000-0000-0000-000000000000');
    const backend = new AwsPcaBackend({ certificateAuthorityArn: wrongArn, region: REGION, endpoint: server.endpoint });
    try {
      const { csrPem } = await makeCsr({ withSans: true });
      const signing = backend.sign({ csrPem, spiffeId: SPIFFE_ID, dnsNames: [DNS_NAME], lifetimeSeconds: 3600 }, AbortSignal.timeout(10_000));
      await expect(signing).rejects.toThrow(wrongArn);
      await expect(signing).rejects.toThrow(/IssueCertificate failed: ResourceNotFoundException/);
      await expect(backend.trustBundle(AbortSignal.timeout(10_000))).rejects.toThrow(
        new RegExp(`${escapeRegExp(wrongArn)}.*GetCertificateAuthorityCertificate failed: ResourceNotFoundException`),
      );
    } finally {
      await backend.close();
    }
  });

  it('a CA still pending its certificate: trustBundle() rejects with InvalidStateException naming the ARN', async () => {
    const pendingArn = await createPendingRootCa(admin);
    const backend = new AwsPcaBackend({ certificateAuthorityArn: pendingArn, region: REGION, endpoint: server.endpoint });
    try {
      await expect(backend.trustBundle(AbortSignal.timeout(10_000))).rejects.toThrow(
        new RegExp(`${escapeRegExp(pendingArn)}.*InvalidStateException`),
      );
    } finally {
      await backend.close();
    }
  });

  it('an aborted signal rejects promptly, before or during the request', async () => {
    const backend = backendWithOwnClient();
    try {
      const { csrPem } = await makeCsr({ withSans: true });
      const request = { csrPem, spiffeId: SPIFFE_ID, dnsNames: [DNS_NAME], lifetimeSeconds: 3600 };

      let t0 = performance.now();
      await expect(backend.sign(request, AbortSignal.abort())).rejects.toThrow(/IssueCertificate aborted/);
      await expect(backend.trustBundle(AbortSignal.abort())).rejects.toMatchObject({ name: 'AbortError' });
      expect(performance.now() - t0).toBeLessThan(250);

      const controller = new AbortController();
      t0 = performance.now();
      const inFlight = backend.sign(request, controller.signal);
      controller.abort(new Error('shutting down'));
      await expect(inFlight).rejects.toThrow(new RegExp(`${escapeRegExp(caArn)}: IssueCertificate aborted: shutting down`));
      expect(performance.now() - t0).toBeLessThan(250);

      // The client is still usable afterwards.
      expect(await timedSign(backend, csrPem, 3600)).toContain('BEGIN CERTIFICATE');
    } finally {
      await backend.close();
    }
  });

  it('close() releases the client; later calls reject', async () => {
    const backend = backendWithOwnClient();
    await backend.close();
    await backend.close(); // idempotent
    await expect(backend.trustBundle(AbortSignal.timeout(1000))).rejects.toThrow(/after close\(\)/);
  });
});

/** CreateCertificateAuthority: a ROOT CA, EC P-256 / SHA256WITHECDSA (moto keeps an RSA key anyway). */
async function createPendingRootCa(admin: ACMPCAClient): Promise<string> {
  const created = await admin.send(
    new CreateCertificateAuthorityCommand({
      CertificateAuthorityType: 'ROOT',
      CertificateAuthorityConfiguration: {
        KeyAlgorithm: 'EC_prime256v1',
        SigningAlgorithm: 'SHA256WITHECDSA',
        Subject: { CommonName: 'sds-server test root', Organization: 'example.org' },
      },
    }),
  );
  if (!created.CertificateAuthorityArn) throw new Error('moto returned no CertificateAuthorityArn');
  return created.CertificateAuthorityArn;
}

/** As on AWS: the CA's CSR, self-issued with the RootCACertificate template, imported back. */
async function activateRootCa(admin: ACMPCAClient, caArn: string): Promise<void> {
  const { Csr } = await admin.send(new GetCertificateAuthorityCsrCommand({ CertificateAuthorityArn: caArn }));
  const issued = await admin.send(
    new IssueCertificateCommand({
      CertificateAuthorityArn: caArn,
      Csr: Buffer.from(Csr ?? ''),
      SigningAlgorithm: 'SHA256WITHECDSA',
      TemplateArn: ROOT_TEMPLATE,
      Validity: { Type: 'YEARS', Value: 10 },
    }),
  );
  const { Certificate } = await admin.send(
    new GetCertificateCommand({ CertificateAuthorityArn: caArn, CertificateArn: issued.CertificateArn }),
  );
  await admin.send(
    new ImportCertificateAuthorityCertificateCommand({ CertificateAuthorityArn: caArn, Certificate: Buffer.from(Certificate ?? '') }),
  );
}

/** A client that records every command input it sends (after the backend built it). */
function capturingClient(endpoint: string): { client: ACMPCAClient; inputs: object[] } {
  const client = new ACMPCAClient({ region: REGION, endpoint, credentials: CREDENTIALS });
  const inputs: object[] = [];
  client.middlewareStack.add(
    (next) => async (args) => {
      inputs.push(args.input);
      return next(args);
    },
    { step: 'initialize', name: 'captureInput' },
  );
  return { client, inputs };
}

function isIssueCertificate(input: object): input is IssueCertificateCommandInput {
  return 'Csr' in input;
}

/** An ECDSA P-256 key (WebCrypto) and a PKCS#10 CSR (@peculiar/x509), with or without SANs. */
async function makeCsr(opts: { withSans: boolean }): Promise<{ csrPem: string; spki: Buffer }> {
  const keys = await webcrypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, true, ['sign', 'verify']);
  const csr = await x509.Pkcs10CertificateRequestGenerator.create({
    name: [{ CN: [DNS_NAME] }],
    keys: keys as Parameters<typeof x509.Pkcs10CertificateRequestGenerator.create>[0]['keys'],
    signingAlgorithm: { name: 'ECDSA', hash: 'SHA-256' },
    extensions: opts.withSans
      ? [new x509.SubjectAlternativeNameExtension([{ type: 'url', value: SPIFFE_ID }, { type: 'dns', value: DNS_NAME }])]
      : [],
  });
  return {
    csrPem: csr.toString('pem'),
    spki: Buffer.from(await webcrypto.subtle.exportKey('spki', keys.publicKey)),
  };
}

function sanEntries(cert: X509Certificate): string[] {
  return (cert.subjectAltName ?? '').split(', ').filter(Boolean);
}

function escapeRegExp(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}
