/**
 * Configuration of the CA that issues identities (`ca:` in the config file): the settings every
 * backend shares, and each registered backend's own settings under its key (src/ca/registry.ts).
 */
import * as v from 'valibot';
import { AS_WRITTEN, fraction, mapping, milliseconds, maybe, unwrap, oneOf, section, stringList, text, textWith, withDefault, type ConfigContext } from '../core/config-schema.js';
import { isTrustDomainName } from '../x509/spiffe.js';
import { CA_BACKEND_TYPES, type AnyCaBackendType } from './registry.js';

export const CA_BACKENDS = CA_BACKEND_TYPES.map((t) => t.name) as [AnyCaBackendType['name'], ...Array<AnyCaBackendType['name']>];
export type CaBackendName = AnyCaBackendType['name'];

/** A backend's settings as a field of `ca:`: optional unless the backend's schema gives a default. */
type SettingsEntry<S> = S extends v.NullishSchema<v.GenericSchema, unknown> ? S : ReturnType<typeof maybe<S & v.GenericSchema>>;
type BackendEntries = { [T in AnyCaBackendType as T['key']]: SettingsEntry<ReturnType<T['schema']>> };

function backendEntries(ctx: ConfigContext): BackendEntries {
  const entries = CA_BACKEND_TYPES.map((t) => {
    const schema: v.GenericSchema = t.schema(ctx);
    return [t.key, schema.type === 'nullish' ? schema : maybe(schema)] as const;
  });
  // Built from the registry, so the keys are the mapped type's keys; TS cannot follow fromEntries.
  return Object.fromEntries(entries) as unknown as BackendEntries;
}

/** A trust domain name (`example.org`), as SPIFFE defines it. */
export const trustDomainName = () => textWith(isTrustDomainName, 'is not a valid trust domain name (like example.org)');

/** The `ca:` mapping (the top-level schema makes it a section that may be left out). */
export function caConfigSchema(ctx: ConfigContext) {
  return mapping({
      backend: withDefault(oneOf(CA_BACKENDS), 'Which CA issues `identities` (and on-demand identities from `identityTemplate`).', 'embedded'),
      trustDomain: withDefault(trustDomainName(), 'The CA\'s trust domain: every issued SPIFFE ID is in it, and its bundle is served as `spiffe://<trustDomain>`.', 'example.org'),
      bundleNames: withDefault(stringList(text()), 'Extra names the CA\'s trust bundle is served under.', []),
      renewFraction: withDefault(fraction(1), 'Renew an identity when this fraction of its lifetime has passed.', 0.5),
      jitterFraction: withDefault(fraction(0.5), 'Renewal time varies by +- this fraction of the lifetime, so a fleet does not renew at once.', 0.05),
      timeoutMs: withDefault(milliseconds(1), 'Per CA call, milliseconds: a slower answer is a failed attempt, retried with backoff.', 10_000),
      backoff: section(
        mapping({
          initialMs: withDefault(milliseconds(1), 'First retry delay after a failed issuance, milliseconds (doubles each time).', 1000),
          maxMs: withDefault(milliseconds(1), 'Longest retry delay, milliseconds.', 60_000),
        }),
        'Retry delays after a failed issuance.',
      ),
      bundleRefreshMs: withDefault(milliseconds(0), 'How often the CA\'s roots are re-read to notice a rollover, milliseconds (0 = never).', 60_000),
      bundlePropagationMs: withDefault(milliseconds(0), 'After a new root is published, wait this long (ms) before serving leaves that need it, so peers have it first.', 2000),
      ...backendEntries(ctx),
  });
}

export const CA_DESCRIPTION = 'The CA that issues identities (the embedded CA by default).';

/** Configuration of the CA that issues identities: which backend, the shared settings, and each backend's own. */
export type CaConfig = v.InferOutput<ReturnType<typeof caConfigSchema>>;

/** The CA settings when the config file says nothing (every default, from the schema). */
export function defaultCaConfig(): CaConfig {
  return v.parse(caConfigSchema(AS_WRITTEN), {});
}

/**
 * The files the chosen backend reads at start (its settings' `file path` fields), as
 * `[field path, file]`, for `sds-server check`. Declared by the backend's schema, not listed here.
 */
export function caFilesToRead(ca: CaConfig): Array<[string, string]> {
  const type = CA_BACKEND_TYPES.find((t) => t.name === ca.backend);
  const settings = type ? (ca[type.key] as Record<string, unknown> | undefined) : undefined;
  if (!type || !settings) return [];
  const entries = (unwrap(type.schema(AS_WRITTEN)).base as v.GenericSchema & { entries?: v.ObjectEntries }).entries ?? {};
  return Object.entries(entries).flatMap(([key, schema]): Array<[string, string]> => {
    const value = settings[key];
    return unwrap(schema).doc.type === 'file path' && typeof value === 'string' ? [[`ca.${type.key}.${key}`, value]] : [];
  });
}
