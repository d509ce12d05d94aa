import fs from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startApp, type RunningApp } from '../../src/cli/app.js';
import { parseConfigFile } from '../../src/cli/config.js';
import { createLogger } from '../../src/ops/logger.js';
import { makeSharedDir } from '../helpers/peer-process.js';
import { installClient, NOBODY_USER, ROOT_USER, runClient } from '../helpers/authz-clients.js';
import { waitFor } from '../helpers/files.js';

/**
 * Identities issued on demand from `identityTemplate` by the embedded CA, for real callers under two
 * uids. The template uses unix selectors here ({unix:uid}); the Kubernetes selectors go through the
 * same template code (test/authorization/caller-catalog.test.ts).
 */
const PERMISSION_DENIED = 7;
const canRunAsOthers = process.getuid?.() === 0;

describe.skipIf(!canRunAsOthers)('identityTemplate: identities issued on demand by the embedded CA', () => {
  let dir: string;
  let client: string;
  let app: RunningApp;
  const logs: Array<Record<string, unknown>> = [];

  beforeAll(async () => {
    dir = await makeSharedDir('sds-ondemand-');
    client = await installClient(dir);
    const file = path.join(dir, 'sds.yaml');
    await fs.writeFile(
      file,
      `socket: { path: ${path.join(dir, 'sds.sock')}, mode: "0666" }
ca: { trustDomain: example.org, embedded: { dataDir: ${path.join(dir, 'ca')} } }
identityTemplate: "spiffe://{trustDomain}/uid/{unix:uid}"
onDemandIdleSeconds: 1
`,
    );
    app = await startApp(parseConfigFile(await fs.readFile(file, 'utf8'), file), createLogger({ level: 'debug', write: (l) => logs.push(JSON.parse(l) as Record<string, unknown>) }));
  });
  afterAll(async () => {
    await app?.stop();
    if (dir) await fs.rm(dir, { recursive: true, force: true });
  });

  it('is issued the first time its caller asks, only to that caller, held while streamed, dropped after onDemandIdleSeconds', async () => {
    const ROOT_ID = 'spiffe://example.org/uid/0';
    const NOBODY_ID = 'spiffe://example.org/uid/65534';
    expect(app.status().secrets.map((s) => s.name)).toEqual(['spiffe://example.org']);

    const root = await runClient(client, app.socketPath, ROOT_USER, [{ names: ['default'] }, { names: [ROOT_ID] }, { names: ['spiffe://example.org'] }], { hold: true });
    try {
      expect(root.run.results.map((r) => r.secrets?.[0]?.spiffeId ?? r.secrets?.[0]?.kind)).toEqual([ROOT_ID, ROOT_ID, 'validation_context']);
      expect(root.run.results[0]?.secrets?.[0]?.hasKey).toBe(true);
      const issued = app.status().secrets.find((s) => s.name === ROOT_ID);
      expect(issued).toMatchObject({ state: 'ok', kind: 'tls-certificate', files: ['embedded CA (on demand, key in memory)'], certificate: { spiffeId: ROOT_ID } });
      expect(issued?.nextRenewalAt).toBeDefined(); // renewed like a configured identity

      // nobody gets its own, never root's (which exists now).
      const nobody = await runClient(client, app.socketPath, NOBODY_USER, [{ names: ['default'] }, { names: [ROOT_ID] }]);
      expect(nobody.run.results[0]?.secrets?.[0]?.spiffeId).toBe(NOBODY_ID);
      expect(nobody.run.results[1]).toMatchObject({ status: PERMISSION_DENIED, message: expect.stringContaining(`secret "${ROOT_ID}" is not granted to caller uid=65534`) });

      // nobody's streams are gone: its identity is dropped after 1 s; root's, still streamed, stays.
      await waitFor('nobody\'s on-demand identity dropped', () => !app.status().secrets.some((s) => s.name === NOBODY_ID), 10_000);
      expect(app.store.resolve(NOBODY_ID).kind).toBe('unknown');
      expect(app.status().secrets.some((s) => s.name === ROOT_ID)).toBe(true);
      expect(app.status().authorization?.onDemand).toEqual([expect.objectContaining({ spiffeId: ROOT_ID, streams: 2 })]);
    } finally {
      await root.stop();
    }
    await waitFor('root\'s on-demand identity dropped once its streams are gone', () => !app.status().secrets.some((s) => s.name === ROOT_ID), 10_000);
    expect(logs.filter((l) => l.msg === 'identity issued').map((l) => l.secret).sort()).toEqual([ROOT_ID, NOBODY_ID].sort());
    expect(logs.filter((l) => l.msg === 'dropping on-demand identity: no stream has wanted it').map((l) => l.secret).sort()).toEqual([ROOT_ID, NOBODY_ID].sort());
  });
});
