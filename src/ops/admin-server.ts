import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { ErrorCode } from './errors.js';
import type { Logger } from './logger.js';
import type { StatusReport, StreamsReport } from './status.js';

/**
 * A small loopback HTTP endpoint for probes and people: /healthz (process up), /ready (every
 * secret servable), /status (JSON report), /streams (per-stream names asked for and sent). Read-only; never exposes key material.
 */
export class AdminServer {
  private server: http.Server | undefined;

  constructor(private readonly opts: { host: string; port: number; status: () => StatusReport; streams?: () => StreamsReport; log: Logger }) {}

  async start(): Promise<AddressInfo> {
    const server = http.createServer((req, res) => this.handle(req, res));
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(this.opts.port, this.opts.host, () => resolve());
    });
    this.server = server;
    const address = server.address() as AddressInfo;
    this.opts.log.info('admin listening', { address: `${address.address}:${address.port}` });
    return address;
  }

  async stop(): Promise<void> {
    const server = this.server;
    this.server = undefined;
    if (!server) return;
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
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
        return send(res, 404, { error: 'no stream report on this endpoint' });
      default:
        return send(res, 404, { error: `unknown path ${url}; try /healthz, /ready, /status or /streams` });
    }
  }
}

function send(res: http.ServerResponse, code: number, body: unknown): void {
  res.writeHead(code, { 'content-type': 'application/json' });
  res.end(JSON.stringify(body, null, 2) + '\n');
}
