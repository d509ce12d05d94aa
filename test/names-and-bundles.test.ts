import { afterEach, describe, expect, it } from 'vitest';
import { X509Certificate } from 'node:crypto';
import { startServer, type RunningServer } from './helpers/server.js';
import { SdsTestClient, decodeSecret, decodeSpiffeConfig, envoyNode } from './helpers/sds-client.js';
import type { Secret__Output } from '../src/api/generated/envoy/extensions/transport_sockets/tls/v3/Secret.js';
import { bundleValue, rootCa, tlsValue } from './helpers/identities.js';
import type { BundleFormatSetting } from '../src/xds/bundle-format.js';

const FRONT = 'spiffe://example.org/front';
const BACK = 'spiffe://example.org/back';
const TD = 'spiffe://example.org';
const OTHER_TD = 'spiffe://partner.test';
const SPIFFE_CONFIG_URL = 'type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.SPIFFECertValidatorConfig';

describe('secret names and bundle forms', () => {
  let srv: RunningServer;
  let client: SdsTestClient;

  afterEach(async () => {
    client?.close();
    await srv?.stop();
  });

  /** Two identities, two trust domains; `front` is declared first, so it is `default`. */
  async function setup(opts: { bundleFormat?: BundleFormatSetting; aliases?: { defaultCertificate?: string; rootBundle?: string; allBundles?: string }; defaultCertificate?: string } = {}) {
    srv = await startServer({
      store: { aliases: opts.aliases, defaultCertificate: opts.defaultCertificate },
      server: { bundleFormat: opts.bundleFormat ?? 'auto' },
    });
    const ca = await rootCa('example.org');
    const partnerCa = await rootCa('partner.test');
    const front = await tlsValue(ca, FRONT);
    const back = await tlsValue(ca, BACK);
    srv.store.declare('front-cert', 'tls-certificate', ['frontend']);
    srv.store.declare('back-cert', 'tls-certificate');
    srv.store.declare('bundle', 'trust-bundle');
    srv.store.declare('partner-bundle', 'trust-bundle');
    srv.store.publish('front-cert', front.value);
    srv.store.publish('back-cert', back.value);
    srv.store.publish('bundle', bundleValue('example.org', ca));
    srv.store.publish('partner-bundle', bundleValue('partner.test', partnerCa));
    srv.store.markSettled();
    client = new SdsTestClient(srv.socketPath, 'v3');
    return { ca, partnerCa, front, back };
  }

  async function get(name: string, node = envoyNode()): Promise<Secret__Output> {
    const s = client.stream();
    s.send({ node, resource_names: [name], type_url: client.typeUrl });
    const res = await s.next();
    s.end();
    expect(res.resources).toHaveLength(1);
    const secret = decodeSecret(res.resources[0]!);
    // Envoy NACKs a resource whose name differs from the one it asked for.
    expect(secret.name).toBe(name);
    return secret;
  }

  const serialOf = (s: Secret__Output): string => new X509Certificate(s.tls_certificate!.certificate_chain!.inline_bytes!).serialNumber;

  it('serves a certificate by its SPIFFE ID, its configured extra name and `default`', async () => {
    const { front, back } = await setup();
    expect(serialOf(await get(FRONT))).toBe(front.leaf.serialNumber);
    expect(serialOf(await get('frontend'))).toBe(front.leaf.serialNumber);
    expect(serialOf(await get('default'))).toBe(front.leaf.serialNumber);
    expect(serialOf(await get(BACK))).toBe(back.leaf.serialNumber);
  });

  it('lets the operator choose which identity is `default` and rename the aliases', async () => {
    const { back } = await setup({ defaultCertificate: 'back-cert', aliases: { defaultCertificate: 'my-default', rootBundle: 'my-root', allBundles: 'everything' } });
    expect(serialOf(await get('my-default'))).toBe(back.leaf.serialNumber);
    expect((await get('my-root')).validation_context).toBeTruthy();
    expect((await get('everything')).validation_context).toBeTruthy();
    const s = client.stream();
    s.send({ node: envoyNode(), resource_names: ['default'], type_url: client.typeUrl });
    expect((await s.ended).details).toContain('"default"');
  });

  it('serves a bundle by trust-domain ID and ROOTCA as a SPIFFE validator config for a modern Envoy', async () => {
    const { ca } = await setup();
    for (const name of [TD, 'ROOTCA']) {
      const vc = (await get(name)).validation_context!;
      expect(vc.trusted_ca ?? undefined).toBeUndefined();
      expect(vc.custom_validator_config?.name).toBe('envoy.tls.cert_validator.spiffe');
      expect(vc.custom_validator_config?.typed_config?.type_url).toBe(SPIFFE_CONFIG_URL);
      const config = decodeSpiffeConfig(vc.custom_validator_config!.typed_config!.value);
      expect(config.trust_domains.map((d) => d.name)).toEqual(['example.org']);
      expect(config.trust_domains[0]?.trust_bundle?.inline_bytes?.toString()).toBe(ca.certPem);
    }
  });

  it('serves ALL as one SPIFFE validator config with every trust domain', async () => {
    const { ca, partnerCa } = await setup();
    const vc = (await get('ALL')).validation_context!;
    const config = decodeSpiffeConfig(vc.custom_validator_config!.typed_config!.value);
    const byName = new Map(config.trust_domains.map((d) => [d.name, d.trust_bundle?.inline_bytes?.toString()]));
    expect([...byName.keys()].sort()).toEqual(['example.org', 'partner.test']);
    expect(byName.get('example.org')).toBe(ca.certPem);
    expect(byName.get('partner.test')).toBe(partnerCa.certPem);
  });

  it('serves trusted_ca to an Envoy older than 1.18 and to one whose metadata disables SPIFFE validation', async () => {
    const { ca } = await setup();
    for (const node of [envoyNode({ version: [1, 16, 1] }), envoyNode({ metadata: { disable_spiffe_cert_validation: true } })]) {
      const vc = (await get(OTHER_TD, node)).validation_context!;
      expect(vc.custom_validator_config ?? undefined).toBeUndefined();
      expect(vc.trusted_ca?.inline_bytes?.toString()).toContain('BEGIN CERTIFICATE');
      const vcRoot = (await get(TD, node)).validation_context!;
      expect(vcRoot.trusted_ca?.inline_bytes?.toString()).toBe(ca.certPem);
    }
  });

  it('serves trusted_ca to everyone when the server is set to trusted-ca', async () => {
    const { ca } = await setup({ bundleFormat: 'trusted-ca' });
    const vc = (await get(TD)).validation_context!;
    expect(vc.custom_validator_config ?? undefined).toBeUndefined();
    expect(vc.trusted_ca?.inline_bytes?.toString()).toBe(ca.certPem);
  });

  it('pushes an update of one bundle to ALL subscribers', async () => {
    const { ca } = await setup();
    const s = client.stream();
    s.send({ node: envoyNode(), resource_names: ['ALL'], type_url: client.typeUrl });
    const first = await s.next();
    s.send({ version_info: first.version_info, resource_names: ['ALL'], type_url: client.typeUrl, response_nonce: first.nonce });
    const newCa = await rootCa('example.org');
    srv.store.publish('bundle', bundleValue('example.org', ca, newCa));
    const second = await s.next();
    const config = decodeSpiffeConfig(decodeSecret(second.resources[0]!).validation_context!.custom_validator_config!.typed_config!.value);
    const example = config.trust_domains.find((d) => d.name === 'example.org');
    expect(example?.trust_bundle?.inline_bytes?.toString().match(/BEGIN CERTIFICATE/g)).toHaveLength(2);
    s.end();
  });
});
