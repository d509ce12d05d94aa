/**
 * The one coupling point between authorization and attestation: the attested caller of a
 * connection (contract 3, provided by src/attestation/). Everything in src/authorization/ imports
 * the type from here.
 */
import type { Caller } from '../attestation/types.js';

export type { Caller };

/** `uid=1001 pid=4242 selectors=[unix:uid:1001, ...]`: how a caller is named in refusals and logs. */
export function describeCaller(caller: Caller): string {
  const selectors = caller.selectors.length > 12 ? [...caller.selectors.slice(0, 12), `... ${caller.selectors.length - 12} more`] : caller.selectors;
  return `uid=${caller.uid} pid=${caller.pid} selectors=[${selectors.join(', ')}]`;
}
