import { describe, expect, it } from 'vitest';
import { SecretStore } from '../src/secrets/store.js';
import { createLogger } from '../src/core/logger.js';
import { DEFAULT_EXPIRY_WARNING_MS, expiryState } from '../src/secrets/expiry.js';
import { bundleValue, rootCa, tlsValue } from './helpers/identities.js';

describe('SecretStore', () => {
  it('resolves declared names as pending until published, unknown names as pending only until settled', async () => {
    const store = new SecretStore();
    store.declare('a', 'tls-certificate');
    expect(store.resolve('a').kind).toBe('pending');
    expect(store.resolve('other').kind).toBe('pending');
    const seen: string[] = [];
    store.watch('other', (n) => seen.push(n));
    store.markSettled();
    expect(store.resolve('other').kind).toBe('unknown');
    expect(seen).toEqual(['other']);
    store.publish('a', (await tlsValue(await rootCa('example.org'), 'spiffe://example.org/a')).value);
    expect(store.resolve('a').kind).toBe('ready');
  });

  // Issue 10: quick mode with files missing at start names its secrets `default` and `ROOTCA`; Envoy
  // asks by SPIFFE ID and trust-domain ID, which are learned only once the files are read.
  it.each([
    ['a SPIFFE ID while a certificate has not loaded', 'spiffe://example.org/a', 'tls-certificate', 'spiffe://example.org/a', 'ready'],
    ['a trust-domain ID while a bundle has not loaded', 'spiffe://example.org', 'trust-bundle', 'spiffe://example.org', 'ready'],
    ['a SPIFFE ID the loaded certificate does not have', 'spiffe://example.org/x', 'tls-certificate', 'spiffe://example.org/a', 'unknown'],
  ] as const)('holds %s (pending after settling), then resolves it and notifies', async (_what, asked, kind, learned, after) => {
    const ca = await rootCa('example.org');
    const store = new SecretStore();
    store.declare('secret', kind);
    store.markSettled();
    const seen: string[] = [];
    store.watch(asked, (n) => seen.push(n));
    expect(store.resolve(asked).kind).toBe('pending');
    expect(store.resolve('not-a-spiffe-name').kind).toBe('unknown');
    store.publish('secret', kind === 'tls-certificate' ? (await tlsValue(ca, learned)).value : bundleValue('example.org', ca));
    expect(store.resolve(asked).kind).toBe(after);
    expect(seen).toEqual([asked]);
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

  it('stops handing out a certificate at its notAfter (resolves pending, as if not published) until a renewed one', async () => {
    const ca = await rootCa('example.org');
    let now = new Date();
    const store = new SecretStore({ now: () => now });
    const { value } = await tlsValue(ca, 'spiffe://example.org/a');
    store.publish('a', value);
    expect(store.resolve('a').kind).toBe('ready');
    expect(store.resolve('spiffe://example.org/a').kind).toBe('ready');
    now = new Date(value.leaf.notAfter.getTime());
    expect(store.resolve('a').kind).toBe('pending');
    expect(store.resolve('spiffe://example.org/a').kind).toBe('pending');
    now = new Date(value.leaf.notAfter.getTime() - 1);
    expect(store.resolve('a').kind).toBe('ready');
  });
});

describe('expiry policy', () => {
  const cert = (lifetimeMs: number, leftMs: number) => ({ notBefore: new Date(1e12 - (lifetimeMs - leftMs)), notAfter: new Date(1e12 + leftMs) });
  const at = new Date(1e12);
  const H = 3_600_000;
  it.each([
    ['90-day certificate, 2 days left', 90 * 24 * H, 48 * H, 'valid'],
    ['90-day certificate, 23 h left (inside 24h)', 90 * 24 * H, 23 * H, 'expiring'],
    ['1 h CA certificate at its renewal point (30 min left)', H, 0.5 * H, 'valid'],
    ['1 h CA certificate, 19 min left (last third)', H, 19 * 60_000, 'expiring'],
    ['any certificate at notAfter', H, 0, 'expired'],
  ] as const)('%s: %s', (_what, lifetime, left, state) => {
    expect(expiryState(cert(lifetime, left), at, DEFAULT_EXPIRY_WARNING_MS)).toBe(state);
  });

  // Issue 13: a config reload changes aliases; only the watchers of an alias whose answer changed are told.
  it.each([
    ['`default` pointed at another certificate', { defaultCertificate: 'b' }, ['default'], { default: 'b', ROOTCA: 'td' }],
    ['`default` renamed', { aliases: { defaultCertificate: 'mine', rootBundle: 'ROOTCA', allBundles: 'ALL' } }, ['default', 'mine'], { mine: 'a', default: undefined }],
    ['`ALL` renamed', { aliases: { defaultCertificate: 'default', rootBundle: 'ROOTCA', allBundles: 'EVERY' } }, ['ALL', 'EVERY'], { EVERY: 'ALL-ready', ALL: 'unknown' }],
    ['nothing changed', {}, [], { default: 'a' }],
  ] as const)('setAliases: %s', async (_what, change, notified, expected) => {
    const ca = await rootCa('example.org');
    const store = new SecretStore();
    for (const name of ['a', 'b']) {
      store.declare(name, 'tls-certificate');
      store.publish(name, (await tlsValue(ca, `spiffe://example.org/${name}`)).value);
    }
    store.declare('td', 'trust-bundle');
    store.publish('td', bundleValue('example.org', ca));
    store.markSettled();
    const seen: string[] = [];
    for (const name of ['default', 'mine', 'ROOTCA', 'ALL', 'EVERY', 'a', 'b', 'td']) store.watch(name, (n) => seen.push(n));
    store.setAliases({ aliases: { defaultCertificate: 'default', rootBundle: 'ROOTCA', allBundles: 'ALL' }, ...change });
    expect(seen.sort()).toEqual([...notified].sort());
    for (const [name, want] of Object.entries(expected)) {
      const r = store.resolve(name);
      const got = r.kind !== 'ready' ? r.kind : name === store.aliasNames.allBundles ? 'ALL-ready' : r.entry.name;
      expect(got, name).toBe(want ?? 'unknown');
    }
  });

  // Issue 13: a secret removed by a config reload is unknown at once, even while another
  // certificate is still loading (which would otherwise hold every SPIFFE ID as pending).
  it('a removed secret is unknown at once, also while another certificate is pending; declaring it again makes it pending', async () => {
    const ca = await rootCa('example.org');
    const store = new SecretStore();
    const gone = 'spiffe://example.org/gone';
    store.declare(gone, 'tls-certificate');
    store.publish(gone, (await tlsValue(ca, gone)).value);
    store.declare('spiffe://example.org/loading', 'tls-certificate');
    store.markSettled();
    expect(store.resolve('spiffe://example.org/never-configured').kind).toBe('pending');
    const seen: string[] = [];
    store.watch(gone, (n) => seen.push(`${n}:${store.resolve(n).kind}`));
    store.remove(gone);
    expect(seen).toEqual([`${gone}:unknown`]);
    store.declare(gone, 'tls-certificate');
    expect(store.resolve(gone).kind).toBe('pending');
  });
});

