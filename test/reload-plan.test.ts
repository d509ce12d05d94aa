import { describe, expect, it } from 'vitest';
import { defaultConfig, type ServerConfig } from '../src/cli/config.js';
import { planReload, type ReloadPlan } from '../src/cli/reload-plan.js';

const FRONT = 'spiffe://example.org/front';
const BACK = 'spiffe://example.org/back';

/** A running config with one file certificate, one bundle, two CA identities and workload rules. */
function running(): ServerConfig {
  const c = defaultConfig();
  c.socket.path = '/run/sds/sds.sock';
  c.admin = { host: '127.0.0.1', port: 15001 };
  c.certificates = [{ name: 'legacy', cert: '/certs/legacy.crt', key: '/certs/legacy.key', names: [] }];
  c.bundles = [{ name: 'spiffe://partner.org', ca: ['/certs/partner.crt'], trustDomain: 'partner.org', names: [] }];
  c.identities = [
    { spiffeId: FRONT, dnsNames: [], keyType: 'ec-p256', lifetimeSeconds: 3600, names: [] },
    { spiffeId: BACK, dnsNames: [], keyType: 'ec-p256', lifetimeSeconds: 3600, names: [] },
  ];
  c.ca.embedded = { dataDir: '/var/lib/sds/ca' };
  c.authorization = { ...c.authorization, enabled: true, workloads: [{ selectors: ['unix:uid:1001'], identities: [FRONT] }] };
  return c;
}

type Expected = Partial<Omit<ReloadPlan, 'config'>>;
const NOTHING = { add: [], remove: [], change: [] };

/** Each row: what an operator changed in the file, and what the plan must do about it. */
const rows: Array<{ name: string; edit: (c: ServerConfig) => void; expect: Expected }> = [
  { name: 'nothing changed', edit: () => {}, expect: { empty: true, restartRequired: [], ca: 'keep', files: NOTHING, identities: NOTHING } },
  {
    name: 'an identity added',
    edit: (c) => c.identities.push({ spiffeId: 'spiffe://example.org/new', dnsNames: [], keyType: 'ec-p256', lifetimeSeconds: 600, names: ['new'] }),
    expect: { empty: false, identities: { add: [{ spiffeId: 'spiffe://example.org/new', dnsNames: [], keyType: 'ec-p256', lifetimeSeconds: 600, names: ['new'] }], remove: [], change: [] }, files: NOTHING },
  },
  { name: 'an identity removed', edit: (c) => c.identities.splice(1, 1), expect: { empty: false, identities: { add: [], remove: [BACK], change: [] } } },
  {
    name: 'an identity changed (DNS SAN)',
    edit: (c) => (c.identities[0]!.dnsNames = ['front.local']),
    expect: { identities: { add: [], remove: [], change: [{ spiffeId: FRONT, dnsNames: ['front.local'], keyType: 'ec-p256', lifetimeSeconds: 3600, names: [] }] } },
  },
  {
    name: 'a file certificate added',
    edit: (c) => c.certificates.push({ name: 'extra', cert: '/certs/extra.crt', key: '/certs/extra.key', names: ['x'] }),
    expect: { files: { add: [{ key: 'extra', certificates: [{ name: 'extra', cert: '/certs/extra.crt', key: '/certs/extra.key', names: ['x'] }], bundles: [] }], remove: [], change: [] }, removedFileSecrets: [] },
  },
  { name: 'a file certificate removed', edit: (c) => (c.certificates = []), expect: { files: { add: [], remove: ['legacy'], change: [] }, removedFileSecrets: ['legacy'] } },
  {
    name: 'a bundle given another CA file',
    edit: (c) => (c.bundles[0]!.ca = ['/certs/partner-next.crt']),
    expect: { files: { add: [], remove: [], change: [{ key: 'spiffe://partner.org', certificates: [], bundles: [{ name: 'spiffe://partner.org', ca: ['/certs/partner-next.crt'], trustDomain: 'partner.org', names: [] }] }] }, removedFileSecrets: [] },
  },
  {
    name: 'a workload rule added',
    edit: (c) => c.authorization.workloads.push({ selectors: ['unix:uid:1002'], identities: [BACK] }),
    expect: { authorization: { workloads: [{ selectors: ['unix:uid:1001'], identities: [FRONT] }, { selectors: ['unix:uid:1002'], identities: [BACK] }] }, identities: NOTHING },
  },
  { name: 'a workload rule removed', edit: (c) => (c.authorization.workloads = [{ selectors: ['unix:uid:1001'], identities: [BACK] }]), expect: { authorization: { workloads: [{ selectors: ['unix:uid:1001'], identities: [BACK] }] } } },
  {
    name: 'an identity template added',
    edit: (c) => (c.authorization.identityTemplate = 'spiffe://{trustDomain}/uid/{unix:uid}'),
    expect: { authorization: { workloads: [{ selectors: ['unix:uid:1001'], identities: [FRONT] }], identityTemplate: 'spiffe://{trustDomain}/uid/{unix:uid}' } },
  },
  {
    name: 'aliases renamed and the default certificate chosen',
    edit: (c) => {
      c.aliases.defaultCertificate = 'mine';
      c.defaultCertificate = 'legacy';
    },
    expect: { aliases: { aliases: { defaultCertificate: 'mine', rootBundle: 'ROOTCA', allBundles: 'ALL' }, defaultCertificate: 'legacy' } },
  },
  { name: 'CA bundle names', edit: (c) => (c.ca.bundleNames = ['ROOT']), expect: { caBundleNames: ['ROOT'], empty: false } },
  { name: 'socket path: restart only', edit: (c) => (c.socket.path = '/run/other.sock'), expect: { empty: true, restartRequired: ['socket.path'] } },
  { name: 'admin address: restart only', edit: (c) => (c.admin = { host: '127.0.0.1', port: 15002 }), expect: { empty: true, restartRequired: ['admin.port'] } },
  { name: 'log level and watch debounce: restart only', edit: (c) => ((c.log.level = 'debug'), (c.watch.debounceMs = 5)), expect: { empty: true, restartRequired: ['watch.debounceMs', 'log.level'] } },
  { name: 'CA renewal fraction: restart only', edit: (c) => (c.ca.renewFraction = 0.6), expect: { empty: true, restartRequired: ['ca.renewFraction'] } },
  {
    name: 'CA trust domain: restart only, and the identities wait with it',
    edit: (c) => {
      c.ca.trustDomain = 'other.org';
      c.identities = [{ spiffeId: 'spiffe://other.org/front', dnsNames: [], keyType: 'ec-p256', lifetimeSeconds: 3600, names: [] }];
    },
    expect: { empty: true, identities: NOTHING, ca: 'keep', restartRequired: ['ca.trustDomain', 'identities (held with the CA until restart)'] },
  },
  { name: 'CA backend: restart only', edit: (c) => (c.ca.backend = 'cfssl'), expect: { empty: true, restartRequired: ['ca.backend'] } },
  {
    name: 'authorization turned off: restart only',
    edit: (c) => (c.authorization = { ...c.authorization, enabled: false, workloads: [] }),
    expect: { empty: true, restartRequired: ['workloads / identityTemplate (turning authorization on or off)'] },
  },
  { name: 'the last identity removed: the CA stops', edit: (c) => ((c.identities = []), (c.authorization.workloads = [{ selectors: ['unix:uid:1001'], identities: ['legacy'] }])), expect: { ca: 'stop' } },
  { name: 'a field added to the config later is restart-only until made live', edit: (c) => Object.assign(c, { futureSetting: 1 }), expect: { empty: true, restartRequired: ['futureSetting'] } },
];

describe('planReload: running config + new config -> plan (issue 13)', () => {
  it.each(rows)('$name', ({ edit, expect: expected }) => {
    const before = running();
    const next = running();
    edit(next);
    const plan = planReload(before, next);
    expect(plan).toMatchObject(expected);
    // The running config is never changed by planning.
    expect(before).toEqual(running());
    // What runs afterwards: the new config, except that restart-only settings keep their value.
    if (plan.restartRequired.length === 0) expect(plan.config).toEqual(next);
    else expect(planReload(plan.config, next).restartRequired).toEqual(plan.restartRequired);
    // Applying the same file twice changes nothing the second time.
    expect(planReload(plan.config, next).empty).toBe(true);
  });

  it('a config that first needs the CA takes all its settings (they were not in use)', () => {
    const before = defaultConfig();
    before.certificates = [{ name: 'legacy', cert: '/c.crt', key: '/c.key', names: [] }];
    const next = structuredClone(before);
    next.ca.trustDomain = 'other.org';
    next.ca.embedded = { dataDir: '/var/lib/ca' };
    next.identities = [{ spiffeId: 'spiffe://other.org/a', dnsNames: [], keyType: 'ec-p256', lifetimeSeconds: 60, names: [] }];
    const plan = planReload(before, next);
    expect(plan).toMatchObject({ ca: 'start', restartRequired: [] });
    expect(plan.config).toEqual(next);
  });

  it('a quick-mode bundle moves with the certificate it takes its trust domain from', () => {
    const before = defaultConfig();
    before.certificates = [{ name: 'default', cert: '/a.crt', key: '/a.key', names: [] }];
    before.bundles = [{ name: 'ROOTCA', ca: ['/ca.crt'], trustDomainFromCertificate: 'default', names: [] }];
    const next = structuredClone(before);
    next.certificates = [];
    next.bundles = [];
    expect(planReload(before, next)).toMatchObject({ files: { remove: ['default'] }, removedFileSecrets: ['default', 'ROOTCA'] });
  });
});
