/** Largest cfssl response body accepted (bytes), unless `ca.cfssl.maxResponseBytes` says otherwise. */
export const CFSSL_DEFAULT_MAX_RESPONSE_BYTES = 1024 * 1024;
