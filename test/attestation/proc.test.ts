import { afterEach, describe, expect, it } from 'vitest';
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { parseIdNames, parseStartTime, parseStat, parseStatus, readProcFileSync, readStartTime, readStartTimeSync } from '../../src/attestation/proc.js';
import { readFileSync } from 'node:fs';

// Real lines from this kernel's /proc/<pid>/stat, with comm values chosen to trip naive parsing.
const STAT_TAIL = '1 2 3 4 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 123456789 2215936 134 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0 0 0 0 0 0 0 0 0';
const STAT_ROWS: { name: string; line: string; stat: { state: string; startTime: number } | undefined; live: number | undefined }[] = [
  { name: 'plain comm', line: `4242 (sleep) S ${STAT_TAIL}`, stat: { state: 'S', startTime: 123456789 }, live: 123456789 },
  { name: 'comm with spaces', line: `4242 (my sleep) S ${STAT_TAIL}`, stat: { state: 'S', startTime: 123456789 }, live: 123456789 },
  { name: 'comm with parentheses and spaces', line: `4242 (a) b (c) R ${STAT_TAIL}`, stat: { state: 'R', startTime: 123456789 }, live: 123456789 },
  { name: 'comm that looks like fields', line: `4242 () S 1 2 3) D ${STAT_TAIL}`, stat: { state: 'D', startTime: 123456789 }, live: 123456789 },
  { name: 'zombie: exited, pid not yet free', line: `4242 (sleep) Z ${STAT_TAIL}`, stat: { state: 'Z', startTime: 123456789 }, live: undefined },
  { name: 'dead', line: `4242 (sleep) X ${STAT_TAIL}`, stat: { state: 'X', startTime: 123456789 }, live: undefined },
  { name: 'no parenthesis', line: `4242 sleep S ${STAT_TAIL}`, stat: undefined, live: undefined },
  { name: 'truncated', line: '4242 (sleep) S 1 2 3', stat: undefined, live: undefined },
  { name: 'empty', line: '', stat: undefined, live: undefined },
];

describe('/proc/<pid>/stat parsing (table)', () => {
  it.each(STAT_ROWS)('$name', ({ line, stat, live }) => {
    expect(parseStat(line)).toEqual(stat);
    expect(parseStartTime(line)).toBe(live);
  });
});

describe('/proc/<pid>/status and passwd/group parsing', () => {
  it('reads Uid, Gid and Groups lines', () => {
    const status = 'Name:\tsleep\nUmask:\t0022\nState:\tS (sleeping)\nUid:\t1001\t1002\t1003\t1004\nGid:\t65534\t65534\t65534\t65534\nFDSize:\t64\nGroups:\t4 24 27 \nNSpid:\t99\n';
    expect(parseStatus(status)).toEqual({ uids: [1001, 1002, 1003, 1004], gids: [65534, 65534, 65534, 65534], groups: [4, 24, 27] });
    expect(parseStatus('Uid:\t0\t0\t0\t0\nGid:\t0\t0\t0\t0\nGroups:\t\n').groups).toEqual([]);
  });

  it('maps ids to names, first entry wins, comments and junk skipped', () => {
    const names = parseIdNames('# comment\nroot:x:0:\nnogroup:x:65534:\nshadow:x:42:a,b\ntoor:x:0:\nbroken\n:x:7:\nbad:x:notanumber:\n');
    expect([...names.entries()]).toEqual([[0, 'root'], [65534, 'nogroup'], [42, 'shadow']]);
  });
});

describe('readProcFileSync', () => {
  it('reads procfs files (size 0 to stat) whole', () => {
    const status = readProcFileSync(`/proc/${process.pid}/status`, 'utf8');
    expect(status).toMatch(/^Name:/);
    expect(status).toContain(`\nPid:\t${process.pid}\n`);
    expect(parseStatus(status).groups).toEqual(parseStatus(readFileSync(`/proc/${process.pid}/status`, 'utf8')).groups);
    expect(readProcFileSync('/proc/self/cgroup', 'utf8')).toBe(readFileSync('/proc/self/cgroup', 'utf8'));
  });

  it('refuses a file larger than its buffer, and throws ENOENT for a missing process', async () => {
    const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'sds-proc-big-'));
    try {
      await fs.writeFile(path.join(dir, 'big'), 'x'.repeat(20_000));
      expect(() => readProcFileSync(path.join(dir, 'big'), 'latin1')).toThrow(expect.objectContaining({ code: 'SDS_ERR_ATTESTATION_FAILED', message: expect.stringContaining('is larger than 16384 bytes') }));
    } finally {
      await fs.rm(dir, { recursive: true, force: true });
    }
    expect(() => readProcFileSync('/proc/999999999/stat', 'latin1')).toThrow(expect.objectContaining({ code: 'ENOENT' }));
  });
});

describe('start time of a real process', () => {
  let dir: string | undefined;
  let child: ChildProcess | undefined;
  afterEach(async () => {
    child?.kill('SIGKILL');
    if (dir) await fs.rm(dir, { recursive: true, force: true });
  });

  it('parses the stat line of a process whose executable name has spaces and parentheses', async () => {
    dir = await fs.mkdtemp(path.join(os.tmpdir(), 'sds-proc-'));
    const exe = path.join(dir, 'a) b (c');
    await fs.copyFile('/bin/sleep', exe);
    await fs.chmod(exe, 0o755);
    const mine = readStartTimeSync(process.pid);
    expect(mine).toBeGreaterThan(0);
    const c = spawn(exe, ['60'], { stdio: 'ignore' });
    child = c;
    await new Promise<void>((resolve, reject) => c.once('spawn', resolve).once('error', reject));
    const pid = c.pid!;
    const line = await fs.readFile(`/proc/${pid}/stat`, 'latin1');
    expect(line).toContain('(a) b (c)');
    const started = readStartTimeSync(pid);
    // It started after this test process, and both readers agree.
    expect(started).toBeGreaterThanOrEqual(mine!);
    expect(await readStartTime(pid)).toBe(started);
    c.kill('SIGKILL');
    await new Promise((resolve) => c.once('exit', resolve));
    expect(readStartTimeSync(pid)).toBeUndefined();
  });
});
