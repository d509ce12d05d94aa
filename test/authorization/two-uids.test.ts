import fs from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startApp, type RunningApp } from '../../src/cli/app.js';
import { parseConfigFile } from '../../src/cli/config.js';
import { createLogger } from '../../src/core/logger.js';
import { makeSharedDir } from '../helpers/peer-process.js';
import { DAEMON_USER, installClient, NOBODY_USER, ROOT_USER, runClient, type ClientResult, type HeldClient } from '../helpers/authz-clients.js';
import { waitFor } from '../helpers/files.js';

/**
 * Issue 11, done-when: real client processes under different uids on one shared socket, each
 * attested by SO_PEERCRED + the unix attestor, each given only what its workload entry grants.
 */
const FRONT = 'spiffe://example.org/front';
const BACK = 'spiffe://example.org/back';
const PERMISSION_DENIED = 7;
const OK = 0;
const canRunAsOthers = process.getuid?.() === 0;

const only = (r: ClientResult | undefined) => r?.secrets?.map((s) => ({ name: s.name, kind: s.kind, spiffeId: s.spiffeId, hasKey: s.hasKey }));

describe.skipIf(!canRunAsOthers)('authorization with real callers under uid 0, 65534 (nobody) and 1 (no entry)', () => {
  let dir: string;
  let client: string;
  let app: RunningApp;
  const logs: Array<Record<string, unknown>> = [];

  beforeAll(async () => {
    dir = await makeSharedDir('sds-authz-');
    client = await installClient(dir);
    const file = path.join(dir, 'sds.yaml');
    await fs.writeFile(
      file,
      `socket: { path: ${path.join(dir, 'sds.sock')}, mode: "0666" }
ca: { trustDomain: example.org, embedded: { dataDir: ${path.join(dir, 'ca')} } }
identities:
  - spiffeId: ${FRONT}
  - spiffeId: ${BACK}
workloads:
  - selectors: ["unix:uid:0"]
    identities: ["${FRONT}"]
  - selectors: ["unix:uid:65534", "unix:user:nobody"]
    identities: ["${BACK}"]
`,
    );
    app = await startApp(parseConfigFile(await fs.readFile(file, 'utf8'), file), createLogger({ level: 'debug', write: (l) => logs.push(JSON.parse(l) as Record<string, unknown>) }));
  });
  afterAll(async () => {
    await app?.stop();
    if (dir) await fs.rm(dir, { recursive: true, force: true });
  });

  it('each uid gets only its own identity; bundles go to both; `default` differs per caller; a refusal is PERMISSION_DENIED, quickly, and the other streams go on', async () => {
    const calls = (own: string, other: string) => [
      { names: [own] },
      { names: ['default'] },
      { names: ['spiffe://example.org'] },
      { names: ['ROOTCA'] },
      { names: ['ALL'] },
      { names: [other] },
      { method: 'FetchSecrets' as const, names: [other] },
      { method: 'FetchSecrets' as const, names: [own] },
    ];
    const [root, nobody] = await Promise.all([
      runClient(client, app.socketPath, ROOT_USER, calls(FRONT, BACK)),
      runClient(client, app.socketPath, NOBODY_USER, calls(BACK, FRONT)),
    ]);
    for (const [held, uid, own, other] of [[root, 0, FRONT, BACK], [nobody, 65534, BACK, FRONT]] as Array<[HeldClient, number, string, string]>) {
      const { run } = held;
      expect(run.uid).toBe(uid);
      const [ownStream, def, td, rootca, all, otherStream, otherFetch, ownFetch] = run.results;
      expect(only(ownStream)).toEqual([{ name: own, kind: 'tls_certificate', spiffeId: own, hasKey: true }]);
      expect(only(def)).toEqual([{ name: 'default', kind: 'tls_certificate', spiffeId: own, hasKey: true }]);
      expect(only(ownFetch)).toEqual([{ name: own, kind: 'tls_certificate', spiffeId: own, hasKey: true }]);
      for (const [r, name] of [[td, 'spiffe://example.org'], [rootca, 'ROOTCA'], [all, 'ALL']] as const) {
        expect(r?.status, name).toBe(OK);
        expect(only(r)).toEqual([{ name, kind: 'validation_context', spiffeId: undefined, hasKey: false }]);
      }
      for (const refused of [otherStream, otherFetch]) {
        expect(refused?.status).toBe(PERMISSION_DENIED);
        expect(refused?.message).toContain('SDS_ERR_PERMISSION_DENIED');
        expect(refused?.message).toContain(`secret "${other}" is not granted to caller uid=${uid} pid=${run.pid}`);
        expect(refused?.message).toContain(`unix:uid:${uid}`);
        expect(refused?.message).not.toMatch(/BEGIN|PRIVATE/);
        expect(refused?.secrets).toBeUndefined();
        expect(refused?.ms).toBeLessThan(1000);
      }
    }
    // Same server, different callers, different certificates behind `default`.
    expect(root.run.results[1]?.secrets?.[0]?.serial).not.toBe(nobody.run.results[1]?.secrets?.[0]?.serial);
    expect(logs.some((l) => l.msg === 'secret refused' && l.uid === 65534 && l.secret === FRONT)).toBe(true);
  });

  it('a caller matching no entry (uid 1) gets nothing but a clear refusal, for identities and bundles alike', async () => {
    const { run } = await runClient(client, app.socketPath, DAEMON_USER, [
      { names: ['default'] },
      { names: ['spiffe://example.org'] },
      { names: [FRONT] },
      { method: 'FetchSecrets', names: ['ROOTCA'] },
      { method: 'FetchSecrets', names: [] },
    ]);
    expect(run.uid).toBe(1);
    for (const r of run.results) {
      expect(r.status, r.names.join()).toBe(PERMISSION_DENIED);
      expect(r.message).toMatch(new RegExp(`^SDS_ERR_PERMISSION_DENIED: caller uid=1 pid=${run.pid} selectors=\\[unix:uid:1.*\\] matches no workload entry; it is granted no identity and no trust bundle$`));
      expect(r.secrets).toBeUndefined();
    }
    // The refused connection is gone; /status remembers it among the recent refusals.
    await waitFor('the refused caller in /status', () => app.status().authorization?.recentlyRefused?.some((c) => c.pid === run.pid) === true);
    expect(app.status().authorization?.recentlyRefused?.filter((c) => c.pid === run.pid)).toHaveLength(1);
    const seen = app.status().authorization?.recentlyRefused?.find((c) => c.pid === run.pid);
    expect(seen).toMatchObject({ uid: 1, identities: [], granted: [], refused: [expect.objectContaining({ name: '*', reason: expect.stringContaining('matches no workload entry') })] });
    expect(seen?.selectors).toContain('unix:uid:1');
  });

  it('/status shows per connection the caller pid, uid, selectors and what it was granted or refused', async () => {
    const held = await runClient(client, app.socketPath, NOBODY_USER, [{ names: [BACK] }, { names: [FRONT] }, { names: ['ROOTCA'] }], { hold: true });
    try {
      const connection = () => app.status().authorization?.connections?.find((c) => c.pid === held.run.pid);
      await waitFor('the held connection in /status', () => (connection()?.streams ?? 0) >= 2);
      const c = connection();
      expect(c).toMatchObject({ uid: 65534, gid: 65534, identities: [BACK], granted: [BACK] });
      expect(c?.selectors).toEqual(expect.arrayContaining(['unix:uid:65534', 'unix:user:nobody']));
      expect(c?.refused).toEqual([expect.objectContaining({ name: FRONT, reason: expect.stringContaining(`is not granted to caller uid=65534 pid=${held.run.pid}`) })]);
      expect(JSON.stringify(app.status())).not.toMatch(/PRIVATE KEY/);
      expect(app.status().authorization).toMatchObject({ enabled: true, workloads: 2 });
    } finally {
      await held.stop();
    }
    await waitFor('the connection leaves /status when its streams end', () => !app.status().authorization?.connections?.some((c) => c.pid === held.run.pid));
  });
});
