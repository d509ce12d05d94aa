import http from 'node:http';
import path from 'node:path';
import type { AddressInfo } from 'node:net';
import { ErrorCode, SdsError } from '../core/errors.js';
import { redact, type Logger } from '../core/logger.js';
import type { StatusReport, StreamsReport } from './status.js';
import type { CertificatesView } from './certificates-view.js';
import type { ClientsReport } from './clients.js';
import { bindPrivately, checkSocketPath, prepareSocketDirectory, prepareSocketPath, removeSocket } from '../server/unix-socket.js';

/** Where the admin endpoint listens: TCP, or a Unix socket (bound privately, then given `mode`). */
export type AdminListen = { host: string; port: number } | { socketPath: string; mode: number };

/** The Prometheus exposition, when metrics are on. */
export interface MetricsEndpoint {
  scrape(): Promise<string>;
  readonly contentType: string;
}

/**
 * A small loopback HTTP endpoint for probes and people: /healthz (process up), /ready (every
 * secret servable), /status (JSON report), /streams (per-stream names asked for and sent), /clients
 * (who holds what: per stream node, versions sent and ACKed, last NACK), /certificates (served
 * chains and bundle roots, PEM, for `sds-server doctor`), /metrics (Prometheus text).
 * Read-only; never exposes key material. TCP or a Unix socket (`unix:/path`, mode 0600 by default).
 */
export class AdminServer {
  private server: http.Server | undefined;

  constructor(
    private readonly opts: AdminListen & {
      status: () => StatusReport;
      streams?: () => StreamsReport;
      clients?: () => ClientsReport;
      /** Served chains and bundle roots (public material only), for `sds-server doctor`. */
      certificates?: () => CertificatesView;
      metrics?: MetricsEndpoint;
      log: Logger;
    },
  ) {}

  /**
   * Listens. Returns `host:port`, or `unix:<path>` for a Unix socket. A Unix socket path gets the
   * same safety checks as the SDS socket (no symlinked or foreign-owned directory, a stale socket
   * replaced, a live one refused) and is bound privately so it is never reachable with a looser mode.
   */
  async start(): Promise<string> {
    const server = http.createServer((req, res) => this.handle(req, res));
    const opts = this.opts;
    if ('socketPath' in opts) {
      await checkSocketPath(opts.socketPath);
      await prepareSocketDirectory(path.dirname(opts.socketPath), { mode: opts.mode });
      await prepareSocketPath(opts.socketPath);
      await bindPrivately(server, opts.socketPath, { mode: opts.mode, backlog: 64 });
      this.server = server;
      opts.log.info('admin listening', { address: `unix:${opts.socketPath}`, mode: opts.mode.toString(8).padStart(4, '0') });
      return `unix:${opts.socketPath}`;
    }
    await new Promise<void>((resolve, reject) => {
      server.once('error', (err: NodeJS.ErrnoException) =>
        reject(new SdsError(ErrorCode.AdminListen, `admin endpoint cannot listen on ${opts.host}:${opts.port}: ${err.code ?? err.message}${err.code === 'EADDRINUSE' ? ' (another process listens there; choose another --admin address)' : ''}`, { cause: err })),
      );
      server.listen(opts.port, opts.host, () => resolve());
    });
    this.server = server;
    const address = server.address() as AddressInfo;
    opts.log.info('admin listening', { address: `${address.address}:${address.port}` });
    return `${address.address}:${address.port}`;
  }

  async stop(): Promise<void> {
    const server = this.server;
    this.server = undefined;
    if (!server) return;
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
    if ('socketPath' in this.opts) await removeSocket(this.opts.socketPath);
  }

  private handle(req: http.IncomingMessage, res: http.ServerResponse): void {
    const url = (req.url ?? '/').split('?')[0];
    if (req.method !== 'GET') return send(res, 405, { error: 'only GET is supported' });
    switch (url) {
      case '/healthz':
        return send(res, 200, { ok: true });
      case '/ready': {
        const status = this.opts.status();
        const notReady = status.secrets
          .filter((s) => s.version === undefined || s.state === 'expired')
          .map((s) => ({ name: s.name, state: s.state, lastError: s.state === 'expired' ? s.warnings.find((w) => w.code === ErrorCode.CertExpired) : s.lastError }));
        return send(res, status.ready ? 200 : 503, { ready: status.ready, notReady });
      }
      case '/status':
        return send(res, 200, this.opts.status());
      case '/streams':
        if (this.opts.streams) return send(res, 200, this.opts.streams());
        break;
      case '/clients':
        if (this.opts.clients) return send(res, 200, this.opts.clients());
        break;
      case '/certificates':
        if (this.opts.certificates) return send(res, 200, this.opts.certificates());
        break;
      case '/metrics': {
        const metrics = this.opts.metrics;
        if (!metrics) break;
        metrics.scrape().then(
          (text) => {
            res.writeHead(200, { 'content-type': metrics.contentType });
            // Line by line: a label value cannot span lines, so a cut-off key ends at its line.
            res.end(text.split('\n').map(redact).join('\n'));
          },
          (err: unknown) => send(res, 500, { error: `could not collect metrics: ${(err as Error).message}` }),
        );
        return;
      }
    }
    return send(res, 404, { error: `unknown path ${url}; try /healthz, /ready, /status, /streams, /clients, /certificates or /metrics` });
  }
}

/**
 * Every JSON answer goes out through here, with the log's private-key redaction applied to each
 * string: a status field may quote text from outside (a CA's error body, say), and admin output is
 * kept and shared like logs. Per string, so a key cut off without its END line is redacted to the
 * end of that string and the document stays valid JSON.
 */
function send(res: http.ServerResponse, code: number, body: unknown): void {
  res.writeHead(code, { 'content-type': 'application/json' });
  res.end(JSON.stringify(body, (_key, value: unknown) => (typeof value === 'string' ? redact(value) : value), 2) + '\n');
}
