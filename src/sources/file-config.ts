/**
 * The config file's pieces for secrets read from watched files (src/sources/file-source.ts):
 * `certificates:` entries (a certificate and its key) and `bundles:` entries (trust bundles).
 */
import * as v from 'valibot';
import { filePath, mapping, optional, required, stringList, text, textWith, withDefault, type ConfigContext } from '../core/config-schema.js';
import { parseSpiffeId } from '../x509/spiffe.js';
import { trustDomainName } from '../ca/ca-config.js';

const extraNames = () => withDefault(stringList(text()), 'More names the secret is served under.', []);

/** One `certificates:` entry. */
export function certificateFileSchema(ctx: ConfigContext) {
  return mapping({
    name: required(
      textWith((n) => !n.startsWith('spiffe://') || parseSpiffeId(n) !== undefined, 'is not a valid SPIFFE ID (spiffe://trust-domain/path)'),
      'Secret name Envoy asks for. A SPIFFE ID (`spiffe://example.org/front`) must match the certificate\'s URI SAN.',
    ),
    cert: required(filePath(ctx), 'Certificate chain file (PEM), leaf first.'),
    key: required(filePath(ctx), 'Private key file (PEM) of the leaf.'),
    names: extraNames(),
  });
}

/** One `bundles:` entry; a bundle named by its trust-domain ID takes its trust domain from the name. */
export function bundleFileSchema(ctx: ConfigContext) {
  return v.pipe(
    mapping({
      name: required(text(), 'Secret name Envoy asks for; a trust-domain ID (`spiffe://example.org`) also sets `trustDomain`.'),
      ca: required(
        v.pipe(stringList(filePath(ctx)), v.check((files) => files.length > 0, 'must name at least one CA file')),
        'CA certificate file(s) (PEM): the roots peers are verified against.',
      ),
      trustDomain: optional(trustDomainName(), 'Trust domain of the bundle (for the SPIFFE validator). Default: from `name` when it is a trust-domain ID.'),
      names: extraNames(),
    }),
    v.forward(
      v.partialCheck(
        [['name']],
        (b) => !parseSpiffeId(b.name)?.path,
        (issue) => `has a path; a bundle is named by a trust-domain ID such as spiffe://${parseSpiffeId((issue.input as { name: string }).name)?.trustDomain ?? 'example.org'}`,
      ),
      ['name'],
    ),
    v.transform((b) => {
      const fromName = parseSpiffeId(b.name);
      const trustDomain = b.trustDomain ?? (fromName && fromName.path === '' ? fromName.trustDomain : undefined);
      return { name: b.name, ca: b.ca, names: b.names, ...(trustDomain ? { trustDomain } : {}) };
    }),
  );
}
