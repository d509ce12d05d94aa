import * as v from 'valibot';
import { filePath, mapping, optional, section, type ConfigContext } from '../../core/config-schema.js';
import { defineCaBackend } from '../backend-type.js';

/** The embedded CA (the default): a root generated and kept in `dataDir`, or one the operator gives. */
export const embeddedCaType = defineCaBackend({
  name: 'embedded',
  key: 'embedded',
  description: 'A CA inside the server (the default): a root generated on first start and kept in `dataDir`, or one you give (`caCert` + `caKey`).',
  schema: (ctx: ConfigContext) =>
    section(
      v.pipe(
        mapping({
          dataDir: optional(filePath(ctx, 'directory'), 'Where a generated root is kept (ca.crt 0644, ca.key 0600), so restarts keep the same trust. Default: `$XDG_DATA_HOME` or `~/.local/share`, then `sds-server/ca/<trust domain>`.'),
          caCert: optional(filePath(ctx), 'Your own CA certificate (PEM), instead of a generated root. Needs `caKey`.'),
          caKey: optional(filePath(ctx), 'The private key of `caCert` (PEM). Needs `caCert`.'),
        }),
        v.check((e) => (e.caCert === undefined) === (e.caKey === undefined), 'give both caCert and caKey, or neither'),
      ),
      'Settings of the embedded CA.',
    ),
  create: async (s, env) => {
    const { EmbeddedCa } = await import('./embedded-ca.js');
    return EmbeddedCa.open({
      trustDomain: env.trustDomain,
      log: env.log,
      ...(s.dataDir ? { dataDir: s.dataDir } : {}),
      ...(s.caCert ? { caCertFile: s.caCert } : {}),
      ...(s.caKey ? { caKeyFile: s.caKey } : {}),
    });
  },
});
