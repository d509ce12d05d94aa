/**
 * AwsPcaBackend with a scripted ACMPCAClient (no network): the request it builds, polling while AWS
 * answers RequestInProgressException, aborts, error messages, and the trust bundle of root and
 * subordinate CAs. The same backend against the moto emulator: aws-pca.emulator.test.ts.
 */
import { X509Certificate } from 'node:crypto';
import {
  ACMPCAClient,
  ACMPCAServiceException,
  GetCertificateAuthorityCertificateCommand,
  GetCertificateCommand,
  IssueCertificateCommand,
  RequestInProgressException,
  type IssueCertificateCommandInput,
} from '@aws-sdk/client-acm-pca';
import { describe, expect, it } from 'vitest';
import { AwsPcaBackend, DEFAULT_TEMPLATE_ARN } from '../../src/ca/aws-pca/aws-pca-backend.js';
import { createIntermediateCa, createRootCa, issueLeaf } from '../../src/x509/issue.js';
import { splitPem } from '../../src/x509/pem.js';

const CA_ARN = 'arn:aws:acm-pca:us-east-1:111122223333:certificate-authority/11111111-2222-3333-4444-555555555555';
const CERT_ARN = `${CA_ARN}/certificate/abc123`;
const CSR_PEM = '-----BEGIN CERTIFICATE REQUEST-----\nMIIB\n-----END CERTIFICATE REQUEST-----\n';
const REQUEST = { csrPem: CSR_PEM, spiffeId: 'spiffe://example.org/front', dnsNames: ['front.apps.local', 'front'], lifetimeSeconds: 600 };

type Handler = (command: unknown, signal: AbortSignal | undefined) => Promise<unknown>;

/** An ACMPCAClient stand-in: `handler` answers each command; every call is recorded. */
function scriptedClient(handler: Handler): { client: ACMPCAClient; calls: Array<{ command: unknown; signal: AbortSignal | undefined }>; destroyed: () => boolean } {
  const calls: Array<{ command: unknown; signal: AbortSignal | undefined }> = [];
  let destroyed = false;
  const client = {
    send: (command: unknown, options?: { abortSignal?: AbortSignal }) => {
      calls.push({ command, signal: options?.abortSignal });
      return handler(command, options?.abortSignal);
    },
    destroy: () => {
      destroyed = true;
    },
  } as unknown as ACMPCAClient;
  return { client, calls, destroyed: () => destroyed };
}

const inProgress = (): RequestInProgressException =>
  new RequestInProgressException({ message: 'The request to issue the certificate is still in progress', $metadata: {} });

async function pkiFixture(): Promise<{ rootPem: string; intermediatePem: string; leafPem: string }> {
  const root = await createRootCa({ commonName: 'test root' });
  const intermediate = await createIntermediateCa(root, { commonName: 'test intermediate' });
  const leaf = await issueLeaf(intermediate, { spiffeId: REQUEST.spiffeId, dnsNames: ['front.apps.local'] });
  return { rootPem: root.certPem, intermediatePem: intermediate.certPem, leafPem: leaf.certPem };
}

describe('AwsPcaBackend (scripted client)', () => {
  it('issues with the APIPassthrough template, ABSOLUTE validity and the SANs as ApiPassthrough, then polls until issued', async () => {
    const pki = await pkiFixture();
    let polls = 0;
    const { client, calls } = scriptedClient(async (command) => {
      if (command instanceof IssueCertificateCommand) return { CertificateArn: CERT_ARN };
      if (command instanceof GetCertificateCommand) {
        polls += 1;
        if (polls < 3) throw inProgress();
        return { Certificate: pki.leafPem.trim(), CertificateChain: `${pki.intermediatePem}${pki.rootPem}`.trim() };
      }
      throw new Error('unexpected command');
    });
    const backend = new AwsPcaBackend({ certificateAuthorityArn: CA_ARN, client, pollIntervalMs: 5 });
    const before = Math.floor(Date.now() / 1000);
    const { chainPem } = await backend.sign(REQUEST, AbortSignal.timeout(5000));
    const after = Math.ceil(Date.now() / 1000);

    const input = (calls[0]!.command as IssueCertificateCommand).input as IssueCertificateCommandInput;
    expect(input).toMatchObject({
      CertificateAuthorityArn: CA_ARN,
      TemplateArn: DEFAULT_TEMPLATE_ARN,
      SigningAlgorithm: 'SHA256WITHECDSA',
      Validity: { Type: 'ABSOLUTE' },
      ApiPassthrough: {
        Extensions: {
          SubjectAlternativeNames: [
            { UniformResourceIdentifier: 'spiffe://example.org/front' },
            { DnsName: 'front.apps.local' },
            { DnsName: 'front' },
          ],
        },
      },
    });
    expect(input.Validity!.Value).toBeGreaterThanOrEqual(before + 600);
    expect(input.Validity!.Value).toBeLessThanOrEqual(after + 600);
    expect(Buffer.from(input.Csr!).toString('utf8')).toBe(CSR_PEM);
    expect(input.IdempotencyToken).toMatch(/^[0-9a-f]{32}$/);
    expect(input.ValidityNotBefore).toBeUndefined(); // AWS back-dates notBefore by 60 minutes by default

    expect(polls).toBe(3);
    const getInput = (calls[1]!.command as GetCertificateCommand).input;
    expect(getInput).toEqual({ CertificateAuthorityArn: CA_ARN, CertificateArn: CERT_ARN });
    // Leaf first, then the chain as AWS returned it, each block normalised with a trailing newline.
    const blocks = splitPem(chainPem).map((b) => new X509Certificate(b.der).subject);
    expect(blocks).toEqual([expect.stringContaining('front.apps.local'), 'CN=test intermediate', 'CN=test root']);
    expect(chainPem.endsWith('-----END CERTIFICATE-----\n')).toBe(true);
  });

  it('honours signingAlgorithm and templateArn options', async () => {
    const pki = await pkiFixture();
    const { client, calls } = scriptedClient(async (command) =>
      command instanceof IssueCertificateCommand ? { CertificateArn: CERT_ARN } : { Certificate: pki.leafPem },
    );
    const templateArn = 'arn:aws:acm-pca:::template/EndEntityCertificate_APICSRPassthrough/V1';
    const backend = new AwsPcaBackend({ certificateAuthorityArn: CA_ARN, client, signingAlgorithm: 'SHA256WITHRSA', templateArn });
    const { chainPem } = await backend.sign(REQUEST, AbortSignal.timeout(5000));
    expect((calls[0]!.command as IssueCertificateCommand).input).toMatchObject({ SigningAlgorithm: 'SHA256WITHRSA', TemplateArn: templateArn });
    expect(splitPem(chainPem)).toHaveLength(1); // no CertificateChain: just the leaf
  });

  it('an abort while polling rejects at once, naming the certificate being waited for', async () => {
    const { client } = scriptedClient(async (command) => {
      if (command instanceof IssueCertificateCommand) return { CertificateArn: CERT_ARN };
      throw inProgress();
    });
    const backend = new AwsPcaBackend({ certificateAuthorityArn: CA_ARN, client, pollIntervalMs: 60_000 });
    const controller = new AbortController();
    const t0 = performance.now();
    const signing = backend.sign(REQUEST, controller.signal);
    setTimeout(() => controller.abort(), 30);
    await expect(signing).rejects.toThrow(`AWS Private CA ${CA_ARN}: GetCertificate aborted while waiting for ${CERT_ARN}`);
    expect(performance.now() - t0).toBeLessThan(1000);
  });

  it('an abort during a call that ignores its signal still rejects at once; the SDK gets a linked signal', async () => {
    const seen: Array<AbortSignal | undefined> = [];
    const { client } = scriptedClient((_command, signal) => {
      seen.push(signal);
      return new Promise(() => {}); // never answers
    });
    const backend = new AwsPcaBackend({ certificateAuthorityArn: CA_ARN, client });
    const controller = new AbortController();
    const signing = backend.sign(REQUEST, controller.signal);
    await new Promise((r) => setTimeout(r, 10));
    controller.abort(new DOMException('no answer within 30000 ms', 'TimeoutError'));
    await expect(signing).rejects.toMatchObject({ name: 'AbortError', message: expect.stringContaining('IssueCertificate aborted: no answer within 30000 ms') });
    expect(seen[0]).toBeDefined();
    expect(seen[0]).not.toBe(controller.signal); // the SDK overwrites signal.onabort: never hand it the caller's
    expect(seen[0]!.aborted).toBe(true);
  });

  it('wraps AWS errors with the CA ARN, the operation and the AWS error name and message', async () => {
    // Not modelled in the client, so the SDK raises it as the service's base exception with this name.
    const denied = new ACMPCAServiceException({
      name: 'AccessDeniedException',
      $fault: 'client',
      message: 'User is not authorized to perform acm-pca:IssueCertificate',
      $metadata: { httpStatusCode: 400 },
    });
    const { client } = scriptedClient(async () => {
      throw denied;
    });
    const backend = new AwsPcaBackend({ certificateAuthorityArn: CA_ARN, client });
    const err = await backend.sign(REQUEST, AbortSignal.timeout(5000)).catch((e: unknown) => e as Error);
    expect(err).toBeInstanceOf(Error);
    expect((err as Error).message).toBe(
      `AWS Private CA ${CA_ARN}: IssueCertificate failed: AccessDeniedException: User is not authorized to perform acm-pca:IssueCertificate`,
    );
    expect((err as Error).cause).toBe(denied);
  });

  it('wraps network errors (no AWS error name) with their code', async () => {
    const refused = Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:1'), { code: 'ECONNREFUSED' });
    const { client } = scriptedClient(async () => {
      throw refused;
    });
    const backend = new AwsPcaBackend({ certificateAuthorityArn: CA_ARN, client });
    await expect(backend.trustBundle(AbortSignal.timeout(5000))).rejects.toThrow(
      `AWS Private CA ${CA_ARN}: GetCertificateAuthorityCertificate failed: ECONNREFUSED: connect ECONNREFUSED 127.0.0.1:1`,
    );
  });

  it('trustBundle: a root CA is its own anchor; a subordinate CA reports the root of its chain', async () => {
    const pki = await pkiFixture();
    const root = scriptedClient(async (command) => {
      expect(command).toBeInstanceOf(GetCertificateAuthorityCertificateCommand);
      return { Certificate: pki.rootPem };
    });
    expect(await new AwsPcaBackend({ certificateAuthorityArn: CA_ARN, client: root.client }).trustBundle(AbortSignal.timeout(5000))).toEqual([pki.rootPem]);

    const sub = scriptedClient(async () => ({ Certificate: pki.intermediatePem, CertificateChain: pki.rootPem }));
    expect(await new AwsPcaBackend({ certificateAuthorityArn: CA_ARN, client: sub.client }).trustBundle(AbortSignal.timeout(5000))).toEqual([pki.rootPem]);

    // A chain that stops below its root: the last certificate is the best anchor there is.
    const partial = scriptedClient(async () => ({ Certificate: pki.leafPem, CertificateChain: pki.intermediatePem }));
    expect(await new AwsPcaBackend({ certificateAuthorityArn: CA_ARN, client: partial.client }).trustBundle(AbortSignal.timeout(5000))).toEqual([
      pki.intermediatePem,
    ]);

    const empty = scriptedClient(async () => ({}));
    await expect(new AwsPcaBackend({ certificateAuthorityArn: CA_ARN, client: empty.client }).trustBundle(AbortSignal.timeout(5000))).rejects.toThrow(
      `AWS Private CA ${CA_ARN}: GetCertificateAuthorityCertificate returned no certificate`,
    );
  });

  it('does not destroy a client it was given; destroys one it built', async () => {
    const given = scriptedClient(async () => ({}));
    const backend = new AwsPcaBackend({ certificateAuthorityArn: CA_ARN, client: given.client });
    await backend.close();
    expect(given.destroyed()).toBe(false);
    await expect(backend.sign(REQUEST, AbortSignal.timeout(1000))).rejects.toThrow(`AWS Private CA ${CA_ARN}: IssueCertificate after close()`);

    const own = new AwsPcaBackend({ certificateAuthorityArn: CA_ARN, region: 'us-east-1' });
    await own.close();
    expect(own.kind).toBe('aws-pca');
  });

  it('requires a CA ARN', () => {
    expect(() => new AwsPcaBackend({ certificateAuthorityArn: '' })).toThrow(/certificateAuthorityArn is required/);
  });
});
