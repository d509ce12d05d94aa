import { beforeAll, describe, expect, it } from 'vitest';
import { SecretStore } from '../../src/secrets/store.js';
import { CallerCatalog, type OnDemandIssuer } from '../../src/authorization/caller-catalog.js';
import { grantFor, IdentityTemplate, type AuthorizationPolicy } from '../../src/authorization/entitlements.js';
import type { Caller } from '../../src/authorization/caller.js';
import { bundleValue, rootCa, tlsValue } from '../helpers/identities.js';

const FRONT = 'spiffe://example.org/front';
const BACK = 'spiffe://example.org/ns/shop/sa/back';
const OTHER = 'spiffe://example.org/other';

const caller = (uid: number, ...selectors: string[]): Caller => ({ pid: 1000 + uid, uid, gid: uid, selectors: [`unix:uid:${uid}`, ...selectors] });
const policy: AuthorizationPolicy = {
  trustDomain: 'example.org',
  workloads: [
    { selectors: ['unix:uid:1001'], identities: [FRONT] },
    { selectors: ['k8s:ns:shop', 'k8s:sa:back'], identities: [BACK] },
  ],
};

describe('CallerCatalog: what each caller may resolve (store contents in, resolutions out)', () => {
  let store: SecretStore;
  beforeAll(async () => {
    const ca = await rootCa('example.org');
    store = new SecretStore();
    store.declare(FRONT, 'tls-certificate', ['front']);
    store.declare(BACK, 'tls-certificate');
    store.declare(OTHER, 'tls-certificate');
    store.declare('spiffe://example.org', 'trust-bundle', ['mesh-ca']);
    for (const id of [FRONT, BACK, OTHER]) store.publish(id, (await tlsValue(ca, id)).value);
    store.publish('spiffe://example.org', bundleValue('example.org', ca));
    store.markSettled();
  });

  const front = caller(1001);
  const back = caller(0, 'k8s:ns:shop', 'k8s:sa:back', 'k8s:pod-name:back-1');
  const halfBack = caller(0, 'k8s:ns:shop');
  const rows: Array<{ who: string; c: Caller; name: string; kind: string; served?: string; reason?: RegExp }> = [
    { who: 'front', c: front, name: FRONT, kind: 'ready', served: FRONT },
    { who: 'front', c: front, name: 'front', kind: 'ready', served: FRONT },
    { who: 'front', c: front, name: 'default', kind: 'ready', served: FRONT },
    { who: 'front', c: front, name: BACK, kind: 'denied', reason: /secret "spiffe:\/\/example.org\/ns\/shop\/sa\/back" is not granted to caller uid=1001 pid=2001 selectors=\[unix:uid:1001\]/ },
    { who: 'front', c: front, name: OTHER, kind: 'denied' },
    { who: 'front', c: front, name: 'spiffe://example.org', kind: 'ready' },
    { who: 'front', c: front, name: 'ROOTCA', kind: 'ready' },
    { who: 'front', c: front, name: 'ALL', kind: 'ready' },
    { who: 'front', c: front, name: 'mesh-ca', kind: 'ready' },
    { who: 'front', c: front, name: 'no-such-secret', kind: 'unknown' },
    { who: 'front (a SPIFFE ID nobody configured)', c: front, name: 'spiffe://example.org/not-configured', kind: 'denied', reason: /secret "spiffe:\/\/example.org\/not-configured" is not granted/ },
    { who: 'back (all selectors of its entry)', c: back, name: BACK, kind: 'ready', served: BACK },
    { who: 'back', c: back, name: 'default', kind: 'ready', served: BACK },
    { who: 'back', c: back, name: FRONT, kind: 'denied' },
    { who: 'back', c: back, name: 'front', kind: 'denied', reason: /secret "front" is not granted/ },
    { who: 'only k8s:ns:shop (half an entry)', c: halfBack, name: BACK, kind: 'denied', reason: /matches no workload entry/ },
    { who: 'only k8s:ns:shop', c: halfBack, name: 'spiffe://example.org', kind: 'denied', reason: /granted no identity and no trust bundle/ },
    { who: 'only k8s:ns:shop', c: halfBack, name: 'default', kind: 'denied' },
  ];
  it.each(rows)('$who asks for $name -> $kind', ({ c, name, kind, served, reason }) => {
    const view = new CallerCatalog(store, c, grantFor(policy, c));
    const r = view.resolve(name);
    expect(r.kind).toBe(kind);
    if (served && r.kind === 'ready') expect(r.entry.value.kind === 'tls-certificate' && r.entry.value.leaf.spiffeId).toBe(served);
    if (reason && r.kind === 'denied') expect(r.reason).toMatch(reason);
    if (r.kind === 'denied') expect(r.reason).not.toMatch(/BEGIN|PRIVATE/);
  });

  it('wildcard names: entitled certificates and every bundle; nothing for a caller with no entry', () => {
    expect(new CallerCatalog(store, front, grantFor(policy, front)).names().sort()).toEqual([FRONT, 'spiffe://example.org'].sort());
    expect(new CallerCatalog(store, back, grantFor(policy, back)).names().sort()).toEqual([BACK, 'spiffe://example.org'].sort());
    const none = new CallerCatalog(store, halfBack, grantFor(policy, halfBack));
    expect(none.names()).toEqual([]);
    expect(none.refusal()).toMatch(/caller uid=0 pid=1000 selectors=\[unix:uid:0, k8s:ns:shop\] matches no workload entry/);
  });

  it('`default` is watched per caller: a new version of the caller\'s own identity notifies it under the name it asked for', async () => {
    const view = new CallerCatalog(store, back, grantFor(policy, back));
    const seen: string[] = [];
    const stop = view.watch('default', (n) => seen.push(n));
    store.publish(FRONT, (await tlsValue(await rootCa('example.org'), FRONT)).value);
    expect(seen).toEqual([]);
    store.publish(BACK, (await tlsValue(await rootCa('example.org'), BACK)).value);
    expect(seen).toEqual(['default']);
    stop();
  });

  it('the templated identity is issued on demand when watched and released when the watch ends (issuer test double)', () => {
    const template = IdentityTemplate.parse('spiffe://{trustDomain}/ns/{k8s:ns}/sa/{k8s:sa}', 'example.org');
    if ('problem' in template) throw new Error(template.problem);
    const p: AuthorizationPolicy = { ...policy, workloads: [], template };
    const log: string[] = [];
    const issuer: OnDemandIssuer = {
      ensure: (id) => {
        log.push(`ensure ${id}`);
        if (store.canonicalOf(id) === undefined) store.declare(id, 'tls-certificate');
      },
      acquire: (id) => {
        log.push(`acquire ${id}`);
        return () => log.push(`release ${id}`);
      },
    };
    const web = caller(0, 'k8s:ns:shop', 'k8s:sa:web');
    const view = new CallerCatalog(store, web, grantFor(p, web), issuer);
    const id = 'spiffe://example.org/ns/shop/sa/web';
    const stop = view.watch('default', () => undefined);
    expect(view.resolve('default').kind).toBe('pending');
    expect(view.resolve(id).kind).toBe('pending');
    expect(view.resolve(FRONT).kind).toBe('denied');
    stop();
    // Watched first (held), issued when first resolved (declared, so later resolves do not re-issue), released.
    expect(log).toEqual([`acquire ${id}`, `ensure ${id}`, `release ${id}`]);
    // A caller lacking a placeholder's selector gets a clear refusal.
    const noSa = caller(0, 'k8s:ns:shop');
    expect(new CallerCatalog(store, noSa, grantFor(p, noSa), issuer).refusal()).toMatch(/no k8s:sa selector for \{k8s:sa\}/);
  });
});

describe('IdentityTemplate', () => {
  const td = 'example.org';
  it.each([
    ['spiffe://{trustDomain}/ns/{k8s:ns}/sa/{k8s:sa}', ['k8s:ns:shop', 'k8s:sa:back'], 'spiffe://example.org/ns/shop/sa/back'],
    ['spiffe://{trustDomain}/uid/{unix:uid}', ['unix:uid:1001', 'unix:gid:5'], 'spiffe://example.org/uid/1001'],
    ['spiffe://example.org/app/{k8s:pod-label:app}', ['k8s:pod-label:app:web', 'k8s:pod-label:tier:1'], 'spiffe://example.org/app/web'],
  ])('%s with %j -> %s', (text, selectors, expected) => {
    const t = IdentityTemplate.parse(text, td);
    if ('problem' in t) throw new Error(t.problem);
    expect(t.render(selectors, td)).toEqual({ spiffeId: expected });
  });

  it.each([
    [['k8s:ns:shop'], /no k8s:sa selector/],
    [['k8s:ns:shop', 'k8s:sa:a', 'k8s:sa:b'], /2 different k8s:sa selectors/],
    [['k8s:ns:..', 'k8s:sa:a'], /not a SPIFFE ID path segment/],
    [['k8s:ns:a/b', 'k8s:sa:a'], /not a SPIFFE ID path segment/],
  ])('refuses %j', (selectors, problem) => {
    const t = IdentityTemplate.parse('spiffe://{trustDomain}/ns/{k8s:ns}/sa/{k8s:sa}', td);
    if ('problem' in t) throw new Error(t.problem);
    const r = t.render(selectors, td);
    expect('problem' in r && r.problem).toMatch(problem);
  });

  it.each([
    ['spiffe://{trustDomain}/fixed', /no selector placeholder/],
    ['spiffe://other.org/{k8s:sa}', /not in the CA's trust domain example.org/],
    ['spiffe://{trustDomain}/{nope}', /placeholder \{nope\}/],
    ['https://{trustDomain}/{k8s:sa}', /does not give a workload SPIFFE ID/],
    ['spiffe://{trustDomain}/{k8s:sa', /unbalanced/],
  ])('rejects the template %s', (text, problem) => {
    const t = IdentityTemplate.parse(text, td);
    expect('problem' in t && t.problem).toMatch(problem);
  });
});
