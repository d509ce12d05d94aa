/**
 * SPIFFE ID syntax (SPIFFE-ID spec, section 2; same rules as go-spiffe's spiffeid package).
 * The restricted character sets rule out ports, userinfo, queries, fragments and percent-encoding.
 */

export interface SpiffeId {
  /** Trust domain name, e.g. `example.org`. */
  trustDomain: string;
  /** `/`-prefixed path, or `''` for a trust-domain ID. */
  path: string;
}

const SCHEME = 'spiffe://';
const TRUST_DOMAIN = /^[a-z0-9._-]+$/;
const PATH_SEGMENT = /^[a-zA-Z0-9._-]+$/;
// Limits from the spec: URIs of at most 2048 bytes, trust domains of at most 255 bytes.
const MAX_ID_LENGTH = 2048;
const MAX_TRUST_DOMAIN_LENGTH = 255;

export function parseSpiffeId(s: string): SpiffeId | undefined {
  // The spec requires the scheme in lower case; all allowed characters are ASCII, so length == bytes.
  if (!s.startsWith(SCHEME) || s.length > MAX_ID_LENGTH) return undefined;
  const rest = s.slice(SCHEME.length);
  const slash = rest.indexOf('/');
  const trustDomain = slash === -1 ? rest : rest.slice(0, slash);
  const path = slash === -1 ? '' : rest.slice(slash);
  if (!isTrustDomainName(trustDomain) || !isValidPath(path)) return undefined;
  return { trustDomain, path };
}

export function isSpiffeId(s: string): boolean {
  return parseSpiffeId(s) !== undefined;
}

/** True for a bare trust domain name such as `example.org` (no scheme). */
export function isTrustDomainName(td: string): boolean {
  return td.length <= MAX_TRUST_DOMAIN_LENGTH && TRUST_DOMAIN.test(td);
}

export function trustDomainId(td: string): string {
  return SCHEME + td;
}

/** True for a SPIFFE ID naming a trust domain itself (`spiffe://example.org`, empty path). */
export function isTrustDomainId(s: string): boolean {
  return parseSpiffeId(s)?.path === '';
}

/** Empty, or `/seg(/seg)*` with no empty, `.` or `..` segments and no trailing slash. */
function isValidPath(path: string): boolean {
  if (path === '') return true;
  return path
    .slice(1)
    .split('/')
    .every((seg) => seg !== '.' && seg !== '..' && PATH_SEGMENT.test(seg));
}
