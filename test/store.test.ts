import { describe, expect, it } from 'vitest';
import { SecretStore } from '../src/secrets/store.js';
import { createLogger } from '../src/ops/logger.js';
import { bundleValue, rootCa, tlsValue } from './helpers/identities.js';

describe('SecretStore', () => {
  it('resolves declared names as pending until published, unknown names as pending only until settled', async () => {
    const store = new SecretStore();
    store.declare('a', 'tls-certificate');
    expect(store.resolve('a').kind).toBe('pending');
    expect(store.resolve('spiffe://example.org/x').kind).toBe('pending');
    const seen: string[] = [];
    store.watch('spiffe://example.org/x', (n) => seen.push(n));
    store.markSettled();
    expect(store.resolve('spiffe://example.org/x').kind).toBe('unknown');
    expect(seen).toEqual(['spiffe://example.org/x']);
    store.publish('a', (await tlsValue(await rootCa('example.org'), 'spiffe://example.org/a')).value);
    expect(store.resolve('a').kind).toBe('ready');
  });

  it('learns the SPIFFE ID and trust-domain ID as names, and notifies alias watchers on publish', async () => {
    const ca = await rootCa('example.org');
    const store = new SecretStore();
    store.declare('cert', 'tls-certificate');
    store.declare('bundle', 'trust-bundle');
    const notified: string[] = [];
    for (const n of ['default', 'spiffe://example.org/web', 'ROOTCA', 'spiffe://example.org', 'ALL']) store.watch(n, (x) => notified.push(x));
    store.publish('cert', (await tlsValue(ca, 'spiffe://example.org/web')).value);
    store.publish('bundle', bundleValue('example.org', ca));
    expect(notified.sort()).toEqual(['ALL', 'ROOTCA', 'default', 'spiffe://example.org', 'spiffe://example.org/web'].sort());
    expect(store.canonicalOf('spiffe://example.org/web')).toBe('cert');
    expect(store.canonicalOf('spiffe://example.org')).toBe('bundle');
  });

  it('does not version or notify unchanged content', async () => {
    const store = new SecretStore();
    const value = (await tlsValue(await rootCa('example.org'), 'spiffe://example.org/a')).value;
    let calls = 0;
    store.watch('a', () => calls++);
    const first = store.publish('a', value);
    expect(first).toBeDefined();
    expect(store.publish('a', { ...value })).toBeUndefined();
    expect(calls).toBe(1);
  });

  it('merges bundles of the same trust domain into one ALL entry', async () => {
    const [a, b] = [await rootCa('example.org'), await rootCa('example.org')];
    const store = new SecretStore();
    store.publish('one', bundleValue('example.org', a));
    store.publish('two', bundleValue('example.org', a, b));
    const all = store.resolve('ALL');
    expect(all.kind).toBe('ready');
    if (all.kind !== 'ready' || all.entry.value.kind !== 'trust-bundle') return;
    expect(all.entry.value.bundles).toHaveLength(1);
    expect(all.entry.value.bundles[0]?.rootsPem).toEqual([a.certPem, b.certPem]);
  });

  it('isolates listeners: one that throws is logged with the name (no secret content) and every other listener still gets the push', async () => {
    const lines: Array<Record<string, unknown>> = [];
    const store = new SecretStore({ log: createLogger({ write: (l) => lines.push(JSON.parse(l) as Record<string, unknown>) }) });
    const seen: string[] = [];
    store.watch('a', () => seen.push('before'));
    store.watch('a', () => {
      throw new Error('listener bug');
    });
    store.watch('a', () => seen.push('after'));
    store.watchAll(() => {
      throw new TypeError('wildcard listener bug');
    });
    store.watchAll((n) => seen.push(`all:${n}`));
    const { value } = await tlsValue(await rootCa('example.org'), 'spiffe://example.org/a');
    expect(() => store.publish('a', value)).not.toThrow();
    // 'a' and the names learned from it (its SPIFFE ID, `default`) each reach every listener.
    expect(seen.slice(0, 3)).toEqual(['before', 'after', 'all:a']);
    const wildcardCalls = seen.filter((x) => x.startsWith('all:')).length;
    expect(wildcardCalls).toBeGreaterThan(1);
    const errors = lines.filter((l) => l.level === 'error');
    expect(errors.filter((e) => e.error === 'Error: listener bug')).toEqual([expect.objectContaining({ secret: 'a' })]);
    expect(errors.filter((e) => e.error === 'TypeError: wildcard listener bug')).toHaveLength(wildcardCalls);
    expect(JSON.stringify(lines)).not.toContain('PRIVATE KEY');
    expect(JSON.stringify(lines)).not.toContain(value.kind === 'tls-certificate' ? value.certificateChainPem.slice(30, 90) : '-');
  });
});
