import type { Logger } from '../ops/logger.js';
import type { CaConfig } from '../cli/config.js';
import type { CaBackend } from './ca-backend.js';
import { EmbeddedCa } from './embedded/embedded-ca.js';
import { AwsPcaBackend } from './aws-pca/aws-pca-backend.js';

/** The one place that maps configuration to a backend; each backend lives in its own folder. */
export async function createCaBackend(config: CaConfig, log: Logger): Promise<CaBackend> {
  switch (config.backend) {
    case 'embedded':
      return EmbeddedCa.open({
        trustDomain: config.trustDomain,
        log,
        ...(config.embedded.dataDir ? { dataDir: config.embedded.dataDir } : {}),
        ...(config.embedded.caCert ? { caCertFile: config.embedded.caCert } : {}),
        ...(config.embedded.caKey ? { caKeyFile: config.embedded.caKey } : {}),
      });
    case 'aws-pca':
      if (!config.awsPca) throw new Error('ca.awsPca is required for the aws-pca backend');
      return new AwsPcaBackend(config.awsPca);
  }
}
