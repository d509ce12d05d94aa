import type { Logger } from '../ops/logger.js';
import type { SecretStore } from '../secrets/store.js';
import { createRootCa, issueLeaf, type CertificateAuthority } from '../x509/issue.js';
import { validateTlsCertificate } from '../secrets/validate-tls-certificate.js';
import { validateTrustBundle } from '../secrets/validate-trust-bundle.js';
import { trustDomainId } from '../x509/spiffe.js';
import type { SecretSource, SecretSourceStatus } from './source.js';

/**
 * The zero-configuration default: a throwaway CA created in memory at start, one identity issued
 * from it and re-issued at half its lifetime. Nothing touches disk; a restart means a new CA.
 * It exists so `npm start` works on a fresh machine; real deployments use files or a CA backend.
 */
export class EmbeddedDemoCa implements SecretSource {
  private ca: CertificateAuthority | undefined;
  private timer: NodeJS.Timeout | undefined;
  private readonly statuses = new Map<string, SecretSourceStatus>();

  constructor(
    private readonly opts: { trustDomain: string; spiffeId: string; store: SecretStore; log: Logger; leafLifetimeMs?: number },
  ) {}

  async start(): Promise<void> {
    const { store, trustDomain, spiffeId } = this.opts;
    store.declare(spiffeId, 'tls-certificate');
    store.declare(trustDomainId(trustDomain), 'trust-bundle');
    this.ca = await createRootCa({ commonName: `sds-server throwaway CA (${trustDomain})`, trustDomain });
    const bundle = validateTrustBundle({ files: [{ file: 'embedded CA', text: this.ca.certPem }], trustDomain });
    if (!bundle.ok) throw new Error(bundle.problem.message);
    const entry = store.publish(trustDomainId(trustDomain), bundle.value);
    this.record(trustDomainId(trustDomain), 'trust-bundle', entry?.version);
    await this.issue();
  }

  async close(): Promise<void> {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
  }

  status(): SecretSourceStatus[] {
    return [...this.statuses.values()];
  }

  private async issue(): Promise<void> {
    if (!this.ca) return;
    const lifetime = this.opts.leafLifetimeMs ?? 60 * 60_000;
    const leaf = await issueLeaf(this.ca, { spiffeId: this.opts.spiffeId, notAfter: new Date(Date.now() + lifetime) });
    const result = validateTlsCertificate({ certificateChainPem: leaf.chainPem, privateKeyPem: leaf.keyPem, certFile: 'embedded CA', keyFile: 'memory' });
    if (!result.ok) throw new Error(result.problem.message);
    const entry = this.opts.store.publish(this.opts.spiffeId, result.value);
    this.record(this.opts.spiffeId, 'tls-certificate', entry?.version);
    this.opts.log.info('embedded demo CA issued identity', {
      secret: this.opts.spiffeId,
      serial: leaf.serialNumber,
      notAfter: result.value.leaf.notAfter.toISOString(),
    });
    this.timer = setTimeout(() => {
      this.issue().catch((err: Error) => this.opts.log.error('embedded demo CA could not re-issue', { error: err.message }));
    }, lifetime / 2);
    this.timer.unref();
  }

  private record(name: string, kind: SecretSourceStatus['kind'], version: string | undefined): void {
    this.statuses.set(name, {
      name,
      kind,
      files: ['embedded demo CA (memory)'],
      state: 'ok',
      ...(version ? { version } : {}),
      lastChangeAt: new Date(),
      warnings: [],
    });
  }
}
