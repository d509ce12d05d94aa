import fs from 'node:fs/promises';
import http from 'node:http';
import https from 'node:https';
import net from 'node:net';
import { ErrorCode, SdsError } from '../core/errors.js';
import { displayUrl } from '../core/redact-url.js';

/** The fields of a Kubernetes `Pod` (core/v1) the attestor reads, as the kubelet's `/pods` serves them. */
export interface Pod {
  metadata: { name?: string; namespace?: string; uid?: string; labels?: Record<string, string> };
  spec?: { serviceAccountName?: string; nodeName?: string };
  status?: {
    containerStatuses?: ContainerStatus[];
    initContainerStatuses?: ContainerStatus[];
    ephemeralContainerStatuses?: ContainerStatus[];
  };
}

/** core/v1 `ContainerStatus`: `containerID` is `<runtime>://<id>` (e.g. `containerd://9bca...`). */
export interface ContainerStatus {
  name?: string;
  image?: string;
  imageID?: string;
  containerID?: string;
}

/** core/v1 `PodList`, the body of the kubelet's `GET /pods`. */
export interface PodList {
  kind?: string;
  items: Pod[];
}

export interface KubeletClientOptions {
  /**
   * Kubelet base URL. Default `https://127.0.0.1:10250` (the secure port; reach it with
   * `hostNetwork: true`). `http://127.0.0.1:10255` uses the read-only port (no token sent).
   */
  url?: string;
  /** Bearer token file, re-read every `reloadMs`. Default the pod's service-account token. */
  tokenFile?: string;
  /** CA bundle that signs the kubelet's serving certificate. Default the service-account CA. */
  caFile?: string;
  /**
   * Check the kubelet certificate's name against the URL host. Default: false for a loopback host
   * (kubelet serving certificates name the node, not 127.0.0.1; SPIRE skips the name for localhost
   * too), true otherwise. The chain is always verified against `caFile` unless `skipVerification`.
   */
  verifyHostname?: boolean;
  /** Do not verify the kubelet's certificate at all (SPIRE's `skip_kubelet_verification`). */
  skipVerification?: boolean;
  /** How often the token and CA files are re-read, ms. Default 60,000 (SPIRE's reload interval). */
  reloadMs?: number;
  /** Timeout of one `/pods` request, ms. Default 5,000. */
  requestTimeoutMs?: number;
  /** Largest `/pods` body accepted, bytes. Default 64 MiB. */
  maxBodyBytes?: number;
}

export const DEFAULT_KUBELET_URL = 'https://127.0.0.1:10250';
export const DEFAULT_TOKEN_FILE = '/var/run/secrets/kubernetes.io/serviceaccount/token';
export const DEFAULT_CA_FILE = '/var/run/secrets/kubernetes.io/serviceaccount/ca.crt';

/**
 * Lists the pods of this node from the kubelet's `/pods` endpoint, as SPIRE's k8s workload attestor
 * does: HTTPS on 10250 with the service-account bearer token, the kubelet certificate checked
 * against the cluster CA. The token never appears in errors.
 */
export class KubeletClient {
  readonly url: URL;
  private readonly secure: boolean;
  private credentials: { at: number; value: Promise<{ token?: string; ca?: Buffer }> } | undefined;

  constructor(private readonly options: KubeletClientOptions = {}) {
    this.url = new URL('/pods', options.url ?? DEFAULT_KUBELET_URL);
    this.secure = this.url.protocol === 'https:';
  }

  /**
   * GET /pods.
   * @throws SdsError `SDS_ERR_KUBELET_UNAVAILABLE` on connection/TLS failure, a non-200 status, a
   *   timeout, a body over the limit, or a body that is not a PodList; or when the token/CA files
   *   cannot be read.
   */
  async listPods(): Promise<PodList> {
    const { token, ca } = await this.loadCredentials();
    const body = await this.get(token, ca);
    let parsed: unknown;
    try {
      parsed = JSON.parse(body);
    } catch (err) {
      throw this.problem(`answered with a body that is not JSON (${(err as Error).message})`);
    }
    const items = (parsed as { items?: unknown } | null)?.items;
    if (!Array.isArray(items)) throw this.problem('answered with JSON that is not a PodList (no `items` array)');
    return { kind: (parsed as { kind?: string }).kind, items: items.filter((i): i is Pod => typeof i === 'object' && i !== null && typeof (i as Pod).metadata === 'object') };
  }

  private problem(what: string): SdsError {
    return new SdsError(ErrorCode.KubeletUnavailable, `kubelet ${displayUrl(this.url)} ${what}`);
  }

  private loadCredentials(): Promise<{ token?: string; ca?: Buffer }> {
    const now = Date.now();
    if (this.credentials && now - this.credentials.at < (this.options.reloadMs ?? 60_000)) return this.credentials.value;
    const value = this.readCredentials();
    this.credentials = { at: now, value };
    // A failed read is not cached: the next attestation tries again.
    value.catch(() => (this.credentials = undefined));
    return value;
  }

  private async readCredentials(): Promise<{ token?: string; ca?: Buffer }> {
    if (!this.secure) return {};
    const tokenFile = this.options.tokenFile ?? DEFAULT_TOKEN_FILE;
    const caFile = this.options.caFile ?? DEFAULT_CA_FILE;
    const token = await fs.readFile(tokenFile, 'utf8').then(
      (t) => t.trim(),
      (err: NodeJS.ErrnoException) => {
        throw new SdsError(ErrorCode.KubeletUnavailable, `cannot read the kubelet token file ${tokenFile}: ${err.code ?? err.message}`);
      },
    );
    if (this.options.skipVerification) return { token };
    const ca = await fs.readFile(caFile).catch((err: NodeJS.ErrnoException) => {
      throw new SdsError(ErrorCode.KubeletUnavailable, `cannot read the kubelet CA file ${caFile}: ${err.code ?? err.message}`);
    });
    return { token, ca };
  }

  private get(token: string | undefined, ca: Buffer | undefined): Promise<string> {
    const limit = this.options.maxBodyBytes ?? 64 * 1024 * 1024;
    const timeoutMs = this.options.requestTimeoutMs ?? 5_000;
    const host = this.url.hostname.replace(/^\[|\]$/g, '');
    const loopback = host === 'localhost' || (net.isIP(host) !== 0 && (host.startsWith('127.') || host === '::1'));
    const verifyHostname = this.options.verifyHostname ?? !loopback;
    return new Promise<string>((resolve, reject) => {
      const headers: http.OutgoingHttpHeaders = { accept: 'application/json' };
      if (token) headers.authorization = `Bearer ${token}`;
      const tlsOptions: https.RequestOptions = this.secure
        ? {
            ca,
            rejectUnauthorized: !this.options.skipVerification,
            ...(verifyHostname ? {} : { checkServerIdentity: () => undefined }),
          }
        : {};
      const request = (this.secure ? https : http).request(this.url, { method: 'GET', headers, timeout: timeoutMs, agent: false, ...tlsOptions }, (res) => {
        const chunks: Buffer[] = [];
        let size = 0;
        res.on('data', (chunk: Buffer) => {
          size += chunk.length;
          if (size > limit) {
            request.destroy();
            reject(this.problem(`answered with more than ${limit} bytes`));
            return;
          }
          chunks.push(chunk);
        });
        res.on('end', () => {
          const body = Buffer.concat(chunks).toString('utf8');
          if (res.statusCode !== 200) {
            // The first bytes of the kubelet's answer help ("Unauthorized", "Forbidden (user=..., verb=get, resource=nodes, subresource=proxy)").
            reject(this.problem(`answered ${res.statusCode}: ${body.slice(0, 200).trim()}`));
            return;
          }
          resolve(body);
        });
        res.on('error', (err) => reject(this.problem(`failed while answering: ${err.message}`)));
      });
      request.on('timeout', () => request.destroy(new SdsError(ErrorCode.KubeletUnavailable, `no answer within ${timeoutMs} ms`)));
      request.on('error', (err) => reject(this.problem(`cannot be reached: ${err.message}`)));
      request.end();
    });
  }
}
