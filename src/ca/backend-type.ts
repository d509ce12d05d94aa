/**
 * What a CA backend registers (src/ca/registry.ts): its name, its settings schema (under
 * `ca.<key>` in the config file) and a factory that loads the implementation only when that
 * backend is chosen, so a server that does not use it never pays for its import (the AWS SDK alone
 * costs more than the rest of start-up).
 */
import type * as v from 'valibot';
import type { ConfigContext } from '../core/config-schema.js';
import type { Logger } from '../core/logger.js';
import type { CaBackend } from './ca-backend.js';

/** What every backend is given besides its own settings. */
export interface CaBackendEnv {
  trustDomain: string;
  log: Logger;
}

export interface CaBackendType<Name extends string, Key extends string, S extends v.GenericSchema> {
  /** The value of `ca.backend` that selects it. */
  readonly name: Name;
  /** Its settings' key under `ca:` (`ca.cfssl`, `ca.awsPca`). */
  readonly key: Key;
  /** One line for docs/configuration.md. */
  readonly description: string;
  /**
   * Its settings (file paths resolved through `ctx`). A schema with a default (`{}`) makes the
   * settings optional even when the backend is chosen; without one, choosing it requires them.
   */
  schema(ctx: ConfigContext): S;
  /** Opens the backend: dynamic-imports its implementation. Rejects with an SdsError on bad settings. */
  create(settings: v.InferOutput<S>, env: CaBackendEnv): Promise<CaBackend>;
}

/** Declares a backend (typed, so `create` sees the parsed settings of `schema`). */
export function defineCaBackend<const Name extends string, const Key extends string, S extends v.GenericSchema>(
  type: CaBackendType<Name, Key, S>,
): CaBackendType<Name, Key, S> {
  return type;
}
