/**
 * AWS Private CA (ACM PCA) as a CaBackend, through the official @aws-sdk/client-acm-pca.
 *
 * sign():
 *  1. IssueCertificate with the CSR, an ABSOLUTE Validity (notAfter in Unix seconds: AWS accepts any
 *     lifetime of one second or more this way, while `DAYS` has a one-day minimum), the signing
 *     algorithm, and the template `EndEntityCertificate_APIPassthrough/V1`.
 *     Why that template: the SPIFFE ID must be the leaf's URI SAN. The base template
 *     (EndEntityCertificate/V1) copies the CSR's subject and SAN, but ignores `ApiPassthrough`; the
 *     APIPassthrough variant defines the SAN as "passthrough from API or CSR", with the API value
 *     winning (AWS docs: "template order of operations"). So we state the SANs explicitly in
 *     `ApiPassthrough.Extensions.SubjectAlternativeNames` ({UniformResourceIdentifier: spiffeId},
 *     {DnsName: ...}) and the leaf carries exactly the requested identity, whatever the CSR says.
 *     The template still fixes the rest of an end-entity profile (CA:FALSE, digitalSignature +
 *     keyEncipherment, serverAuth + clientAuth). CSRPassthrough templates would copy every CSR
 *     extension, which puts the CSR author in charge of the profile; we do not need that.
 *     The caller's IAM policy must allow `acm-pca:IssueCertificate` with this template ARN.
 *  2. GetCertificate until it stops answering RequestInProgressException (issuance is asynchronous),
 *     polling with a capped exponential backoff for as long as the AbortSignal allows.
 *  3. chainPem = Certificate + CertificateChain (leaf first; the chain may end with the root).
 *
 * trustBundle(): GetCertificateAuthorityCertificate; the self-signed certificates among the CA's own
 * certificate and its chain: the CA itself for a root CA, the chain's root for a subordinate CA.
 *
 * Credentials and region come from the SDK's default provider chain unless a client is passed in.
 */
import { randomUUID } from 'node:crypto';
import {
  ACMPCAClient,
  GetCertificateAuthorityCertificateCommand,
  GetCertificateCommand,
  IssueCertificateCommand,
  type SigningAlgorithm,
} from '@aws-sdk/client-acm-pca';
import { abortError, raceAbort, sleep } from '../../core/abort.js';
import { ErrorCode, SdsError } from '../../core/errors.js';
import { redactUrlCredentials } from '../../core/redact-url.js';
import { isSelfSigned } from '../../x509/certificate-info.js';
import { splitPem } from '../../x509/pem.js';
import type { CaBackend, SignRequest, SignedCertificate } from '../ca-backend.js';

export interface AwsPcaOptions {
  /** arn:aws:acm-pca:<region>:<account>:certificate-authority/<id> */
  certificateAuthorityArn: string;
  /** Defaults to the SDK's chain (AWS_REGION, profile); ignored when `client` is given. */
  region?: string;
  /** Another endpoint, e.g. an emulator (moto) or a VPC endpoint; ignored when `client` is given. */
  endpoint?: string;
  /** Must suit the CA's key type: SHA256WITHECDSA (default) for EC CAs, SHA256WITHRSA for RSA CAs. */
  signingAlgorithm?: string;
  /** Defaults to {@link DEFAULT_TEMPLATE_ARN}. Only APIPassthrough/APICSRPassthrough templates take the SAN from the request. */
  templateArn?: string;
  /** First GetCertificate retry delay while the certificate is pending (doubles up to 2 s). Default 200. */
  pollIntervalMs?: number;
  /** A preconfigured client (credentials, retries, ...); not destroyed by close(). */
  client?: ACMPCAClient;
}

export const DEFAULT_TEMPLATE_ARN = 'arn:aws:acm-pca:::template/EndEntityCertificate_APIPassthrough/V1';
export const DEFAULT_SIGNING_ALGORITHM = 'SHA256WITHECDSA';
const MAX_POLL_INTERVAL_MS = 2000;

export class AwsPcaBackend implements CaBackend {
  readonly kind = 'aws-pca';
  private readonly client: ACMPCAClient;
  private readonly ownsClient: boolean;
  private readonly arn: string;
  private readonly signingAlgorithm: string;
  private readonly templateArn: string;
  private readonly pollIntervalMs: number;
  private closed = false;

  constructor(opts: AwsPcaOptions) {
    if (!opts.certificateAuthorityArn) throw new SdsError(ErrorCode.ConfigInvalid, 'aws-pca: certificateAuthorityArn is required');
    this.arn = opts.certificateAuthorityArn;
    this.signingAlgorithm = opts.signingAlgorithm ?? DEFAULT_SIGNING_ALGORITHM;
    this.templateArn = opts.templateArn ?? DEFAULT_TEMPLATE_ARN;
    this.pollIntervalMs = Math.max(1, opts.pollIntervalMs ?? 200);
    if (opts.client) {
      this.client = opts.client;
      this.ownsClient = false;
    } else {
      this.client = new ACMPCAClient({
        ...(opts.region !== undefined ? { region: opts.region } : {}),
        ...(opts.endpoint !== undefined ? { endpoint: opts.endpoint } : {}),
      });
      this.ownsClient = true;
    }
  }

  get certificateAuthorityArn(): string {
    return this.arn;
  }

  async sign(request: SignRequest, signal: AbortSignal): Promise<SignedCertificate> {
    this.checkUsable('IssueCertificate', signal);
    const lifetime = Math.max(1, Math.floor(request.lifetimeSeconds));
    const notAfterUnix = Math.floor(Date.now() / 1000) + lifetime;
    const command = new IssueCertificateCommand({
      CertificateAuthorityArn: this.arn,
      Csr: Buffer.from(request.csrPem, 'utf8'),
      SigningAlgorithm: this.signingAlgorithm as SigningAlgorithm,
      TemplateArn: this.templateArn,
      Validity: { Type: 'ABSOLUTE', Value: notAfterUnix },
      ApiPassthrough: {
        Extensions: {
          SubjectAlternativeNames: [
            { UniformResourceIdentifier: request.spiffeId },
            ...request.dnsNames.map((DnsName) => ({ DnsName })),
          ],
        },
      },
      // A retried request (network error, throttling) must not issue a second certificate.
      IdempotencyToken: randomUUID().replace(/-/g, ''),
    });
    const issued = await this.call('IssueCertificate', (abortSignal) => this.client.send(command, { abortSignal }), signal);
    const certificateArn = issued.CertificateArn;
    if (!certificateArn) throw new SdsError(ErrorCode.CaUnavailable, `${this.label()}: IssueCertificate returned no CertificateArn`);

    let delay = this.pollIntervalMs;
    for (;;) {
      try {
        const got = await this.call(
          'GetCertificate',
          (abortSignal) =>
            this.client.send(new GetCertificateCommand({ CertificateAuthorityArn: this.arn, CertificateArn: certificateArn }), { abortSignal }),
          signal,
          { rawServiceErrors: ['RequestInProgressException'] },
        );
        const leaf = singleCert(got.Certificate);
        if (!leaf) throw new SdsError(ErrorCode.CaUnavailable, `${this.label()}: GetCertificate ${certificateArn} returned no certificate`);
        const chain = splitPem(got.CertificateChain ?? '').filter((b) => b.label === 'CERTIFICATE');
        return { chainPem: leaf + chain.map((b) => b.pem).join('') };
      } catch (err) {
        if ((err as Error).name !== 'RequestInProgressException') throw err;
      }
      await sleep(delay, signal, () => this.aborted('GetCertificate', signal, `waiting for ${certificateArn}`));
      delay = Math.min(delay * 2, MAX_POLL_INTERVAL_MS);
    }
  }

  async trustBundle(signal: AbortSignal): Promise<string[]> {
    this.checkUsable('GetCertificateAuthorityCertificate', signal);
    const out = await this.call(
      'GetCertificateAuthorityCertificate',
      (abortSignal) => this.client.send(new GetCertificateAuthorityCertificateCommand({ CertificateAuthorityArn: this.arn }), { abortSignal }),
      signal,
    );
    const certs = [
      ...splitPem(out.Certificate ?? ''),
      ...splitPem(out.CertificateChain ?? ''),
    ].filter((b) => b.label === 'CERTIFICATE');
    if (certs.length === 0) throw new SdsError(ErrorCode.CaUnavailable, `${this.label()}: GetCertificateAuthorityCertificate returned no certificate`);
    const roots = certs.filter((b) => isSelfSigned(b.der));
    // An imported chain should end in its root; if it does not, its last certificate is the best anchor we have.
    const anchors = roots.length > 0 ? roots : [certs[certs.length - 1]!];
    return [...new Set(anchors.map((b) => b.pem))];
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.ownsClient) this.client.destroy();
  }

  private label(): string {
    return `AWS Private CA ${this.arn}`;
  }

  private checkUsable(operation: string, signal: AbortSignal): void {
    if (this.closed) throw new SdsError(ErrorCode.Internal, `${this.label()}: ${operation} after close()`);
    if (signal.aborted) throw this.aborted(operation, signal);
  }

  private aborted(operation: string, signal: AbortSignal, what?: string): SdsError {
    return abortError(ErrorCode.CaUnavailable, `${this.label()}: ${operation}`, signal, what ? `while ${what}` : undefined);
  }

  /**
   * client.send with the caller's AbortSignal. The SDK's HTTP handler assigns `signal.onabort`, and
   * its retry backoff sleeps do not watch the signal, so each call gets a private signal linked to
   * the caller's, and the call is raced against the abort so an abort always rejects at once.
   */
  private async call<Output>(
    operation: string,
    send: (abortSignal: AbortSignal) => Promise<Output>,
    signal: AbortSignal,
    opts: { rawServiceErrors?: string[] } = {},
  ): Promise<Output> {
    if (signal.aborted) throw this.aborted(operation, signal);
    const controller = new AbortController();
    const forward = (): void => controller.abort(signal.reason);
    signal.addEventListener('abort', forward, { once: true });
    try {
      return await raceAbort(send(controller.signal), signal, () => this.aborted(operation, signal));
    } catch (err) {
      if (signal.aborted) throw this.aborted(operation, signal);
      const e = err as Error & { code?: string };
      if (opts.rawServiceErrors?.includes(e.name)) throw err;
      throw new SdsError(ErrorCode.CaUnavailable, `${this.label()}: ${operation} failed: ${describeAwsError(e)}`, { cause: err });
    } finally {
      signal.removeEventListener('abort', forward);
    }
  }
}

/** `Name: message` for SDK service errors (ResourceNotFoundException, AccessDeniedException, ...) and network errors. */
function describeAwsError(err: Error & { code?: string }): string {
  const name = err.name && err.name !== 'Error' ? err.name : err.code;
  // The SDK may quote the endpoint; a password in it (`https://user:pw@vpce...`) must not reach logs or /status.
  const message = redactUrlCredentials(err.message || String(err));
  return name && !message.startsWith(name) ? `${name}: ${message}` : message;
}

/** The first CERTIFICATE block of `pem`, normalised; undefined when there is none. */
function singleCert(pem: string | undefined): string | undefined {
  return splitPem(pem ?? '').find((b) => b.label === 'CERTIFICATE')?.pem;
}


