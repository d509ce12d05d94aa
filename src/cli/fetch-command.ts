/**
 * `sds-server fetch NAME [--socket PATH]`: asks an SDS server (ours, SPIRE's, Istio's) for one
 * secret with a v3 FetchSecrets call (a short StreamSecrets when Fetch is unimplemented) and prints what it holds: for a TLS certificate the chain's
 * subject, SANs, serial, issuer, dates and SHA-256 fingerprint; for a validation context its
 * roots. The private key that comes over the wire is dropped unread and never printed.
 */
import * as grpc from '@grpc/grpc-js';
import { parseArgs } from 'node:util';
import { decodeAs, messageType } from '../api/proto-root.js';
import type { DiscoveryRequest } from '../api/generated/envoy/service/discovery/v3/DiscoveryRequest.js';
import type { DiscoveryResponse__Output } from '../api/generated/envoy/service/discovery/v3/DiscoveryResponse.js';
import type { Secret__Output } from '../api/generated/envoy/extensions/transport_sockets/tls/v3/Secret.js';
import type { SPIFFECertValidatorConfig__Output } from '../api/generated/envoy/extensions/transport_sockets/tls/v3/SPIFFECertValidatorConfig.js';
import type { DataSource__Output } from '../api/generated/envoy/config/core/v3/DataSource.js';
import { ErrorCode, SdsError, describeError } from '../core/errors.js';
import { resolveSocketPath } from '../server/unix-socket.js';
import { splitPem } from '../x509/pem.js';
import { summarizeCertificate, type CertificateSummary } from '../x509/certificate-summary.js';

export const FETCH_USAGE = `Usage: sds-server fetch NAME [--socket PATH] [--json] [--timeout MS]

Fetches one secret over SDS v3 (FetchSecrets, else a short StreamSecrets) from the Unix socket PATH and prints its summary
(never the private key). Without --socket: the server's own default, $APPMESH_SDS_SOCKET_PATH, else
$XDG_RUNTIME_DIR/sds-server/sds.sock, else <tmpdir>/sds-server-<uid>/sds.sock.
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

const text = (d: DataSource__Output | null | undefined): string => d?.inline_string ?? d?.inline_bytes?.toString('utf8') ?? '';
const certsIn = (pem: string): CertificateSummary[] => splitPem(pem).filter((b) => b.label === 'CERTIFICATE').map((b) => summarizeCertificate(b.der));

/** Decodes an SDS v3 Secret resource into its public summary. */
export function summarizeSecret(bytes: Buffer, version: string): FetchedSecret {
  // Only the fields read below are looked at; tls_certificate.private_key is never read.
  const s = decodeAs<Secret__Output>(messageType('envoy.extensions.transport_sockets.tls.v3.Secret'), bytes);
  const name = s.name;
  if (s.tls_certificate) return { name, version, kind: 'tls-certificate', chain: certsIn(text(s.tls_certificate.certificate_chain)) };
  const vc = s.validation_context;
  if (vc) {
    const typed = vc.custom_validator_config?.typed_config;
    if (typed?.type_url === SPIFFE_VALIDATOR_TYPE_URL) {
      const c = decodeAs<SPIFFECertValidatorConfig__Output>(messageType('envoy.extensions.transport_sockets.tls.v3.SPIFFECertValidatorConfig'), typed.value);
      return { name, version, kind: 'validation-context', roots: c.trust_domains.map((d) => ({ ...(d.name ? { trustDomain: d.name } : {}), roots: certsIn(text(d.trust_bundle)) })) };
    }
    return { name, version, kind: 'validation-context', roots: [{ roots: certsIn(text(vc.trusted_ca)) }] };
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
  const requestObj: DiscoveryRequest = { node: { id: 'sds-server-fetch', cluster: 'sds-server-cli', user_agent_name: 'sds-server-fetch' }, resource_names: [name], type_url: SECRET_TYPE_URL };
  const request = Buffer.from(Request.encode(Request.fromObject(requestObj)).finish());
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
    const res = decodeAs<DiscoveryResponse__Output>(Response, bytes);
    const resource = res.resources[0];
    if (!resource?.value.length) throw new SdsError(ErrorCode.FetchFailed, `the server answered with no resource for ${name}`);
    return summarizeSecret(resource.value, res.version_info);
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
  if (name === undefined || extra.length > 0) throw new SdsError(ErrorCode.ConfigInvalid, `fetch: give one secret NAME\n\n${FETCH_USAGE}`);
  // The socket the server itself would listen on with the same environment and no --socket.
  const socketPath = resolveSocketPath(v.socket);
  const timeout = v.timeout === undefined ? 5_000 : Number(v.timeout);
  if (!Number.isInteger(timeout) || timeout <= 0) throw new SdsError(ErrorCode.ConfigInvalid, 'fetch: --timeout expects milliseconds > 0');
  let secret: FetchedSecret;
  try {
    secret = await fetchSecret(socketPath, name, timeout);
  } catch (err) {
    process.stderr.write(`sds-server fetch: ${name}: ${describeError(err)}\n`);
    return 1;
  }
  out(v.json ? JSON.stringify(secret, null, 2) + '\n' : formatFetched(secret));
  return 0;
}
