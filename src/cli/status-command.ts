import http from 'node:http';
import { parseArgs } from 'node:util';
import { ErrorCode, SdsError, describeError } from '../core/errors.js';
import type { ClientEntry, ClientsReport } from '../ops/clients.js';

export const STATUS_USAGE = `Usage: sds-server status --admin ADDR [--json]

Who holds what: reads GET /clients from a running server's admin endpoint and prints one row per
open SDS stream: peer, node id and cluster, Envoy version, API and kind, names, version sent and
ACKed, last NACK, connected since.

  --admin ADDR   the server's admin listener: host:port, http://host:port or unix:/path
  --json         print the /clients JSON instead of a table

Exit status: 0 printed; 1 the admin endpoint could not be read; 2 usage error.
`;

/**
 * Where an admin address points: `host:port`, `http://host:port[/]` or `unix:/path`. Throws an
 * `SdsError` (SDS_ERR_CONFIG_INVALID: a usage error, exit 2) for anything else.
 */
export function adminTarget(address: string): { socketPath: string } | { host: string; port: number } {
  if (address.startsWith('unix:')) return { socketPath: address.slice('unix:'.length) };
  const plain = address.replace(/^http:\/\//, '').replace(/\/+$/, '');
  const m = /^(?:\[([^\]]+)\]|([^:/]+)):(\d{1,5})$/.exec(plain);
  if (!m) throw new SdsError(ErrorCode.ConfigInvalid, `--admin: expected host:port, http://host:port or unix:/path, got ${JSON.stringify(address.slice(0, 100))}`);
  return { host: (m[1] ?? m[2])!, port: Number(m[3]) };
}

/**
 * Reads one admin path (`/clients`, `/status`, ...) from `host:port` or `unix:/path`.
 * Rejects with an Error naming the address when it cannot connect or gets a non-200 answer.
 */
export function readAdmin(address: string, path: string, timeoutMs = 5000): Promise<string> {
  const target = adminTarget(address);
  return new Promise((resolve, reject) => {
    const req = http.get({ ...target, path, timeout: timeoutMs }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => (res.statusCode === 200 ? resolve(body) : reject(new SdsError(ErrorCode.AdminUnreachable, `admin ${address}${path} answered ${res.statusCode}: ${body.slice(0, 200)}`))));
    });
    req.on('timeout', () => req.destroy(new SdsError(ErrorCode.AdminUnreachable, `admin ${address}${path}: no answer within ${timeoutMs} ms`)));
    req.on('error', (err) => reject(new SdsError(ErrorCode.AdminUnreachable, `cannot read admin ${address}${path}: ${err.message}`, { cause: err })));
  });
}

function cut(text: string, max: number): string {
  return text.length > max ? `${text.slice(0, max - 3)}...` : text;
}

/** Renders `/clients` as a fixed-width text table (what a person pastes into a ticket). */
export function renderClientsTable(report: ClientsReport, now = new Date()): string {
  const header = ['STREAM', 'PEER', 'NODE', 'CLUSTER', 'ENVOY', 'API', 'NAMES', 'SENT', 'ACKED', 'NACKS', 'LAST NACK', 'SINCE'];
  const rows = report.clients.map((c: ClientEntry) => [
    String(c.stream),
    c.peer ? [c.peer.pid !== undefined ? `pid ${c.peer.pid}` : '', c.peer.uid !== undefined ? `uid ${c.peer.uid}` : ''].filter(Boolean).join(' ') : '-',
    cut(c.node?.id ?? '-', 40),
    cut(c.node?.cluster || '-', 24),
    c.node?.envoyVersion || '-',
    `${c.api}/${c.kind}`,
    cut(c.names.join(',') || '(wildcard)', 60),
    cut(c.versionSent ?? '-', 16),
    cut(c.versionAcked ?? '-', 16),
    String(c.nacks),
    c.lastNack ? cut(`${c.lastNack.at} ${c.lastNack.reason.replace(/\s+/g, ' ')}`, 80) : '-',
    `${c.connectedSince} (${Math.max(0, Math.round((now.getTime() - Date.parse(c.connectedSince)) / 1000))} s)`,
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (cells: string[]): string => cells.map((c, i) => c.padEnd(widths[i]!)).join('  ').trimEnd();
  return [`${report.open} open stream(s)`, line(header), ...rows.map(line)].join('\n') + '\n';
}

/** `sds-server status`: returns the exit status; writes the table (or JSON) to `out`, problems to `err`. */
export async function runStatusCommand(argv: string[], out: (s: string) => void, err: (s: string) => void): Promise<number> {
  let values;
  try {
    values = parseArgs({ args: argv, strict: true, allowPositionals: false, options: { admin: { type: 'string' }, json: { type: 'boolean' }, help: { type: 'boolean', short: 'h' } } }).values;
  } catch (e) {
    err(`sds-server status: ${(e as Error).message}\n\n${STATUS_USAGE}`);
    return 2;
  }
  if (values.help) {
    out(STATUS_USAGE);
    return 0;
  }
  if (!values.admin) {
    err(`sds-server status: --admin is required\n\n${STATUS_USAGE}`);
    return 2;
  }
  try {
    adminTarget(values.admin);
  } catch (e) {
    err(`sds-server status: ${(e as Error).message}\n\n${STATUS_USAGE}`);
    return 2;
  }
  try {
    const body = await readAdmin(values.admin, '/clients');
    out(values.json ? body : renderClientsTable(JSON.parse(body) as ClientsReport));
    return 0;
  } catch (e) {
    err(`sds-server status: ${describeError(e)}\n`);
    return 1;
  }
}
