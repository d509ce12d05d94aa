/**
 * PEM splitting (RFC 7468) that tolerates CRLF and text around blocks, but reports
 * anything that looks broken, so a file caught mid-write (truncated) is never served.
 *
 * Problem descriptions never contain block contents: a block may be a private key.
 * They name key blocks in lower case too (see {@link labelForMessage}).
 */

export interface PemBlock {
  /** Label between `BEGIN ` and `-----`, e.g. `CERTIFICATE`, `PRIVATE KEY`. */
  label: string;
  /** Normalised PEM text: LF line endings, base64 wrapped at 64 columns, trailing newline. */
  pem: string;
  der: Buffer;
}

export interface PemParse {
  /** Well-formed blocks, in file order. */
  blocks: PemBlock[];
  /** One description per broken block or stray marker (line numbers, labels; never contents). */
  malformed: string[];
}

// Labels with inner hyphens are legal in RFC 7468 but unused in practice; excluding '-' keeps the
// marker pattern unambiguous.
const MARKER = /-----(BEGIN|END) ([^\n-]*)-----/g;
const BASE64_BODY = /^[A-Za-z0-9+/]*={0,2}$/;
// RFC 1421 encapsulated headers (legacy encrypted keys: Proc-Type, DEK-Info).
const HEADER_LINE = /^[A-Za-z][A-Za-z0-9-]*:/;

/** Every well-formed PEM block in `text`; never throws. Use {@link parsePem} to also see broken blocks. */
export function splitPem(text: string): PemBlock[] {
  return parsePem(text).blocks;
}

/**
 * At most this many problem descriptions are kept per parse; the rest are counted in one final
 * entry, so a hostile file cannot make an error message (and every log line quoting it) huge.
 */
export const MAX_PEM_PROBLEMS = 5;

/**
 * Splits `text` into PEM blocks and describes every malformed or truncated block. Never throws.
 * Linear in the length of `text` (one pass over the markers; line numbers are counted
 * incrementally), so a file of a million markers costs milliseconds, not seconds.
 */
export function parsePem(text: string): PemParse {
  const normalised = text.replace(/\r\n?/g, '\n');
  const blocks: PemBlock[] = [];
  const malformed = new BoundedList(MAX_PEM_PROBLEMS);
  let open: { label: string; line: number; bodyStart: number } | undefined;
  const lines = new LineCounter(normalised);

  for (const m of normalised.matchAll(MARKER)) {
    const kind = m[1];
    const label = m[2] ?? '';
    const index = m.index;
    const line = lines.lineAt(index);
    if (kind === 'BEGIN') {
      if (open) malformed.push(unterminated(open.label, open.line));
      open = { label, line, bodyStart: index + m[0].length };
      continue;
    }
    if (!open) {
      malformed.push(`line ${line}: END ${labelForMessage(label)} marker without a matching BEGIN`);
      continue;
    }
    if (label !== open.label) {
      malformed.push(
        `line ${open.line}: BEGIN ${labelForMessage(open.label)} block is closed by END ${labelForMessage(label)} on line ${line}`,
      );
    } else {
      const decoded = decodeBody(normalised.slice(open.bodyStart, index));
      if (typeof decoded === 'string') malformed.push(`line ${open.line}: ${labelForMessage(open.label)} block ${decoded}`);
      else blocks.push({ label, pem: toPem(label, decoded.der, decoded.headers), der: decoded.der });
    }
    open = undefined;
  }
  if (open) malformed.push(unterminated(open.label, open.line));
  return { blocks, malformed: malformed.items() };
}

/** Keeps the first `max` entries and counts the rest. */
class BoundedList {
  private readonly kept: string[] = [];
  private dropped = 0;
  constructor(private readonly max: number) {}
  push(item: string): void {
    if (this.kept.length < this.max) this.kept.push(item);
    else this.dropped++;
  }
  items(): string[] {
    return this.dropped === 0 ? [...this.kept] : [...this.kept, `and ${this.dropped} more problems`];
  }
}

/** 1-based line numbers for increasing offsets into `text`, in time linear in `text` overall. */
class LineCounter {
  private offset = 0;
  private line = 1;
  constructor(private readonly text: string) {}
  /** Line of `index`; `index` must not be smaller than on the previous call. */
  lineAt(index: number): number {
    for (let i = this.text.indexOf('\n', this.offset); i !== -1 && i < index; i = this.text.indexOf('\n', i + 1)) this.line++;
    this.offset = Math.max(this.offset, index);
    return this.line;
  }
}

/** PEM text for DER bytes: 64-column base64, LF line endings, trailing newline. */
export function toPem(label: string, der: Uint8Array | ArrayBuffer, headers: string[] = []): string {
  const b64 = Buffer.from(der instanceof ArrayBuffer ? new Uint8Array(der) : der).toString('base64');
  const lines = b64.match(/.{1,64}/g) ?? [];
  const head = headers.length > 0 ? [...headers, ''] : [];
  return [`-----BEGIN ${label}-----`, ...head, ...lines, `-----END ${label}-----`, ''].join('\n');
}

/**
 * A label as written in operator messages: key labels in lower case (`EC private key`), so that
 * messages never look like, or get grepped as, leaked PEM key material.
 */
export function labelForMessage(label: string): string {
  return label.replace('PRIVATE KEY', 'private key');
}

function unterminated(label: string, line: number): string {
  return `line ${line}: BEGIN ${labelForMessage(label)} block has no END marker (file truncated?)`;
}

/** Strictly decodes a block body; returns a description of the defect instead of throwing. */
function decodeBody(body: string): { der: Buffer; headers: string[] } | string {
  const lines = body.split('\n').map((l) => l.trim());
  while (lines.length > 0 && lines[0] === '') lines.shift();
  const headers: string[] = [];
  if (lines[0] !== undefined && HEADER_LINE.test(lines[0])) {
    // Headers run until the first blank line.
    while (lines.length > 0 && lines[0] !== '') headers.push(lines.shift() ?? '');
  }
  const b64 = lines.join('');
  if (b64 === '') return 'is empty';
  // Buffer.from(.., 'base64') silently skips junk, so validate the alphabet and padding first.
  if (!BASE64_BODY.test(b64) || b64.length % 4 !== 0) return 'has invalid base64';
  const der = Buffer.from(b64, 'base64');
  // An encrypted legacy body (RFC 1421 `Proc-Type: 4,ENCRYPTED`) is ciphertext, not DER.
  const encrypted = headers.some((h) => /^Proc-Type:\s*4\s*,\s*ENCRYPTED\b/i.test(h));
  if (!encrypted && !derLengthMatches(der)) return 'has DER content that is truncated or has trailing bytes';
  return { der, headers };
}

/** True if `der` is exactly one complete TLV: catches bodies that lost lines but still decode. */
function derLengthMatches(der: Buffer): boolean {
  if (der.length < 2) return false;
  const first = der[1] ?? 0;
  if (first < 0x80) return 2 + first === der.length;
  const octets = first & 0x7f;
  if (octets === 0 || octets > 4 || der.length < 2 + octets) return false;
  let len = 0;
  for (let i = 0; i < octets; i++) len = len * 256 + (der[2 + i] ?? 0);
  return 2 + octets + len === der.length;
}
