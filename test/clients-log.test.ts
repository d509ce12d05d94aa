import { describe, expect, it } from 'vitest';
import { StreamLogLimiter } from '../src/ops/clients.js';
import { renderClientsTable, runStatusCommand } from '../src/cli/status-command.js';
import { captureLogs } from './helpers/files.js';

describe('stream open/close info log: a storm does not flood it', () => {
  it('writes 20 lines per kind per window, then one summary line that accounts for the rest (clock: a test double)', async () => {
    const logs = captureLogs();
    let now = 0;
    const limiter = new StreamLogLimiter(logs.logger, 20, 10_000, () => now);
    for (let i = 0; i < 2000; i++) limiter.line('stream opened', { stream: i, node: `envoy-${i}` });
    for (let i = 0; i < 5; i++) limiter.line('stream closed', { stream: i });
    expect(logs.records().filter((r) => r.msg === 'stream opened')).toHaveLength(20);
    expect(logs.records().filter((r) => r.msg === 'stream closed')).toHaveLength(5);
    // The next window: the summary of the first goes out, then lines again.
    now = 10_000;
    limiter.line('stream opened', { stream: 2000, node: 'envoy-2000' });
    const records = logs.records();
    const summary = records.filter((r) => r.msg === 'stream opened (more, not listed one by one)');
    expect(summary).toEqual([expect.objectContaining({ level: 'info', suppressed: 1980 })]);
    expect(records.at(-1)).toMatchObject({ msg: 'stream opened', stream: 2000, node: 'envoy-2000', level: 'info' });
    limiter.stop();
    expect(logs.lines.length).toBe(27);
  });
});

describe('sds-server status', () => {
  it('renders one row per stream, a NACK reason on one line; exits 1 naming the address when the admin endpoint is not there, 2 without --admin', async () => {
    const table = renderClientsTable(
      {
        open: 1,
        clients: [
          {
            stream: 7,
            peer: { pid: 4242, uid: 1000, gid: 1000 },
            node: { id: 'front-1', cluster: 'front', userAgent: 'envoy', envoyVersion: '1.40.0' },
            api: 'v3',
            kind: 'sotw',
            names: ['spiffe://example.org/front'],
            sent: ['spiffe://example.org/front'],
            record: { requests: 2, named: ['spiffe://example.org/front'], lastRequestNames: ['spiffe://example.org/front'], unsubscribed: [], sent: ['spiffe://example.org/front'] },
            versionSent: 'abc',
            nacks: 1,
            lastNack: { at: '2026-11-30T06:00:00.000Z', reason: 'bad\nkey' },
            connectedSince: '2026-11-30T05:59:00.000Z',
          },
        ],
        recentlyClosed: [],
      },
      new Date('2026-11-30T06:00:00.000Z'),
    );
    const lines = table.trimEnd().split('\n');
    expect(lines).toHaveLength(3);
    expect(lines[2]).toMatch(/^7\s+pid 4242 uid 1000\s+front-1\s+front\s+1\.40\.0\s+v3\/sotw\s+spiffe:\/\/example\.org\/front\s+abc\s+-\s+1\s+2026-11-30T06:00:00\.000Z bad key\s+2026-11-30T05:59:00\.000Z \(60 s\)$/);

    let err = '';
    expect(await runStatusCommand(['--admin', 'unix:/nonexistent/admin.sock'], () => {}, (s) => (err += s))).toBe(1);
    expect(err).toContain('cannot read admin unix:/nonexistent/admin.sock/clients');
    expect(await runStatusCommand([], () => {}, () => {})).toBe(2);
  });
});
