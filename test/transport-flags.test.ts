import { describe, expect, it } from 'vitest';
import { parseCommandLine } from '../src/cli/args.js';
import { ErrorCode } from '../src/core/errors.js';

const run = (argv: string[]) => {
  const command = parseCommandLine(argv, {});
  if (command.kind !== 'run') throw new Error(`expected a run command, got ${command.kind}`);
  return command.config;
};

describe('transport limit flags', () => {
  it('sets each limit from its flag and leaves the rest to the defaults', () => {
    expect(run([]).socket.limits).toBeUndefined();
    expect(run(['--preface-timeout', '2500', '--max-connections', '100', '--max-connections-per-uid', '10', '--max-streams-per-connection', '64', '--ping-interval', '0']).socket.limits).toEqual({
      prefaceTimeoutMs: 2500,
      maxConnections: 100,
      maxConnectionsPerUid: 10,
      maxStreamsPerConnection: 64,
      pingIntervalMs: 0,
    });
  });

  const bad: Array<[string, string]> = [
    ['--preface-timeout', '0'],
    ['--preface-timeout', '5s'],
    ['--max-connections', '-1'],
    ['--max-connections', '1e3'],
    ['--max-connections-per-uid', '0'],
    ['--max-streams-per-connection', '0'],
    ['--ping-interval', 'off'],
  ];
  for (const [flag, value] of bad) {
    it(`refuses ${flag} ${value} with a config error naming the flag`, () => {
      expect(() => run([`${flag}=${value}`])).toThrow(expect.objectContaining({ code: ErrorCode.ConfigInvalid, message: expect.stringContaining(`${flag}: expected an integer`) }));
    });
  }
});
