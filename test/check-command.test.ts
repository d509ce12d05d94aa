/**
 * `sds-server check` in-process, table-driven: real files in, the exact problem codes out.
 * (The program's exit codes are covered by test/doctor-cli.test.ts.)
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { checkMain, runCheck } from '../src/cli/check-command.js';
import { createRootCa, issueLeaf } from '../src/x509/issue.js';

const FRONT = 'spiffe://example.org/front';

describe('runCheck', () => {
  let dir: string;
  const f = (name: string): string => path.join(dir, name);

  beforeAll(async () => {
    dir = await fs.mkdtemp(path.join(os.tmpdir(), 'sds-check-'));
    const ca = await createRootCa({ commonName: 'example.org root', trustDomain: 'example.org' });
    const foreign = await createRootCa({ commonName: 'foreign root', trustDomain: 'example.org' });
    const good = await issueLeaf(ca, { spiffeId: FRONT });
    const stranger = await issueLeaf(foreign, { spiffeId: FRONT });
    const other = await issueLeaf(ca, { spiffeId: 'spiffe://example.org/back' });
    await Promise.all([
      fs.writeFile(f('ca.pem'), ca.certPem),
      fs.writeFile(f('good.crt'), good.chainPem),
      fs.writeFile(f('good.key'), good.keyPem),
      fs.writeFile(f('stranger.crt'), stranger.chainPem),
      fs.writeFile(f('stranger.key'), stranger.keyPem),
      fs.writeFile(f('other.key'), other.keyPem),
    ]);
    const config = (cert: string, key: string, extra = ''): string =>
      `certificates:\n  - { name: "${FRONT}", cert: ${cert}, key: ${key} }\nbundles:\n  - { name: "spiffe://example.org", ca: [ca.pem], trustDomain: example.org }\n${extra}`;
    await Promise.all([
      fs.writeFile(f('good.yaml'), config('good.crt', 'good.key')),
      fs.writeFile(f('missing.yaml'), config('good.crt', 'nope.key')),
      fs.writeFile(f('mismatch.yaml'), config('good.crt', 'other.key')),
      fs.writeFile(f('stranger.yaml'), config('stranger.crt', 'stranger.key')),
      fs.writeFile(f('typo.yaml'), config('good.crt', 'good.key', 'unknownField: 1\n')),
      // The chosen CA backend's files (its schema's file paths) must be readable; another backend's are not read.
      fs.writeFile(f('cfssl-key.yaml'), `ca:\n  backend: cfssl\n  cfssl: { url: "http://127.0.0.1:1", authKeyFile: nope.key }\n  embedded: { caCert: nope.crt, caKey: nope.key }\nidentities: [{ spiffeId: "${FRONT}" }]\n`),
    ]);
  });
  afterAll(async () => {
    await fs.rm(dir, { recursive: true, force: true });
  });

  it.each([
    { config: 'good.yaml', ok: true, codes: [] },
    { config: 'missing.yaml', ok: false, codes: ['SDS_ERR_FILE_MISSING'] },
    { config: 'mismatch.yaml', ok: false, codes: ['SDS_ERR_KEY_MISMATCH'] },
    { config: 'stranger.yaml', ok: false, codes: ['SDS_ERR_LEAF_NOT_IN_BUNDLE'] },
    { config: 'typo.yaml', ok: false, codes: ['SDS_ERR_CONFIG_INVALID'] },
    { config: 'cfssl-key.yaml', ok: false, codes: ['SDS_ERR_FILE_UNREADABLE'] },
  ])('$config', async ({ config, ok, codes }) => {
    const r = await runCheck(['--config', f(config)]);
    expect(r.problems.map((p) => p.code)).toEqual(codes);
    expect(r.ok).toBe(ok);
  });
});

describe('checkMain', () => {
  it('--help prints the usage (exit 0); no arguments is a usage error (exit 2), never a clean bill', async () => {
    for (const [argv, code] of [[['--help'], 0], [[], 2]] as const) {
      let out = '';
      expect(await checkMain([...argv], (s) => (out += s))).toBe(code);
      expect(out).toContain('Usage: sds-server check --config FILE');
      expect(out).not.toContain('OK');
    }
  });
});
