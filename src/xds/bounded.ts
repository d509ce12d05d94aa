/**
 * Bounds on client-supplied text that reaches a gRPC status or a log line. A client controls
 * resource names, nonces, node ids and NACK reasons; echoing them whole lets one request make a
 * `grpc-message` header too large to deliver (the client then never learns why its stream ended)
 * or write megabyte log lines. Everything the protocol layer echoes goes through these helpers.
 */

/** Longest single name (in UTF-16 code units) quoted in a message or log line. */
export const MAX_ECHOED_NAME = 100;
/** How many names a message or log line lists before summarising the rest as a count. */
export const MAX_ECHOED_NAMES = 3;
/** Longest free text (NACK reason, denial reason, type URL) echoed in a message or log line. */
export const MAX_ECHOED_TEXT = 512;

/** `text` cut to `max` code units, with the number of dropped ones appended when cut. */
export function boundText(text: string, max = MAX_ECHOED_TEXT): string {
  if (text.length <= max) return text;
  return `${text.slice(0, max)}...(${text.length - max} more chars)`;
}

/** A name quoted for a message: JSON string of the name, cut to MAX_ECHOED_NAME code units. */
export function quoteName(name: string): string {
  return JSON.stringify(boundText(name, MAX_ECHOED_NAME));
}

/**
 * `"a", "b", "c" and 9997 more (10000 names)`: at most MAX_ECHOED_NAMES quoted names, each
 * bounded, then the count of the rest. Output length is bounded whatever the input.
 */
export function describeNames(names: readonly string[]): string {
  const shown = names.slice(0, MAX_ECHOED_NAMES).map(quoteName).join(', ');
  const rest = names.length - MAX_ECHOED_NAMES;
  return rest > 0 ? `${shown} and ${rest} more (${names.length} names)` : shown;
}

/** At most MAX_ECHOED_NAMES names, each bounded, for a structured log field. */
export function namesForLog(names: Iterable<string>): string[] {
  const out: string[] = [];
  for (const name of names) {
    if (out.length === MAX_ECHOED_NAMES) break;
    out.push(boundText(name, MAX_ECHOED_NAME));
  }
  return out;
}

/**
 * Longest resource name accepted, in UTF-16 code units: the SPIFFE ID limit (2048 bytes, SPIFFE
 * ID specification section 2.3), which bounds every name this server serves. A longer name can
 * never be configured; refusing it keeps a client from making the server hold megabytes of names.
 */
export const MAX_RESOURCE_NAME = 2048;

/**
 * Most names one Delta stream may hold subscribed. Envoy names one secret per stream (an ADS
 * client a few); Delta keeps an unknown name subscribed (it may be configured later), so without a
 * bound one stream could make the server hold any number of names.
 */
export const MAX_SUBSCRIBED_NAMES = 1024;

/** The first name longer than MAX_RESOURCE_NAME, if any. */
export function firstOverlongName(names: readonly string[]): string | undefined {
  for (const name of names) if (name.length > MAX_RESOURCE_NAME) return name;
  return undefined;
}
