/**
 * `sds-server fetch NAME --socket PATH`: asks an SDS server (ours, SPIRE's, Istio's) for one
 * secret with a v3 FetchSecrets call (a short StreamSecrets when Fetch is unimplemented) and prints what it holds: for a TLS certificate the chain's
 * subject, SANs, serial, issuer, dates and SHA-256 fingerprint; for a validation context its
 * roots. The private key that comes over the wire is dropped unread and never printed.
 */
import * as grpc from '@grpc/grpc-js';
import { parseArgs } from 'node:util';
import { messageType } from '../api/proto-root.js';
import { ErrorCode, SdsError, describeError } from '../core/errors.js';
import { splitPem } from '../x509/pem.js';
import { summarizeCertificate, type CertificateSummary } from '../x509/certificate-summary.js';

export const FETCH_USAGE = `Usage: sds-server fetch NAME --socket PATH [--json] [--timeout MS]

Fetches one secret over SDS v3 (FetchSecrets, else a short StreamSecrets) from the Unix socket PATH and prints its summary
(never the private key).
`;

const SECRET_TYPE_URL = 'type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret';
const SPIFFE_VALIDATOR_TYPE_URL = 'type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.SPIFFECertValidatorConfig';

export interface FetchedSecret {
  name: string;
  version: string;
  kind: 'tls-certificate' | 'validation-context' | 'other';
  /** TLS certificate: the chain, leaf first. */
  chain?: CertificateSummary[];
  /** Validation context: roots per trust domain (`trustDomain` absent for a plain `trusted_ca`). */
  roots?: Array<{ trustDomain?: string; roots: CertificateSummary[] }>;
}

interface DataSource {
  inlineBytes?: Uint8Array;
  inlineString?: string;
}
interface SecretMsg {
  name?: string;
  tlsCertificate?: { certificateChain?: DataSource };
  validationContext?: { trustedCa?: DataSource; customValidatorConfig?: { typedConfig?: { type_url?: string; typeUrl?: string; value?: Uint8Array } } };
}

const text = (d: DataSource | undefined): string => (d?.inlineString ?? (d?.inlineBytes ? Buffer.from(d.inlineBytes).toString('utf8') : ''));
const certsIn = (pem: string): CertificateSummary[] => splitPem(pem).filter((b) => b.label === 'CERTIFICATE').map((b) => summarizeCertificate(b.der));

/** Decodes an SDS v3 Secret resource into its public summary. */
export function summarizeSecret(bytes: Uint8Array, version: string): FetchedSecret {
  const Secret = messageType('envoy.extensions.transport_sockets.tls.v3.Secret');
  // Only the fields read below are looked at; tlsCertificate.privateKey is never read.
  const s = Secret.toObject(Secret.decode(bytes)) as SecretMsg;
  const name = s.name ?? '';
  if (s.tlsCertificate) return { name, version, kind: 'tls-certificate', chain: certsIn(text(s.tlsCertificate.certificateChain)) };
  const vc = s.validationContext;
  if (vc) {
    const typed = vc.customValidatorConfig?.typedConfig;
    // protobufjs' bundled google.protobuf.Any keeps the snake_case `type_url` (see src/api/secret-encoder.ts).
    if ((typed?.type_url ?? typed?.typeUrl) === SPIFFE_VALIDATOR_TYPE_URL && typed?.value) {
      const Config = messageType('envoy.extensions.transport_sockets.tls.v3.SPIFFECertValidatorConfig');
      const c = Config.toObject(Config.decode(typed.value)) as { trustDomains?: Array<{ name?: string; trustBundle?: DataSource }> };
      return { name, version, kind: 'validation-context', roots: (c.trustDomains ?? []).map((d) => ({ ...(d.name ? { trustDomain: d.name } : {}), roots: certsIn(text(d.trustBundle)) })) };
    }
    return { name, version, kind: 'validation-context', roots: [{ roots: certsIn(text(vc.trustedCa)) }] };
  }
  return { name, version, kind: 'other' };
}

const SERVICE = '/envoy.service.secret.v3.SecretDiscoveryService';

/**
 * FetchSecrets for `name` over the Unix socket `socketPath`; when the server does not implement it
 * (UNIMPLEMENTED: Istio's agent serves StreamSecrets only), a StreamSecrets stream that is closed
 * after its first response. Rejects with the gRPC status text.
 */
export async function fetchSecret(socketPath: string, name: string, timeoutMs = 5_000): Promise<FetchedSecret> {
  const Request = messageType('envoy.service.discovery.v3.DiscoveryRequest');
  const Response = messageType('envoy.service.discovery.v3.DiscoveryResponse');
  const client = new grpc.Client(`unix:${socketPath}`, grpc.credentials.createInsecure());
  const request = Buffer.from(
    Request.encode(
      Request.fromObject({ node: { id: 'sds-server-fetch', cluster: 'sds-server-cli', userAgentName: 'sds-server-fetch' }, resourceNames: [name], typeUrl: SECRET_TYPE_URL }),
    ).finish(),
  );
  const raw = (b: Buffer): Buffer => b;
  const deadline = Date.now() + timeoutMs;
  try {
    let bytes: Buffer;
    try {
      bytes = await new Promise<Buffer>((resolve, reject) => {
        client.makeUnaryRequest(`${SERVICE}/FetchSecrets`, raw, raw, request, { deadline }, (err, value) => (err || !value ? reject(err ?? new SdsError(ErrorCode.FetchFailed, 'empty response')) : resolve(value)));
      });
    } catch (err) {
      if ((err as grpc.ServiceError).code !== grpc.status.UNIMPLEMENTED) throw err;
      bytes = await new Promise<Buffer>((resolve, reject) => {
        const call = client.makeBidiStreamRequest(`${SERVICE}/StreamSecrets`, raw, raw, { deadline });
        call.once('data', (b: Buffer) => {
          resolve(b);
          call.cancel();
        });
        call.once('error', reject);
        call.once('end', () => reject(new SdsError(ErrorCode.FetchFailed, 'the server ended the stream without a response')));
        call.write(request);
      });
    }
    const res = Response.toObject(Response.decode(bytes)) as { versionInfo?: string; resources?: Array<{ typeUrl?: string; value?: Uint8Array }> };
    const resource = res.resources?.[0];
    if (!resource?.value) throw new SdsError(ErrorCode.FetchFailed, `the server answered with no resource for ${name}`);
    return summarizeSecret(resource.value, res.versionInfo ?? '');
  } finally {
    client.close();
  }
}

function certLines(c: CertificateSummary, indent: string): string[] {
  return [
    `${indent}subject:     ${c.subject}`,
    `${indent}SANs:        ${[...c.uris.map((u) => `URI:${u}`), ...c.dnsNames.map((d) => `DNS:${d}`)].join(', ') || '(none)'}`,
    `${indent}serial:      ${c.serialNumber}`,
    `${indent}issuer:      ${c.issuer}`,
    `${indent}not before:  ${c.notBefore}`,
    `${indent}not after:   ${c.notAfter}`,
    `${indent}key:         ${c.keyType}${c.keyTypeProblem ? ` (${c.keyTypeProblem})` : ''}`,
    `${indent}SHA-256:     ${c.fingerprintSha256}`,
  ];
}

export function formatFetched(s: FetchedSecret): string {
  const lines = [`secret ${s.name} (version ${s.version}): ${s.kind}`];
  s.chain?.forEach((c, i) => {
    lines.push(`  ${i === 0 ? 'leaf' : `chain #${i + 1}`}:`, ...certLines(c, '    '));
  });
  for (const d of s.roots ?? []) {
    lines.push(`  roots${d.trustDomain ? ` of trust domain ${d.trustDomain}` : ''}: ${d.roots.length}`);
    d.roots.forEach((c, i) => lines.push(`   root #${i + 1}:`, ...certLines(c, '    ')));
  }
  return lines.join('\n') + '\n';
}

/** The `fetch` subcommand: 0 when the secret was fetched, 1 when the server refused or failed. */
export async function fetchMain(argv: string[], out: (s: string) => void = (s) => process.stdout.write(s)): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      strict: true,
      allowPositionals: true,
      options: { socket: { type: 'string' }, json: { type: 'boolean' }, timeout: { type: 'string' }, help: { type: 'boolean', short: 'h' } },
    });
  } catch (err) {
    throw new SdsError(ErrorCode.ConfigInvalid, `fetch: ${(err as Error).message}\n\n${FETCH_USAGE}`);
  }
  const v = parsed.values;
  if (v.help) {
    out(FETCH_USAGE);
    return 0;
  }
  const [name, ...extra] = parsed.positionals;
  if (name === undefined || extra.length > 0 || v.socket === undefined) throw new SdsError(ErrorCode.ConfigInvalid, `fetch: give one secret NAME and --socket PATH\n\n${FETCH_USAGE}`);
  const timeout = v.timeout === undefined ? 5_000 : Number(v.timeout);
  if (!Number.isInteger(timeout) || timeout <= 0) throw new SdsError(ErrorCode.ConfigInvalid, 'fetch: --timeout expects milliseconds > 0');
  let secret: FetchedSecret;
  try {
    secret = await fetchSecret(v.socket, name, timeout);
  } catch (err) {
    process.stderr.write(`sds-server fetch: ${name}: ${describeError(err)}\n`);
    return 1;
  }
  out(v.json ? JSON.stringify(secret, null, 2) + '\n' : formatFetched(secret));
  return 0;
}
