import { KeyObject, X509Certificate, webcrypto } from 'node:crypto';
import { raceAbort, timedOut } from '../core/abort.js';
import { ErrorCode, SdsError, errorMessage, type Problem } from '../core/errors.js';
import type { Logger } from '../core/logger.js';
import type { TlsCertificateValue } from '../secrets/secret.js';
import { validateTlsCertificate } from '../secrets/validate-tls-certificate.js';
import { validateTrustBundle } from '../secrets/validate-trust-bundle.js';
import type { CaBackend } from '../ca/ca-backend.js';
import { defaultCaConfig } from '../ca/ca-config.js';
import { generateKeyObjects, type KeyType } from '../x509/keys.js';
import { isSelfSigned } from '../x509/certificate-info.js';
import { splitPem } from '../x509/pem.js';
import { parseSpiffeId, trustDomainId } from '../x509/spiffe.js';
import type { SecretPublisher } from './file-source.js';
import type { SecretSource, SecretSourceStatus } from './source.js';

/**
 * Identities issued by a CA backend, renewed before they expire: the lifecycle written once above
 * every backend. Keys are generated in memory and never leave it. The trust bundle served is the
 * CA's current roots plus every root a served leaf still chains to, so a CA rollover never leaves
 * a peer without the root it needs: old roots drop out once no served leaf depends on them.
 */
export interface IssuedIdentitySpec {
  spiffeId: string;
  dnsNames: string[];
  keyType: KeyType;
  lifetimeSeconds: number;
  /** Extra names the certificate is served under. */
  names: string[];
}

export interface CaSourceOptions {
  backend: CaBackend;
  trustDomain: string;
  identities: IssuedIdentitySpec[];
  /** Extra names of the bundle (its canonical name is the trust-domain ID). */
  bundleNames?: string[];
  /** `remove` is needed only for identities added with `addIdentity` (dropped when idle). */
  publisher: SecretPublisher & { remove?(name: string): void };
  log: Logger;
  /** Key type and lifetime of identities added with `addIdentity` (on-demand, from the identity template). */
  onDemand?: { keyType: KeyType; lifetimeSeconds: number };
  /** Renew at this fraction of the lifetime. Defaults (here and below): the `ca:` settings' in src/ca/ca-config.ts. */
  renewFraction?: number;
  /** +- this fraction of the lifetime, so a fleet does not renew at once. */
  jitterFraction?: number;
  /** Per CA call (ms): a slow CA is a failed attempt, retried with backoff. */
  timeoutMs?: number;
  backoff?: { initialMs: number; maxMs: number };
  /** How often the CA's roots are re-read to notice a rollover (ms, 0 = off). */
  bundleRefreshMs?: number;
  /** Wait (ms) after a new root is published before serving leaves that need it. */
  bundlePropagationMs?: number;
  random?: () => number;
}

interface IdentityState {
  spec: IssuedIdentitySpec;
  status: SecretSourceStatus;
  /** The root (PEM) the served leaf chains to. */
  root?: string;
  notAfter?: Date;
  nextRenewalAt?: Date;
  failures: number;
  timer?: NodeJS.Timeout;
  inFlight?: Promise<void>;
  /** Issued on demand (removable); set to true once removed, so an issuance in flight is not published. */
  onDemand?: boolean;
  removed?: boolean;
}

/** Timing defaults, from the `ca:` schema (one declaration of each). */
const CA_DEFAULTS = defaultCaConfig();

export interface IdentityStatus extends SecretSourceStatus {
  notAfter?: Date;
  consecutiveFailures: number;
}

export class CaSource implements SecretSource {
  private identities: IdentityState[];
  private started = false;
  private readonly bundleStatus: SecretSourceStatus;
  private readonly bundleName: string;
  /** Roots the CA currently reports. */
  private caRoots: string[] = [];
  /** Roots currently in the served bundle. */
  private servedRoots: string[] = [];
  /** When each served root was first published (0 for the first bundle: nothing to propagate past). */
  private readonly rootServedAt = new Map<string, number>();
  /** Roots no longer needed, served until this time (ms) so replacement leaves can propagate. */
  private readonly retiring = new Map<string, number>();
  private readonly parsedRoots = new Map<string, X509Certificate>();
  private readonly slots: Slots;
  /** How many served leaves chain to each root (kept as leaves change: every issuance asks). */
  private readonly leavesPerRoot = new Map<string, number>();
  private bundleTimer: NodeJS.Timeout | undefined;
  private closed = false;
  private readonly abort = new AbortController();

  constructor(private readonly opts: CaSourceOptions) {
    this.bundleName = trustDomainId(opts.trustDomain);
    this.slots = new Slots(opts.backend.signPublicKey ? IN_PROCESS_SLOTS : REMOTE_SLOTS);
    this.bundleStatus = { name: this.bundleName, kind: 'trust-bundle', files: [`${opts.backend.kind} CA`], state: 'pending', warnings: [] };
    this.identities = opts.identities.map((spec) => this.configuredState(spec));
  }

  private configuredState(spec: IssuedIdentitySpec): IdentityState {
    return { spec, failures: 0, status: { name: spec.spiffeId, kind: 'tls-certificate', files: [`${this.opts.backend.kind} CA (key in memory)`], state: 'pending', warnings: [] } };
  }

  async start(): Promise<void> {
    this.opts.publisher.declare(this.bundleName, 'trust-bundle', this.opts.bundleNames ?? []);
    for (const id of this.identities) this.opts.publisher.declare(id.spec.spiffeId, 'tls-certificate', id.spec.names);
    await this.refreshBundle().catch(() => undefined);
    this.started = true;
    await Promise.all(this.identities.map((id) => this.renew(id)));
    const refresh = this.opts.bundleRefreshMs ?? CA_DEFAULTS.bundleRefreshMs;
    if (refresh > 0) {
      const tick = (): void => {
        this.bundleTimer = setTimeout(() => {
          this.refreshBundle()
            .catch(() => undefined)
            .finally(() => !this.closed && tick());
        }, refresh);
        this.bundleTimer.unref();
      };
      tick();
    }
  }

  async close(): Promise<void> {
    this.closed = true;
    this.abort.abort();
    if (this.bundleTimer) clearTimeout(this.bundleTimer);
    for (const id of this.identities) if (id.timer) clearTimeout(id.timer);
    await Promise.all(this.identities.map((id) => id.inFlight?.catch(() => undefined)));
  }

  status(): IdentityStatus[] {
    return [
      { ...this.bundleStatus, consecutiveFailures: 0 },
      ...this.identities.map((id) => ({
        ...id.status,
        consecutiveFailures: id.failures,
        ...(id.nextRenewalAt ? { nextRenewalAt: id.nextRenewalAt } : {}),
        ...(id.notAfter ? { notAfter: id.notAfter } : {}),
      })),
    ];
  }

  /**
   * Adds an identity issued on demand (the identity template): declared at once, so streams asking
   * for it wait, then issued and renewed like a configured one. No-op when it already exists.
   */
  addIdentity(spiffeId: string): void {
    if (this.closed || this.identities.some((id) => id.spec.spiffeId === spiffeId)) return;
    const spec: IssuedIdentitySpec = { spiffeId, dnsNames: [], names: [], keyType: this.opts.onDemand?.keyType ?? 'ec-p256', lifetimeSeconds: this.opts.onDemand?.lifetimeSeconds ?? 3600 };
    const id: IdentityState = {
      spec,
      failures: 0,
      onDemand: true,
      status: { name: spiffeId, kind: 'tls-certificate', files: [`${this.opts.backend.kind} CA (on demand, key in memory)`], state: 'pending', warnings: [] },
    };
    this.identities.push(id);
    this.opts.publisher.declare(spiffeId, 'tls-certificate');
    if (this.started) void this.renew(id);
  }

  /** Stops renewing an identity added with `addIdentity` and removes it from the store. */
  removeIdentity(spiffeId: string): void {
    const id = this.identities.find((i) => i.spec.spiffeId === spiffeId && i.onDemand);
    if (id) this.drop(id);
  }

  /**
   * Adds a configured identity (a config reload): declared at once, so streams asking for it wait,
   * then issued and renewed like the others. An on-demand identity with that SPIFFE ID becomes a
   * configured one (no longer dropped when idle); an existing configured one is updated.
   */
  addConfiguredIdentity(spec: IssuedIdentitySpec): void {
    if (this.closed) return;
    const existing = this.identities.find((i) => i.spec.spiffeId === spec.spiffeId);
    if (existing) {
      existing.onDemand = false;
      this.updateIdentity(spec);
      return;
    }
    const id = this.configuredState(spec);
    this.identities.push(id);
    this.opts.publisher.declare(spec.spiffeId, 'tls-certificate', spec.names);
    if (this.started) void this.renew(id);
  }

  /**
   * Applies a changed spec (a config reload): new extra names are declared at once; a new key type,
   * lifetime or DNS SAN list re-issues the identity now (its subscribers get the new certificate).
   * Unchanged fields change nothing.
   */
  updateIdentity(spec: IssuedIdentitySpec): void {
    const id = this.identities.find((i) => i.spec.spiffeId === spec.spiffeId);
    if (!id || this.closed) return;
    const old = id.spec;
    id.spec = spec;
    if (old.names.join('\0') !== spec.names.join('\0')) this.opts.publisher.declare(spec.spiffeId, 'tls-certificate', spec.names);
    const reissue = old.keyType !== spec.keyType || old.lifetimeSeconds !== spec.lifetimeSeconds || old.dnsNames.join('\0') !== spec.dnsNames.join('\0');
    if (!reissue || !this.started) return;
    // An issuance in flight used the old spec: issue again once it is done.
    const inFlight = id.inFlight;
    if (inFlight) void inFlight.then(() => this.renew(id));
    else void this.renew(id);
  }

  /** Stops renewing a configured identity and removes it from the store (a config reload). */
  removeConfiguredIdentity(spiffeId: string): void {
    const id = this.identities.find((i) => i.spec.spiffeId === spiffeId);
    if (id) this.drop(id);
  }

  /** Changes the extra names of the trust bundle (config `ca.bundleNames`, a reload). */
  setBundleNames(names: string[]): void {
    this.opts.bundleNames = [...names];
    this.opts.publisher.declare(this.bundleName, 'trust-bundle', names);
  }

  /** Every name this source declared in the store: the bundle and each identity. */
  declaredNames(): string[] {
    return [this.bundleName, ...this.identities.map((i) => i.spec.spiffeId)];
  }

  private drop(id: IdentityState): void {
    id.removed = true;
    this.setRoot(id, undefined);
    if (id.timer) clearTimeout(id.timer);
    this.identities = this.identities.filter((i) => i !== id);
    this.opts.publisher.remove?.(id.spec.spiffeId);
    this.publishBundle(); // a root only this leaf needed can retire
  }

  /** Renews every identity now (e.g. after a CA rollover was started). */
  async renewAll(): Promise<void> {
    await Promise.all(this.identities.map((id) => this.renew(id)));
  }

  /** Rolls the CA's root (backends that can, e.g. the embedded CA), then re-issues every identity. */
  async rolloverRoot(): Promise<void> {
    const backend = this.opts.backend as CaBackend & { rotateRoot?: () => Promise<void> };
    if (!backend.rotateRoot) {
      throw new SdsError(ErrorCode.ConfigInvalid, `the ${backend.kind} CA rolls its root itself; the new root is picked up within bundleRefreshMs`);
    }
    await backend.rotateRoot();
    await this.refreshBundle();
    await Promise.all(this.identities.map((id) => id.inFlight));
  }

  /** Re-reads the CA's roots; a new root is added to the served bundle at once. */
  async refreshBundle(): Promise<void> {
    try {
      const roots = await this.withTimeout((signal) => this.opts.backend.trustBundle(signal));
      const certs = roots.flatMap((r) => splitPem(r).filter((b) => b.label === 'CERTIFICATE').map((b) => b.pem));
      if (certs.length === 0) throw new SdsError(ErrorCode.BundleEmpty, 'the CA returned an empty trust bundle');
      const changed = certs.join('') !== this.caRoots.join('');
      this.caRoots = certs;
      if (changed) this.opts.log.info('CA roots read', { backend: this.opts.backend.kind, roots: certs.length });
      this.publishBundle();
      // A rollover: leaves that chain to a root the CA no longer reports are re-issued now (the
      // new root is already in the served bundle); the old root drops out after the last of them.
      const stale = changed ? this.identities.filter((id) => id.root !== undefined && !certs.includes(id.root) && !id.inFlight) : [];
      if (stale.length > 0) {
        this.opts.log.info('CA root changed; re-issuing identities from the new root', { identities: stale.map((id) => id.spec.spiffeId) });
        for (const id of stale) void this.renew(id);
      }
    } catch (err) {
      this.problem(this.bundleStatus, { code: ErrorCode.CaUnavailable, message: `${this.opts.backend.kind} CA: cannot read trust bundle: ${(err as Error).message}` });
      throw err;
    }
  }

  private renew(id: IdentityState): Promise<void> {
    if (id.inFlight) return id.inFlight;
    if (id.timer) clearTimeout(id.timer);
    id.inFlight = this.issue(id).finally(() => {
      id.inFlight = undefined;
    });
    return id.inFlight;
  }

  private async issue(id: IdentityState): Promise<void> {
    if (this.closed || id.removed) return;
    const { spec } = id;
    const started = Date.now();
    try {
      // Second safeguard after the config rules: whatever asks (a template expanded with the wrong
      // trust domain, say), this CA never signs an identity outside its own trust domain.
      if (parseSpiffeId(spec.spiffeId)?.trustDomain !== this.opts.trustDomain) {
        throw new SdsError(ErrorCode.SpiffeIdMismatch, `${spec.spiffeId} is outside the CA's trust domain ${this.opts.trustDomain}; not issued`);
      }
      // Key, signature and validation take a bounded number of slots (CPU for a CA in this process,
      // requests for one elsewhere); waiting for a new root to propagate does not hold one.
      const value = await this.slots.run(() => this.issueOnce(spec));
      const root = this.rootOf(value.certificateChainPem);
      if (!root) throw new SdsError(ErrorCode.ChainUntrusted, `the certificate for ${spec.spiffeId} does not chain to any root the ${this.opts.backend.kind} CA reports`);
      // After a rollover every re-issued leaf waits for the new root and all wake at once: each then
      // takes a turn in the slots, so their pushes are spread over event-loop turns, not one burst.
      if (await this.ensureServed(root)) await this.slots.run(async () => undefined);
      if (this.closed || id.removed) return;
      this.setRoot(id, root);
      id.notAfter = value.leaf.notAfter;
      id.failures = 0;
      const entry = this.opts.publisher.publish(spec.spiffeId, value);
      id.status = {
        ...id.status,
        state: 'ok',
        lastChangeAt: new Date(),
        warnings: [],
        ...(entry ? { version: entry.version } : {}),
      };
      delete id.status.lastError;
      this.publishBundle(); // drops a root no served leaf needs any more
      this.scheduleRenewal(id, Date.now());
      this.opts.log.info('identity issued', {
        secret: spec.spiffeId,
        backend: this.opts.backend.kind,
        serial: value.leaf.serialNumber,
        notAfter: value.leaf.notAfter.toISOString(),
        nextRenewalAt: id.nextRenewalAt?.toISOString(),
        issueMs: Date.now() - started,
      });
    } catch (err) {
      if (this.closed || id.removed) return;
      id.failures += 1;
      // A check of ours names its own code and the CA; anything else is the CA failing.
      const problem: Problem =
        err instanceof SdsError && err.code !== ErrorCode.CaUnavailable
          ? err.toProblem()
          : { code: ErrorCode.CaUnavailable, message: `${this.opts.backend.kind} CA: ${errorMessage(err)}` };
      this.problem(id.status, problem);
      const delay = this.backoffMs(id.failures);
      id.nextRenewalAt = new Date(Date.now() + delay);
      this.opts.log.warn('could not issue identity; keeping the current one and retrying', {
        secret: spec.spiffeId,
        code: problem.code,
        error: problem.message,
        attempt: id.failures,
        retryInMs: delay,
        servingUntil: id.notAfter?.toISOString() ?? null,
      });
      this.setTimer(id, delay);
    }
  }

  /** A new key, its certificate from the backend, and that certificate validated. */
  private async issueOnce(spec: IssuedIdentitySpec): Promise<TlsCertificateValue> {
    const keys = await generateKeyObjects(spec.keyType);
    const request = { spiffeId: spec.spiffeId, dnsNames: spec.dnsNames, lifetimeSeconds: spec.lifetimeSeconds };
    const { backend } = this.opts;
    // A CA in this process signs the key itself; one elsewhere gets a CSR (proof of possession).
    const signed = await this.withTimeout(async (signal) =>
      backend.signPublicKey ? backend.signPublicKey({ ...request, publicKey: keys.publicKey }, signal) : backend.sign({ ...request, csrPem: await csrFor(keys, spec) }, signal),
    );
    await this.refreshBundle();
    const keyPem = keys.privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
    return this.checkIssued(spec, signed.chainPem, keyPem, keys.privateKey);
  }

  /** Validates what the CA returned: key match, chain order, dates, SPIFFE ID and DNS SANs. */
  private checkIssued(spec: IssuedIdentitySpec, chainPem: string, keyPem: string, privateKey: KeyObject): TlsCertificateValue {
    const result = validateTlsCertificate({
      certificateChainPem: chainPem,
      privateKeyPem: keyPem,
      privateKey,
      certFile: `${this.opts.backend.kind} CA response`,
      keyFile: 'in-memory key',
      expectedSpiffeId: spec.spiffeId,
    });
    if (!result.ok) throw new SdsError(result.problem.code, result.problem.message);
    if (result.value.leaf.spiffeId !== spec.spiffeId) {
      throw new SdsError(ErrorCode.SpiffeIdMismatch, `the ${this.opts.backend.kind} CA returned a certificate without the URI SAN ${spec.spiffeId}`);
    }
    const missing = spec.dnsNames.filter((d) => !result.value.leaf.dnsNames.includes(d));
    if (missing.length > 0) throw new SdsError(ErrorCode.SanMissing, `the ${this.opts.backend.kind} CA returned a certificate for ${spec.spiffeId} without the DNS SAN(s) ${missing.join(', ')}`);
    // Roots sent in the chain are not needed by peers (they hold the bundle): keep leaf + intermediates.
    // The leaf was just validated as the holder of our key: only the certificates after it can be roots.
    const chain = splitPem(result.value.certificateChainPem).filter((b, i) => i === 0 || !isSelfSigned(b.pem));
    return { ...result.value, certificateChainPem: chain.map((b) => b.pem).join('') };
  }

  /** The known root (CA-reported or already served) that the chain's last certificate is issued by. */
  private rootOf(chainPem: string): string | undefined {
    const blocks = splitPem(chainPem);
    const last = blocks[blocks.length - 1];
    if (!last) return undefined;
    const top = new X509Certificate(last.der);
    return [...this.caRoots, ...this.servedRoots].find((root) => {
      const r = this.parsedRoot(root);
      return top.checkIssued(r) && top.verify(r.publicKey);
    });
  }

  /** Records the root an identity's served leaf chains to, keeping `leavesPerRoot` in step. */
  private setRoot(id: IdentityState, root: string | undefined): void {
    if (id.root === root) return;
    if (id.root !== undefined) {
      const left = (this.leavesPerRoot.get(id.root) ?? 1) - 1;
      if (left > 0) this.leavesPerRoot.set(id.root, left);
      else this.leavesPerRoot.delete(id.root);
    }
    if (root !== undefined) this.leavesPerRoot.set(root, (this.leavesPerRoot.get(root) ?? 0) + 1);
    id.root = root;
  }

  /** Roots parsed once each (every issuance looks its root up; a rollover issues many at once). */
  private parsedRoot(pem: string): X509Certificate {
    let cert = this.parsedRoots.get(pem);
    if (!cert) {
      cert = new X509Certificate(pem);
      this.parsedRoots.set(pem, cert);
      // Only roots still known are kept.
      for (const known of this.parsedRoots.keys()) if (!this.caRoots.includes(known) && !this.servedRoots.includes(known) && known !== pem) this.parsedRoots.delete(known);
    }
    return cert;
  }

  /**
   * Makes sure `root` is in the served bundle; a newly added root gets time to reach every Envoy.
   * Resolves true when it had to wait for that.
   */
  private async ensureServed(root: string): Promise<boolean> {
    if (!this.servedRoots.includes(root)) this.publishBundle([root]);
    // A root added by a rollover gets time to reach every Envoy before a leaf needs it (however
    // it was added: here, or by a bundle refresh just before). The first roots need no wait.
    const wait = (this.rootServedAt.get(root) ?? 0) + (this.opts.bundlePropagationMs ?? CA_DEFAULTS.bundlePropagationMs) - Date.now();
    if (wait <= 0) return false;
    this.opts.log.info('new CA root in the trust bundle; waiting before serving leaves that need it', { waitMs: wait });
    await new Promise((resolve) => setTimeout(resolve, wait));
    return true;
  }

  /**
   * Served bundle = CA roots + roots that served leaves chain to (+ `extra`) + roots being retired.
   * A root no longer needed stays `bundlePropagationMs` longer: the leaf that replaced it must reach
   * every Envoy before any Envoy stops trusting the old one.
   */
  private publishBundle(extra: string[] = []): void {
    const needed = new Set([...this.caRoots, ...extra, ...this.leavesPerRoot.keys()]);
    const now = Date.now();
    for (const root of this.servedRoots) {
      if (needed.has(root)) {
        this.retiring.delete(root);
        continue;
      }
      let retireAt = this.retiring.get(root);
      if (retireAt === undefined) {
        retireAt = now + (this.opts.bundlePropagationMs ?? CA_DEFAULTS.bundlePropagationMs);
        this.retiring.set(root, retireAt);
        const timer = setTimeout(() => !this.closed && this.publishBundle(), retireAt - now + 1);
        timer.unref();
      }
      if (retireAt > now) needed.add(root);
      else this.retiring.delete(root);
    }
    const roots = [...needed];
    if (roots.length === 0) return;
    // The bundle as served already (every issuance and bundle refresh comes here): nothing to validate or publish.
    if (this.bundleStatus.state === 'ok' && roots.length === this.servedRoots.length && roots.every((r, i) => r === this.servedRoots[i])) return;
    const result = validateTrustBundle({ files: [{ file: `${this.opts.backend.kind} CA`, text: roots.join('') }], trustDomain: this.opts.trustDomain });
    if (!result.ok) {
      this.problem(this.bundleStatus, result.problem);
      return;
    }
    const dropped = this.servedRoots.filter((r) => !needed.has(r));
    const firstBundle = this.servedRoots.length === 0;
    for (const r of roots) if (!this.rootServedAt.has(r)) this.rootServedAt.set(r, firstBundle ? 0 : Date.now());
    for (const r of dropped) this.rootServedAt.delete(r);
    this.servedRoots = roots;
    const entry = this.opts.publisher.publish(this.bundleName, result.value);
    if (entry) {
      this.bundleStatus.state = 'ok';
      this.bundleStatus.version = entry.version;
      this.bundleStatus.lastChangeAt = new Date();
      delete this.bundleStatus.lastError;
      this.opts.log.info('trust bundle updated', { secret: this.bundleName, roots: roots.length, droppedRoots: dropped.length });
    }
  }

  /**
   * Renewal time = issuance + fraction of the remaining lifetime, +- jitter. Measured from when we
   * received the certificate, not from notBefore, which CAs back-date for clock skew.
   */
  private scheduleRenewal(id: IdentityState, issuedAt: number): void {
    if (!id.notAfter) return;
    const lifetime = Math.max(0, id.notAfter.getTime() - issuedAt);
    const fraction = this.opts.renewFraction ?? CA_DEFAULTS.renewFraction;
    const jitter = (this.opts.jitterFraction ?? CA_DEFAULTS.jitterFraction) * lifetime * ((this.opts.random ?? Math.random)() * 2 - 1);
    // Never a hot loop, even for a certificate that arrives nearly expired.
    const delay = Math.max(MIN_RENEW_DELAY_MS, fraction * lifetime + jitter);
    id.nextRenewalAt = new Date(issuedAt + delay);
    this.setTimer(id, delay);
  }

  private setTimer(id: IdentityState, delayMs: number): void {
    if (this.closed || id.removed) return;
    if (id.timer) clearTimeout(id.timer);
    // Node timers overflow past ~24.8 days; re-arm in steps.
    const step = Math.min(delayMs, 2 ** 31 - 1);
    id.timer = setTimeout(() => {
      if (step < delayMs) this.setTimer(id, delayMs - step);
      else void this.renew(id);
    }, step);
    id.timer.unref();
  }

  private backoffMs(failures: number): number {
    const { initialMs, maxMs } = this.opts.backoff ?? CA_DEFAULTS.backoff;
    const base = Math.min(maxMs, initialMs * 2 ** (failures - 1));
    return Math.round(base * (0.8 + 0.4 * (this.opts.random ?? Math.random)()));
  }

  private async withTimeout<T>(call: (signal: AbortSignal) => Promise<T>): Promise<T> {
    const timeoutMs = this.opts.timeoutMs ?? CA_DEFAULTS.timeoutMs;
    const signal = AbortSignal.any([this.abort.signal, AbortSignal.timeout(timeoutMs)]);
    return raceAbort(call(signal), signal, () => new SdsError(ErrorCode.CaUnavailable, timedOut(signal) ? `no answer within ${timeoutMs} ms` : 'cancelled'));
  }

  private problem(status: SecretSourceStatus, problem: Problem): void {
    status.lastError = problem;
    status.state = status.version ? 'error' : 'pending';
  }
}

const MIN_RENEW_DELAY_MS = 1000;

/**
 * Issuances in flight at once. A CA in this process is CPU on this thread: one at a time, each
 * after a turn of the event loop, so a rollover re-issuing thousands of identities never keeps
 * streams waiting longer than one issuance. A CA elsewhere is waited on, not computed: a few
 * dozen requests in flight, not thousands at once.
 */
const IN_PROCESS_SLOTS = 1;
const REMOTE_SLOTS = 32;

/** Runs at most `size` tasks at once, in call order; each starts on a fresh event-loop turn. */
class Slots {
  private running = 0;
  private readonly waiting: Array<() => void> = [];

  constructor(private readonly size: number) {}

  async run<T>(task: () => Promise<T>): Promise<T> {
    if (this.running >= this.size) await new Promise<void>((resolve) => this.waiting.push(resolve));
    else this.running += 1;
    try {
      await new Promise<void>((resolve) => setImmediate(resolve));
      return await task();
    } finally {
      const next = this.waiting.shift();
      if (next) next();
      else this.running -= 1;
    }
  }
}

/** A CSR for a backend outside this process (@peculiar/x509 loaded only then), from the identity's key. */
async function csrFor(keys: { publicKey: KeyObject; privateKey: KeyObject }, spec: IssuedIdentitySpec): Promise<string> {
  const { createCsr } = await import('../x509/csr.js');
  const alg = keys.privateKey.asymmetricKeyType === 'rsa' ? { name: 'RSASSA-PKCS1-v1_5', hash: 'SHA-256' } : { name: 'ECDSA', namedCurve: spec.keyType === 'ec-p384' ? 'P-384' : 'P-256' };
  const pair = {
    privateKey: await webcrypto.subtle.importKey('pkcs8', keys.privateKey.export({ type: 'pkcs8', format: 'der' }), alg, false, ['sign']),
    publicKey: await webcrypto.subtle.importKey('spki', keys.publicKey.export({ type: 'spki', format: 'der' }), alg, true, ['verify']),
  };
  return createCsr(pair, { spiffeId: spec.spiffeId, dnsNames: spec.dnsNames });
}
