import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { X509Certificate } from 'node:crypto';
import { EmbeddedCa } from '../../src/ca/embedded/embedded-ca.js';
import type { CaBackend, SignRequest, SignedCertificate } from '../../src/ca/ca-backend.js';
import { CaSource, type CaSourceOptions } from '../../src/sources/ca-source.js';
import { SecretStore } from '../../src/secrets/store.js';
import { createLogger, silentLogger } from '../../src/core/logger.js';

const TD = 'example.org';
const FRONT = 'spiffe://example.org/front';
const BACK = 'spiffe://example.org/back';

/**
 * Fault injection around a real embedded CA: the signing itself is real; the wrapper decides
 * whether the CA is down, hangs, or answers with something it should not.
 */
class FaultyCa implements CaBackend {
  readonly kind = 'faulty-test-ca';
  mode: 'ok' | 'down' | 'hang' | 'garbage' | 'wrong-san' | 'foreign-chain' = 'ok';
  calls = 0;
  constructor(readonly inner: EmbeddedCa) {}
  async sign(request: SignRequest, signal: AbortSignal): Promise<SignedCertificate> {
    this.calls += 1;
    switch (this.mode) {
      case 'down':
        throw new Error('connect ECONNREFUSED 127.0.0.1:8888');
      case 'hang':
        return new Promise((_, reject) => signal.addEventListener('abort', () => reject(new Error('aborted'))));
      case 'garbage':
        return { chainPem: '<html>502 Bad Gateway</html>' };
      case 'wrong-san':
        return this.inner.sign({ ...request, spiffeId: 'spiffe://example.org/someone-else' }, signal);
      case 'foreign-chain': {
        // Signed for the right key and name, by a CA this backend does not report.
        const other = await EmbeddedCa.open({ trustDomain: TD, log: silentLogger });
        return other.sign(request, signal);
      }
      default:
        return this.inner.sign(request, signal);
    }
  }
  trustBundle(signal: AbortSignal): Promise<string[]> {
    if (this.mode === 'down') return Promise.reject(new Error('connect ECONNREFUSED 127.0.0.1:8888'));
    return this.inner.trustBundle(signal);
  }
  async close(): Promise<void> {}
}

describe('CA source under CA faults (fault injection around the embedded CA)', () => {
  let store: SecretStore;
  let ca: FaultyCa;
  let logs: Array<Record<string, unknown>>;
  let sources: CaSource[];

  beforeEach(async () => {
    store = new SecretStore();
    ca = new FaultyCa(await EmbeddedCa.open({ trustDomain: TD, log: silentLogger }));
    logs = [];
    sources = [];
  });
  afterEach(async () => {
    for (const s of sources) await s.close();
  });

  const make = (opts: Partial<CaSourceOptions> = {}, ids = [FRONT]): CaSource => {
    const s = new CaSource({
      backend: ca,
      trustDomain: TD,
      identities: ids.map((spiffeId) => ({ spiffeId, dnsNames: [], keyType: 'ec-p256' as const, lifetimeSeconds: 3600, names: [] })),
      publisher: store,
      log: createLogger({ write: (l) => logs.push(JSON.parse(l) as Record<string, unknown>) }),
      bundleRefreshMs: 0,
      bundlePropagationMs: 20,
      backoff: { initialMs: 100, maxMs: 400 },
      random: () => 0.5,
      ...opts,
    });
    sources.push(s);
    return s;
  };

  const waitFor = async (cond: () => boolean, ms = 5000): Promise<void> => {
    const end = Date.now() + ms;
    while (!cond()) {
      if (Date.now() > end) throw new Error('condition not met in time');
      await new Promise((r) => setTimeout(r, 20));
    }
  };

  it('retries a CA that is down with capped exponential backoff, then serves once it is back', async () => {
    ca.mode = 'down';
    const s = make();
    await s.start();
    expect(store.resolve(FRONT).kind).toBe('pending');
    await waitFor(() => logs.filter((l) => l.msg === 'could not issue identity; keeping the current one and retrying').length >= 4);
    const delays = logs.filter((l) => l.retryInMs !== undefined).map((l) => l.retryInMs as number);
    expect(delays.slice(0, 4)).toEqual([100, 200, 400, 400]);
    const status = s.status().find((x) => x.name === FRONT)!;
    expect(status.state).toBe('pending');
    expect(status.lastError?.code).toBe('SDS_ERR_CA_UNAVAILABLE');
    expect(status.lastError?.message).toContain('ECONNREFUSED');
    ca.mode = 'ok';
    await waitFor(() => store.resolve(FRONT).kind === 'ready');
    expect(s.status().find((x) => x.name === FRONT)?.state).toBe('ok');
  });

  it('keeps serving the current certificate when renewal fails, and says so', async () => {
    const s = make();
    await s.start();
    const served = store.get(FRONT)!;
    ca.mode = 'down';
    void s.renewAll();
    await waitFor(() => s.status().find((x) => x.name === FRONT)?.state === 'error');
    expect(store.get(FRONT)).toBe(served);
    const warn = logs.find((l) => l.code === 'SDS_ERR_CA_UNAVAILABLE');
    expect(warn?.servingUntil).toBe((served.value.kind === 'tls-certificate' ? served.value.leaf.notAfter : new Date(0)).toISOString());
  });

  it('gives up on a CA call that hangs after the timeout', async () => {
    ca.mode = 'hang';
    const s = make({ timeoutMs: 150 });
    const t0 = Date.now();
    await s.start();
    expect(Date.now() - t0).toBeLessThan(1500);
    expect(s.status().find((x) => x.name === FRONT)?.lastError?.message).toContain('no answer within 150 ms');
  });

  it.each([
    ['garbage', 'SDS_ERR_PEM_INVALID'],
    ['wrong-san', 'SDS_ERR_SPIFFE_ID_MISMATCH'],
    ['foreign-chain', 'SDS_ERR_CHAIN_UNTRUSTED'],
  ] as const)('refuses a CA answer with %s (%s) and serves nothing from it', async (mode, code) => {
    const s = make();
    await s.start();
    const served = store.get(FRONT)!;
    ca.mode = mode;
    await s.renewAll();
    expect(store.get(FRONT)).toBe(served);
    const status = s.status().find((x) => x.name === FRONT)!;
    expect(status.state).toBe('error');
    expect(status.lastError?.code).toBe(code);
  });

  it('rolls the CA over: old+new roots until every leaf chains to the new root, bundle first', async () => {
    // Long enough that a start-up on a loaded machine cannot be mistaken for a propagation wait.
    const PROPAGATION = 1000;
    const s = make({ bundlePropagationMs: PROPAGATION }, [FRONT, BACK]);
    const t0 = Date.now();
    await s.start();
    // The first bundle and leaves go out at once: there is nothing to propagate past.
    expect(Date.now() - t0).toBeLessThan(PROPAGATION);
    const oldRoot = ca.inner.rootPem;
    const order: string[] = [];
    const at = new Map<string, number>();
    const record = (event: string): void => {
      order.push(event);
      if (!at.has(event)) at.set(event, Date.now());
    };
    store.watch(`spiffe://${TD}`, () => {
      const v = store.get(`spiffe://${TD}`)?.value;
      record(`bundle:${v?.kind === 'trust-bundle' ? v.bundles[0]?.rootsPem.length : 0}`);
    });
    store.watch(FRONT, () => record('front'));
    store.watch(BACK, () => record('back'));

    await ca.inner.rotateRoot();
    await s.refreshBundle();
    const roots = (): string[] => {
      const v = store.get(`spiffe://${TD}`)?.value;
      return v?.kind === 'trust-bundle' ? v.bundles.flatMap((b) => b.rootsPem) : [];
    };
    expect(roots()).toEqual([ca.inner.rootPem, oldRoot]);
    await s.renewAll();
    // The old root outlives the last leaf that needed it by the propagation time, then goes.
    expect(roots()).toEqual([ca.inner.rootPem, oldRoot]);
    await waitFor(() => roots().length === 1);
    expect(roots()).toEqual([ca.inner.rootPem]);
    for (const id of [FRONT, BACK]) {
      const v = store.get(id)?.value;
      const leaf = new X509Certificate(v?.kind === 'tls-certificate' ? v.certificateChainPem : '');
      expect(leaf.verify(new X509Certificate(ca.inner.rootPem).publicKey)).toBe(true);
    }
    // Both roots were served before the first new leaf, and the old root went only after both leaves.
    expect(order[0]).toBe('bundle:2');
    expect(order.slice(1, 3).sort()).toEqual(['back', 'front']);
    expect(order[order.length - 1]).toBe('bundle:1');
    // ...with the propagation time between each step, however the new root got into the bundle.
    expect(Math.min(at.get('front')!, at.get('back')!) - at.get('bundle:2')!).toBeGreaterThanOrEqual(PROPAGATION - 5);
    expect(at.get('bundle:1')! - Math.max(at.get('front')!, at.get('back')!)).toBeGreaterThanOrEqual(PROPAGATION - 5);
  });
});
