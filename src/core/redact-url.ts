/**
 * Masks the password in every `scheme://user:password@` inside a text, so a URL with credentials
 * (e.g. a cfssl `url: https://user:secret@ca:8888`) can be quoted in errors, logs and admin output.
 * The user name stays (it helps find the config entry); the password becomes `***`.
 * Shape: any text in, the same text with each userinfo password replaced.
 */
export function redactUrlCredentials(text: string): string {
  // RFC 3986 userinfo: everything before the last `@` of the authority (no `/`, `?`, `#`, spaces).
  return text.replace(/\b([a-z][a-z0-9+.-]*:\/\/)([^/?#@\s:]*):[^/?#\s]*@/gi, '$1$2:***@');
}

/** A URL rendered for messages: its password masked (`https://user:***@host/...`), see redactUrlCredentials. */
export function displayUrl(url: URL | string): string {
  return redactUrlCredentials(url.toString());
}
