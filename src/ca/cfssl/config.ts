import * as v from 'valibot';
import { durationSeconds, filePath, integer, list, mapping, matching, optional, optionalDefaultedElsewhere, required, text, type ConfigContext } from '../../core/config-schema.js';
import { ErrorCode, SdsError } from '../../core/errors.js';
import { readSecretFileOrThrow } from '../../core/read-secret-file.js';
import { defineCaBackend } from '../backend-type.js';
import { CFSSL_DEFAULT_MAX_RESPONSE_BYTES } from './defaults.js';


/** CloudFlare's cfssl (`cfssl serve`) over its JSON API. The HMAC key is never in the config itself. */
export const cfsslType = defineCaBackend({
  name: 'cfssl',
  key: 'cfssl',
  description: 'CloudFlare\'s cfssl (`cfssl serve` or `multirootca`) over its JSON API. The HMAC auth key is read from a file or an environment variable, never from this file.',
  schema: (ctx: ConfigContext) =>
    v.pipe(
      mapping({
        url: required(matching(/^https?:\/\//, 'an http(s):// URL'), 'Base URL of `cfssl serve`, e.g. `https://ca.internal:8888` (a path prefix is kept).'),
        authKeyFile: optional(filePath(ctx), 'File holding the hex HMAC key of cfssl\'s `auth_keys` entry (type `standard`): requests go to `/authsign`. Without a key, to the unauthenticated `/sign`.'),
        authKeyEnv: optional(text(), 'Environment variable holding that key (when `authKeyFile` is not given).'),
        profile: optional(text(), 'cfssl signing profile, when `profiles` is empty. Default: cfssl\'s default profile.'),
        profiles: optional(
          list(
            v.pipe(
              mapping({
                name: required(text(), 'Profile name in cfssl\'s `signing.profiles`.'),
                lifetime: required(durationSeconds(), 'Lifetime its certificates have from issuance: the profile\'s `expiry` minus `backdate`.'),
              }),
              v.transform((p) => ({ name: p.name, lifetimeSeconds: p.lifetime })),
            ),
          ),
          'Profiles to choose from by requested lifetime: the longest one that does not exceed it (the shortest when all are longer). cfssl\'s API takes no lifetime; the profile sets it.',
        ),
        label: optional(text(), 'cfssl signer label (`multirootca` with several roots). Usually absent.'),
        caFile: optional(filePath(ctx), 'CA certificate(s) (PEM) to trust for an https:// `url`. Default: Node\'s CA store.'),
        rootsFile: optional(filePath(ctx), 'The root(s) above cfssl\'s signing certificate, when cfssl signs with an intermediate (cfssl does not publish them).'),
        maxResponseBytes: optionalDefaultedElsewhere(integer(1024), 'Largest response body accepted from cfssl, in bytes.', CFSSL_DEFAULT_MAX_RESPONSE_BYTES),
      }),
      v.description('Settings of the cfssl backend (required when `ca.backend` is `cfssl`).'),
    ),
  create: async (s) => {
    const { CfsslBackend } = await import('./cfssl-backend.js');
    const authKey = s.authKeyFile ? (await readSecretFileOrThrow(s.authKeyFile)).trim() : s.authKeyEnv ? process.env[s.authKeyEnv] : undefined;
    if ((s.authKeyFile || s.authKeyEnv) && !authKey) {
      throw new SdsError(ErrorCode.ConfigInvalid, `ca.cfssl: the auth key in ${s.authKeyFile ?? `$${s.authKeyEnv}`} is empty`);
    }
    return new CfsslBackend({
      url: s.url,
      ...(authKey ? { authKey } : {}),
      ...(s.profile ? { profile: s.profile } : {}),
      ...(s.profiles ? { profiles: s.profiles } : {}),
      ...(s.label ? { label: s.label } : {}),
      ...(s.maxResponseBytes ? { maxResponseBytes: s.maxResponseBytes } : {}),
      ...(s.caFile ? { caPem: await readSecretFileOrThrow(s.caFile) } : {}),
      ...(s.rootsFile ? { rootsPem: [await readSecretFileOrThrow(s.rootsFile)] } : {}),
    });
  },
});
