import { ErrorCode, SdsError } from '../core/errors.js';
import type { Logger } from '../core/logger.js';
import type { CaConfig } from './ca-config.js';
import type { CaBackend } from './ca-backend.js';
import type { CaBackendEnv } from './backend-type.js';
import { CA_BACKEND_TYPES } from './registry.js';

/**
 * Opens the backend `config.backend` names, with its settings (`config[<its key>]`). Only that
 * backend's implementation is imported. Rejects with SDS_ERR_CONFIG_INVALID when its required
 * settings are missing, and with the backend's own error when it cannot open.
 */
export async function createCaBackend(config: CaConfig, log: Logger): Promise<CaBackend> {
  const type = CA_BACKEND_TYPES.find((t) => t.name === config.backend);
  if (!type) throw new SdsError(ErrorCode.ConfigInvalid, `ca.backend: no such CA backend (expected one of ${CA_BACKEND_TYPES.map((t) => t.name).join(', ')})`);
  const settings: unknown = config[type.key];
  if (settings === undefined) throw new SdsError(ErrorCode.ConfigInvalid, `ca.${type.key}: is required when ca.backend is ${type.name}`);
  // `settings` is what `type.schema` parsed; TS cannot pair a union member's create with its key.
  const create = type.create as (settings: unknown, env: CaBackendEnv) => Promise<CaBackend>;
  return create(settings, { trustDomain: config.trustDomain, log });
}
