/**
 * CloudFlare's cfssl (`cfssl serve`, github.com/cloudflare/cfssl) as a CaBackend, over its JSON API.
 *
 * sign():
 *  POST /api/v1/cfssl/authsign (with `authKey`) or /api/v1/cfssl/sign (without) the request
 *  `{certificate_request, hosts, profile, label}`. `hosts` is [spiffeId, ...dnsNames]: cfssl replaces
 *  the CSR's SANs with `hosts`, and since cfssl 1.4 a host that parses as an absolute URI
 *  (`url.ParseRequestURI`) becomes a URI SAN, anything else that is not an IP or e-mail address a DNS
 *  SAN. So the leaf carries exactly the requested identity, whatever the CSR says. (cfssl before 1.4
 *  made `spiffe://...` a DNS SAN; sign() rejects such a certificate with a message saying so.)
 *  authsign wraps the request as `{token, request}`: request = the JSON bytes, token =
 *  HMAC-SHA256(authKey, request), both base64 (cfssl's auth "standard" provider).
 *
 *  Lifetime: cfssl's HTTP API takes no notBefore/notAfter; the lifetime is the profile's. Give
 *  `profiles` (name + lifetime) and sign() picks the longest profile that does not exceed the
 *  requested lifetime (the shortest one if all are longer). cfssl computes
 *  notBefore = now rounded to the minute - backdate, notAfter = notBefore + expiry, so a profile
 *  with `"expiry": "90s", "backdate": "30s"` gives certificates valid from at most a minute ago and
 *  for 60 s (+-30 s) from issuance. Use backdate >= 30s: a smaller one can put notBefore in the future.
 *
 *  The answer holds the leaf only. When cfssl signs with an intermediate (its /info certificate is
 *  not self-signed), that certificate is appended: chainPem = leaf + intermediate.
 *
 * trustBundle(): POST /api/v1/cfssl/info: cfssl's signing certificate. That is the root when cfssl
 * signs with a root. cfssl does not publish the root above an intermediate, so then `rootsPem` must
 * say it (trustBundle() rejects otherwise, rather than hand out an intermediate as a trust anchor).
 *
 * HTTPS: `caPem`, when given, replaces Node's default CA store for the connection to cfssl.
 * Errors name the CA's URL and what it answered: the HTTP status, cfssl's error messages, or an
 * excerpt of a body that is not cfssl's JSON.
 */
import { X509Certificate, createHmac } from 'node:crypto';
import * as http from 'node:http';
import * as https from 'node:https';
import * as x509 from '@peculiar/x509';
import { abortError } from '../../core/abort.js';
import { ErrorCode, SdsError } from '../../core/errors.js';
import { displayUrl, redactUrlCredentials } from '../../core/redact-url.js';
import { isSelfSigned } from '../../x509/certificate-info.js';
import { splitPem } from '../../x509/pem.js';
import type { CaBackend, SignRequest, SignedCertificate } from '../ca-backend.js';
import { CFSSL_DEFAULT_MAX_RESPONSE_BYTES } from './defaults.js';

export interface CfsslProfile {
  /** Profile name in cfssl's `signing.profiles`. */
  name: string;
  /** Lifetime its certificates have from issuance: the profile's expiry - backdate (+-30 s). */
  lifetimeSeconds: number;
}

export interface CfsslOptions {
  /** Base URL of `cfssl serve`, e.g. `https://ca.internal:8888` (a path prefix is kept). */
  url: string;
  /**
   * Hex HMAC key, as in cfssl's `auth_keys` entry of type `standard` that the profiles name in
   * `auth_key`. With it, sign() uses /authsign; without it, the unauthenticated /sign.
   */
  authKey?: string;
  /** Profiles to choose from by requested lifetime (see the file comment). */
  profiles?: CfsslProfile[];
  /** Profile when `profiles` is empty; absent = cfssl's default profile. */
  profile?: string;
  /** cfssl's signer label (multi-root `cfssl multirootca`); usually absent. */
  label?: string;
  /** PEM CA certificate(s) to trust for an https:// `url`; absent = Node's default CA store. */
  caPem?: string;
  /** The root(s) above cfssl's signing certificate when that is an intermediate. */
  rootsPem?: string[];
  /** Largest response body accepted, bytes. Default {@link CFSSL_DEFAULT_MAX_RESPONSE_BYTES} (1 MiB). */
  maxResponseBytes?: number;
}

interface CfsslEnvelope {
  success?: unknown;
  result?: unknown;
  errors?: unknown;
}

const EXCERPT = 200;

export class CfsslBackend implements CaBackend {
  readonly kind = 'cfssl';
  private readonly base: URL;
  private readonly authKey: Buffer | undefined;
  private readonly profiles: CfsslProfile[];
  private readonly agent: http.Agent;
  private readonly maxResponseBytes: number;
  private readonly rootsPem: string[] | undefined;
  /** cfssl's signing certificate from the last /info, to append when it is an intermediate. */
  private signerCert: X509Certificate | undefined;
  private closed = false;

  constructor(private readonly opts: CfsslOptions) {
    let base: URL;
    try {
      base = new URL(opts.url);
    } catch {
      throw new SdsError(ErrorCode.ConfigInvalid, `cfssl: url ${JSON.stringify(redactUrlCredentials(opts.url))} is not a URL`);
    }
    if (base.protocol !== 'http:' && base.protocol !== 'https:') throw new SdsError(ErrorCode.ConfigInvalid, `cfssl: url ${displayUrl(base)} must be http:// or https://`);
    if (!base.pathname.endsWith('/')) base.pathname += '/';
    this.base = base;
    if (opts.authKey !== undefined) {
      if (!/^(?:[0-9a-fA-F]{2})+$/.test(opts.authKey)) throw new SdsError(ErrorCode.ConfigInvalid, 'cfssl: authKey must be a hex string (as in cfssl auth_keys)');
      this.authKey = Buffer.from(opts.authKey, 'hex');
    }
    this.profiles = [...(opts.profiles ?? [])].sort((a, b) => a.lifetimeSeconds - b.lifetimeSeconds);
    for (const p of this.profiles) {
      if (!p.name || !(p.lifetimeSeconds > 0)) throw new SdsError(ErrorCode.ConfigInvalid, `cfssl: profile ${JSON.stringify(p)} needs a name and a positive lifetimeSeconds`);
    }
    if (opts.rootsPem !== undefined) {
      this.rootsPem = opts.rootsPem.flatMap((text) => splitPem(text).filter((b) => b.label === 'CERTIFICATE').map((b) => b.pem));
      if (this.rootsPem.length === 0) throw new SdsError(ErrorCode.ConfigInvalid, 'cfssl: rootsPem holds no certificate');
    }
    this.maxResponseBytes = opts.maxResponseBytes ?? CFSSL_DEFAULT_MAX_RESPONSE_BYTES;
    this.agent =
      base.protocol === 'https:'
        ? new https.Agent({ keepAlive: true, ...(opts.caPem !== undefined ? { ca: opts.caPem } : {}) })
        : new http.Agent({ keepAlive: true });
  }

  /** The profile sign() uses for a requested lifetime (undefined = cfssl's default profile). */
  profileFor(lifetimeSeconds: number): string | undefined {
    if (this.profiles.length === 0) return this.opts.profile;
    let chosen = this.profiles[0];
    for (const p of this.profiles) if (p.lifetimeSeconds <= lifetimeSeconds) chosen = p;
    return chosen?.name;
  }

  async sign(request: SignRequest, signal: AbortSignal): Promise<SignedCertificate> {
    this.checkUsable(signal);
    const profile = this.profileFor(request.lifetimeSeconds);
    const signRequest = {
      certificate_request: request.csrPem,
      hosts: [request.spiffeId, ...request.dnsNames],
      ...(profile !== undefined ? { profile } : {}),
      ...(this.opts.label !== undefined ? { label: this.opts.label } : {}),
    };
    let path: string;
    let body: unknown;
    if (this.authKey) {
      const requestBytes = Buffer.from(JSON.stringify(signRequest), 'utf8');
      const token = createHmac('sha256', this.authKey).update(requestBytes).digest();
      path = 'api/v1/cfssl/authsign';
      body = { token: token.toString('base64'), request: requestBytes.toString('base64') };
    } else {
      path = 'api/v1/cfssl/sign';
      body = signRequest;
    }
    const result = await this.post(path, body, signal);
    const leafPem = this.certificateField(path, result);
    const leaf = new X509Certificate(leafPem);
    checkUriSan(leafPem, request.spiffeId, this.where(path));

    let issuer = this.signerCert;
    if (!issuer || !leaf.checkIssued(issuer)) {
      issuer = await this.fetchSigner(signal); // first sign, or cfssl's CA changed (rollover)
    }
    const chain = [leafPem];
    if (leaf.checkIssued(issuer) && !isSelfSigned(issuer)) chain.push(issuer.toString());
    return { chainPem: chain.map(normalise).join('') };
  }

  async trustBundle(signal: AbortSignal): Promise<string[]> {
    this.checkUsable(signal);
    const signer = await this.fetchSigner(signal);
    if (isSelfSigned(signer)) return [normalise(signer.toString())];
    if (this.rootsPem) return [...this.rootsPem];
    throw new SdsError(
      ErrorCode.ConfigInvalid,
      `cfssl at ${this.where('api/v1/cfssl/info')} signs with an intermediate (${oneLine(signer.subject)}, issued by ${oneLine(signer.issuer)}); ` +
        'cfssl does not publish the root above it, so configure it as rootsPem',
    );
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.agent.destroy();
  }

  private async fetchSigner(signal: AbortSignal): Promise<X509Certificate> {
    const path = 'api/v1/cfssl/info';
    const result = await this.post(path, {
      ...(this.opts.label !== undefined ? { label: this.opts.label } : {}),
      ...(this.opts.profile !== undefined ? { profile: this.opts.profile } : {}),
    }, signal);
    const cert = new X509Certificate(this.certificateField(path, result));
    this.signerCert = cert;
    return cert;
  }

  /** The single PEM certificate in `result.certificate`, or an Error saying what was there instead. */
  private certificateField(path: string, result: unknown): string {
    const value = isObject(result) ? result['certificate'] : undefined;
    if (typeof value !== 'string' || value.trim() === '') {
      throw new SdsError(ErrorCode.CaUnavailable, `cfssl at ${this.where(path)} answered without a certificate (result: ${excerpt(JSON.stringify(result) ?? 'undefined')})`);
    }
    const blocks = splitPem(value).filter((b) => b.label === 'CERTIFICATE');
    const first = blocks[0];
    if (!first) throw new SdsError(ErrorCode.CaUnavailable, `cfssl at ${this.where(path)} answered a "certificate" that is not a PEM certificate: ${excerpt(value)}`);
    try {
      new X509Certificate(first.der);
    } catch (err) {
      throw new SdsError(ErrorCode.CaUnavailable, `cfssl at ${this.where(path)} answered a certificate that does not parse: ${(err as Error).message}`);
    }
    return first.pem;
  }

  /** POSTs JSON and returns cfssl's `result`, or rejects with what the server answered. */
  private async post(path: string, body: unknown, signal: AbortSignal): Promise<unknown> {
    const url = new URL(path, this.base);
    const where = this.where(path);
    const payload = Buffer.from(JSON.stringify(body), 'utf8');
    const { status, text } = await this.request(url, payload, signal, where);
    let envelope: CfsslEnvelope;
    try {
      envelope = JSON.parse(text) as CfsslEnvelope;
    } catch {
      if (status < 200 || status >= 300) throw new SdsError(ErrorCode.CaUnavailable, `cfssl at ${where} answered HTTP ${status}: ${excerpt(text)}`);
      throw new SdsError(ErrorCode.CaUnavailable, `cfssl at ${where} answered HTTP ${status} with a body that is not JSON: ${excerpt(text)}`);
    }
    if (!isObject(envelope)) throw new SdsError(ErrorCode.CaUnavailable, `cfssl at ${where} answered HTTP ${status} with JSON that is not an object: ${excerpt(text)}`);
    const messages = Array.isArray(envelope.errors)
      ? envelope.errors.map((e) => (isObject(e) ? `${String(e['message'] ?? '')}${e['code'] !== undefined ? ` (code ${String(e['code'])})` : ''}` : String(e)))
      : [];
    if (status < 200 || status >= 300 || envelope.success !== true) {
      const what = messages.length > 0 ? messages.join('; ') : excerpt(text);
      throw new SdsError(ErrorCode.CaUnavailable, `cfssl at ${where} answered HTTP ${status}: ${what}`);
    }
    return envelope.result;
  }

  private request(url: URL, payload: Buffer, signal: AbortSignal, where: string): Promise<{ status: number; text: string }> {
    return new Promise((resolve, reject) => {
      if (signal.aborted) {
        reject(this.aborted(where, signal));
        return;
      }
      const transport = url.protocol === 'https:' ? https : http;
      let settled = false;
      const settle = (fn: () => void): void => {
        if (settled) return;
        settled = true;
        signal.removeEventListener('abort', onAbort);
        fn();
      };
      const req = transport.request(url, {
        method: 'POST',
        agent: this.agent,
        headers: { 'content-type': 'application/json', 'content-length': payload.length, accept: 'application/json' },
      });
      const onAbort = (): void => {
        settle(() => reject(this.aborted(where, signal)));
        req.destroy();
      };
      signal.addEventListener('abort', onAbort, { once: true });
      req.on('error', (err: NodeJS.ErrnoException) => settle(() => reject(connectionError(where, err))));
      req.on('response', (res) => {
        const chunks: Buffer[] = [];
        let size = 0;
        res.on('data', (chunk: Buffer) => {
          size += chunk.length;
          if (size > this.maxResponseBytes) {
            settle(() => reject(new SdsError(ErrorCode.CaUnavailable, `cfssl at ${where} answered HTTP ${res.statusCode ?? 0} with a body over ${this.maxResponseBytes} bytes`)));
            req.destroy();
            return;
          }
          chunks.push(chunk);
        });
        res.on('end', () => settle(() => resolve({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString('utf8') })));
        res.on('error', (err) => settle(() => reject(new SdsError(ErrorCode.CaUnavailable, `cfssl at ${where}: the answer broke off: ${err.message}`, { cause: err }))));
      });
      req.end(payload);
    });
  }

  /** The URL for messages, its password masked: errors reach logs and /status. */
  private where(path: string): string {
    return displayUrl(new URL(path, this.base));
  }

  private checkUsable(signal: AbortSignal): void {
    if (this.closed) throw new SdsError(ErrorCode.Internal, `cfssl at ${displayUrl(this.base)}: used after close()`);
    if (signal.aborted) throw this.aborted(displayUrl(this.base), signal);
  }

  private aborted(where: string, signal: AbortSignal): SdsError {
    return abortError(ErrorCode.CaUnavailable, `cfssl request to ${where}`, signal);
  }
}

/** cfssl < 1.4 turns `spiffe://...` in `hosts` into a DNS SAN; say so instead of a vague mismatch. */
function checkUriSan(leafPem: string, spiffeId: string, where: string): void {
  const san = new x509.X509Certificate(leafPem).getExtension(x509.SubjectAlternativeNameExtension);
  const names = san?.names.toJSON() ?? [];
  if (names.some((n) => n.type === 'url' && n.value === spiffeId)) return;
  const asDns = names.some((n) => n.type === 'dns' && n.value === spiffeId);
  throw new SdsError(
    ErrorCode.SpiffeIdMismatch,
    `cfssl at ${where} issued a certificate without the URI SAN ${spiffeId}` +
      (asDns ? ' (it made it a DNS name: cfssl older than 1.4 does not put URIs from `hosts` into URI SANs)' : ` (SANs: ${names.map((n) => `${n.type}:${n.value}`).join(', ') || 'none'})`),
  );
}

function connectionError(where: string, err: NodeJS.ErrnoException): SdsError {
  const detail = err.code && !err.message.includes(err.code) ? `${err.code}: ${err.message}` : err.message;
  const tls = /CERT|UNABLE_TO|SELF_SIGNED|ERR_TLS|ERR_SSL/.test(err.code ?? '');
  const what = tls ? 'failed the TLS handshake (is caPem the CA of its HTTPS certificate?)' : 'is unreachable';
  return new SdsError(ErrorCode.CaUnavailable, `cfssl at ${where} ${what}: ${detail}`, { cause: err });
}


function normalise(pem: string): string {
  const block = splitPem(pem)[0];
  return block ? block.pem : pem;
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function oneLine(s: string): string {
  return s.replace(/\n/g, ', ');
}

function excerpt(text: string): string {
  const flat = text.replace(/\s+/g, ' ').trim();
  if (flat === '') return '(empty body)';
  return flat.length > EXCERPT ? `${JSON.stringify(flat.slice(0, EXCERPT))}...` : JSON.stringify(flat);
}
