import { readSecretFileOrThrow } from '../core/read-secret-file.js';
import type { Logger } from '../core/logger.js';
import type { CaConfig } from './ca-config.js';
import type { CaBackend } from './ca-backend.js';
import fs from 'node:fs/promises';

/**
 * The one place that maps configuration to a backend; each backend lives in its own folder and is
 * imported only when configured (the AWS SDK alone costs more start-up time than a whole server).
 */
export async function createCaBackend(config: CaConfig, log: Logger): Promise<CaBackend> {
  switch (config.backend) {
    case 'embedded': {
      const { EmbeddedCa } = await import('./embedded/embedded-ca.js');
      return EmbeddedCa.open({
        trustDomain: config.trustDomain,
        log,
        ...(config.embedded.dataDir ? { dataDir: config.embedded.dataDir } : {}),
        ...(config.embedded.caCert ? { caCertFile: config.embedded.caCert } : {}),
        ...(config.embedded.caKey ? { caKeyFile: config.embedded.caKey } : {}),
      });
    }
    case 'aws-pca': {
      if (!config.awsPca) throw new Error('ca.awsPca is required for the aws-pca backend');
      const { AwsPcaBackend } = await import('./aws-pca/aws-pca-backend.js');
      return new AwsPcaBackend(config.awsPca);
    }
    case 'cfssl': {
      const c = config.cfssl;
      if (!c) throw new Error('ca.cfssl is required for the cfssl backend');
      const authKey = c.authKeyFile ? (await readSecretFileOrThrow(c.authKeyFile)).trim() : c.authKeyEnv ? process.env[c.authKeyEnv] : undefined;
      if ((c.authKeyFile || c.authKeyEnv) && !authKey) throw new Error(`cfssl: the auth key in ${c.authKeyFile ?? `$${c.authKeyEnv}`} is empty`);
      const { CfsslBackend } = await import('./cfssl/cfssl-backend.js');
      return new CfsslBackend({
        url: c.url,
        ...(authKey ? { authKey } : {}),
        ...(c.profile ? { profile: c.profile } : {}),
        ...(c.caFile ? { caPem: await readSecretFileOrThrow(c.caFile) } : {}),
        ...(c.rootsFile ? { rootsPem: [await readSecretFileOrThrow(c.rootsFile)] } : {}),
      });
    }
  }
}
