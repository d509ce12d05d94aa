import { spawn } from 'node:child_process';
import fs from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { startApp, type RunningApp } from '../src/cli/app.js';
import { parseCommandLine } from '../src/cli/args.js';
import type { ServerConfig } from '../src/cli/config.js';
import { createLogger } from '../src/core/logger.js';
import { issueLeaf } from '../src/x509/issue.js';
import { rootCa } from './helpers/identities.js';
import type { DiscoveryResponse__Output as DiscoveryResponseObj } from '../src/api/generated/envoy/service/discovery/v3/DiscoveryResponse.js';
import { SdsTestClient, decodeSecret, envoyNode, type StreamEnd } from './helpers/sds-client.js';

/**
 * Issue 13, done-when: a config reload adds and removes an identity and a workload rule under 100
 * connected streams (in-process server on its real Unix socket, the real SDS test client). The
 * unaffected streams see nothing (same stream, no response), the new identity is served, the
 * removed one is reported to its subscribers as the protocol rules say (SotW: the stream ends
 * with SDS_ERR_UNKNOWN_SECRET; Delta: `removed_resources`, the stream stays).
 */
const TD = 'spiffe://example.org';
const STAY_A = `${TD}/stay-a`;
const STAY_B = `${TD}/stay-b`;
const GONE = `${TD}/gone`;
const ADDED = `${TD}/added`;
const REVOKED = `${TD}/revoked`;
const INVALID_ARGUMENT = 3;
const PERMISSION_DENIED = 7;

type Sotw = ReturnType<SdsTestClient['stream']>;
type Delta = ReturnType<SdsTestClient['delta']>;

describe('live config reload (issue 13)', () => {
  let dir: string;
  let file: string;
  let app: RunningApp | undefined;
  let client: SdsTestClient | undefined;
  let logs: Array<Record<string, unknown>>;

  beforeEach(async () => {
    dir = await fs.mkdtemp(path.join(os.tmpdir(), 'sds-reload-'));
    file = path.join(dir, 'sds.yaml');
    logs = [];
  });
  afterEach(async () => {
    client?.close();
    client = undefined;
    await app?.stop();
    app = undefined;
    await fs.rm(dir, { recursive: true, force: true });
  });

  /** Writes the config file as an editor does (temp file renamed over it). */
  const writeConfig = async (body: string): Promise<void> => {
    const head = `socket: { path: ${path.join(dir, 'sds.sock')} }
ca: { trustDomain: example.org, embedded: { dataDir: ${path.join(dir, 'ca')} }, bundlePropagationMs: 0 }
`;
    await fs.writeFile(`${file}.tmp`, head + body);
    await fs.rename(`${file}.tmp`, file);
  };
  const load = (): ServerConfig => {
    const command = parseCommandLine(['--config', file], {});
    if (command.kind !== 'run') throw new Error('expected run');
    return command.config;
  };
  const start = async (opts: { watchConfig?: boolean } = {}): Promise<RunningApp> => {
    app = await startApp(load(), createLogger({ level: 'debug', write: (l) => logs.push(JSON.parse(l) as Record<string, unknown>) }), { load, configFile: file, ...opts });
    client = new SdsTestClient(app.socketPath);
    return app;
  };
  const sotw = (name: string): Sotw => {
    const s = client!.stream();
    s.send({ node: envoyNode(), resource_names: [name], type_url: client!.typeUrl });
    return s;
  };
  const delta = (name: string): Delta => {
    const s = client!.delta();
    s.send({ node: envoyNode(), resource_names_subscribe: [name], type_url: client!.typeUrl });
    return s;
  };
  /** The stream's end if it has ended by now, else undefined (checked after a barrier event). */
  const endedYet = async (s: { ended: Promise<StreamEnd> }): Promise<StreamEnd | undefined> => Promise.race([s.ended, Promise.resolve(undefined)]);
  const servedName = (r: DiscoveryResponseObj): string => decodeSecret(r.resources[0]!).name;

  it('adds and removes an identity and a workload rule under 100 streams: unaffected streams see nothing, the new one is served, the removed one is reported', async () => {
    const uid = process.getuid!();
    const gid = process.getgid!();
    await writeConfig(`identities:
  - spiffeId: ${STAY_A}
  - spiffeId: ${STAY_B}
  - spiffeId: ${GONE}
  - spiffeId: ${REVOKED}
workloads:
  - selectors: ["unix:uid:${uid}"]
    identities: ["${STAY_A}", "${STAY_B}"]
  - selectors: ["unix:uid:${uid}", "unix:gid:${gid}"]
    identities: ["${GONE}", "${REVOKED}"]
`);
    await start();
    const before = app!.status().config!;
    expect(before).toMatchObject({ generation: 1, file, watching: false, restartRequired: [] });

    // Not granted yet: the rule that grants it comes with the reload.
    expect((await sotw(ADDED).ended).code).toBe(PERMISSION_DENIED);

    // 100 streams: 75 unaffected (SotW and Delta on two identities, SotW on the bundle), 20 on the
    // identity to remove, 5 on an identity that stays but is no longer granted.
    const unaffected: Array<{ s: { pending: number; ended: Promise<StreamEnd>; next(ms?: number): Promise<unknown> }; kind: string }> = [];
    for (let i = 0; i < 40; i++) unaffected.push({ s: sotw(STAY_A), kind: 'sotw stay-a' });
    for (let i = 0; i < 30; i++) unaffected.push({ s: delta(STAY_B), kind: 'delta stay-b' });
    for (let i = 0; i < 5; i++) unaffected.push({ s: sotw('ROOTCA'), kind: 'sotw ROOTCA' });
    const revoked = Array.from({ length: 5 }, () => sotw(REVOKED));
    const goneSotw = Array.from({ length: 10 }, () => sotw(GONE));
    const goneDelta = Array.from({ length: 10 }, () => delta(GONE));
    for (const { s } of unaffected) await s.next(10_000);
    for (const s of goneSotw) expect(servedName(await s.next(10_000))).toBe(GONE);
    for (const s of revoked) expect(servedName(await s.next(10_000))).toBe(REVOKED);
    for (const s of goneDelta) expect((await s.next(10_000)).resources.map((r) => r.name)).toEqual([GONE]);
    const versionOfA = app!.store.get(STAY_A)!.version;

    await writeConfig(`identities:
  - spiffeId: ${STAY_A}
  - spiffeId: ${STAY_B}
  - spiffeId: ${ADDED}
  - spiffeId: ${REVOKED}
workloads:
  - selectors: ["unix:uid:${uid}"]
    identities: ["${STAY_A}", "${STAY_B}"]
  - selectors: ["unix:uid:${uid}"]
    identities: ["${ADDED}"]
`);
    expect(await app!.reloadConfig('test')).toMatchObject({ outcome: 'applied', generation: 2, restartRequired: [] });

    // The removed identity is reported to every subscriber.
    for (const s of goneSotw) {
      const end = await s.ended;
      expect(end.code).toBe(INVALID_ARGUMENT);
      expect(end.details).toContain('SDS_ERR_UNKNOWN_SECRET');
    }
    for (const s of goneDelta) {
      const removal = await s.next(10_000);
      expect(removal.removed_resources).toEqual([GONE]);
      expect(removal.resources).toEqual([]);
    }
    // Still configured, no longer granted: refused as any name the caller may not have.
    for (const s of revoked) {
      const end = await s.ended;
      expect(end.code).toBe(PERMISSION_DENIED);
      expect(end.details).toContain('SDS_ERR_PERMISSION_DENIED');
    }
    // The new identity (and its rule) is served.
    const added = sotw(ADDED);
    const served = await added.next(10_000);
    expect(servedName(served)).toBe(ADDED);
    expect(decodeSecret(served.resources[0]!).tls_certificate?.private_key?.inline_bytes?.length).toBeGreaterThan(0);

    // Barrier passed: every response the reload caused was written before the one just read, on the
    // same HTTP/2 connection. The unaffected streams got none and are still open.
    for (const { s, kind } of unaffected) {
      expect({ kind, pending: s.pending, ended: await endedYet(s) }).toEqual({ kind, pending: 0, ended: undefined });
    }
    for (const s of goneDelta) expect({ pending: s.pending, ended: await endedYet(s) }).toEqual({ pending: 0, ended: undefined });
    expect(app!.store.get(STAY_A)!.version).toBe(versionOfA);
    expect(app!.store.get(GONE)).toBeUndefined();

    const after = app!.status();
    expect(after.config).toMatchObject({ generation: 2, lastReload: { trigger: 'test', outcome: 'applied' } });
    expect(after.config!.hash).not.toBe(before.hash);
    expect(after.config!.lastReloadError).toBeUndefined();
    expect(after.secrets.map((s) => s.name)).not.toContain(GONE);
    expect(after.authorization?.workloads).toBe(2);
    expect(logs).toContainEqual(expect.objectContaining({ msg: 'config reloaded', identitiesAdded: [ADDED], identitiesRemoved: [GONE], generation: 2 }));
  }, 60_000);

  it('an invalid new config keeps the running one serving and says why, with its code, in the log and /status', async () => {
    await writeConfig(`identities:\n  - spiffeId: ${STAY_A}\n`);
    await start();
    const s = sotw(STAY_A);
    await s.next(10_000);
    const generation = app!.status().config!.generation;

    const refusals: Array<[string, string, () => Promise<void>]> = [
      ['not YAML', 'SDS_ERR_CONFIG_INVALID', () => writeConfig('identities: [\n')],
      ['an unknown CA backend', 'SDS_ERR_CONFIG_INVALID', () => fs.writeFile(file, `socket: { path: ${path.join(dir, 'sds.sock')} }\nca: { backend: vault }\nidentities:\n  - spiffeId: ${STAY_A}\n`)],
      [
        'a certificate whose key does not match',
        'SDS_ERR_KEY_MISMATCH',
        async () => {
          const ca = await rootCa('example.org');
          const one = await issueLeaf(ca, { spiffeId: `${TD}/file` });
          const two = await issueLeaf(ca, { spiffeId: `${TD}/file` });
          await fs.writeFile(path.join(dir, 'file.crt'), one.chainPem);
          await fs.writeFile(path.join(dir, 'file.key'), two.keyPem);
          await writeConfig(`identities:\n  - spiffeId: ${STAY_A}\ncertificates:\n  - { name: "${TD}/file", cert: file.crt, key: file.key }\n`);
        },
      ],
    ];
    for (const [what, code, write] of refusals) {
      await write();
      const outcome = await app!.reloadConfig('SIGHUP');
      expect(outcome, what).toMatchObject({ outcome: 'refused', error: { code } });
      const status = app!.status().config!;
      expect(status.generation, what).toBe(generation);
      expect(status.lastReloadError, what).toMatchObject({ code });
      expect(status.lastReload, what).toMatchObject({ trigger: 'SIGHUP', outcome: 'refused' });
      expect(logs, what).toContainEqual(expect.objectContaining({ level: 'error', msg: 'config reload refused; still serving the running config', code }));
    }
    // Never the key in what the operator sees.
    expect(JSON.stringify(logs) + JSON.stringify(app!.status())).not.toContain('PRIVATE KEY');
    // Still serving: the open stream is untouched, a new one is answered.
    expect(await endedYet(s)).toBeUndefined();
    expect(servedName(await sotw(STAY_A).next(10_000))).toBe(STAY_A);

    // A setting that cannot change live is named in a warning and keeps its value; a good reload clears the error.
    await writeConfig(`log: { level: warn }\nidentities:\n  - spiffeId: ${STAY_A}\n`);
    expect(await app!.reloadConfig('SIGHUP')).toMatchObject({ outcome: 'unchanged', restartRequired: ['log.level'] });
    expect(logs).toContainEqual(expect.objectContaining({ level: 'warn', code: 'SDS_ERR_CONFIG_NEEDS_RESTART', settings: ['log.level'] }));
    expect(app!.status().config).toMatchObject({ generation, restartRequired: ['log.level'] });
    expect(app!.status().config!.lastReloadError).toBeUndefined();
    expect(s.pending).toBe(0);
    const metrics = await app!.metrics.registry.metrics();
    expect(metrics).toContain('sds_config_reloads_total{outcome="refused"} 3');
    expect(metrics).toContain('sds_config_reloads_total{outcome="unchanged"} 1');
    expect(metrics).toMatch(new RegExp(`sds_config_generation ${generation}\\b`));
  }, 60_000);

  it('with authorization on, renaming the `default` alias re-points each caller\'s view: the old name is unknown, the new one is its first identity', async () => {
    const uid = process.getuid!();
    const body = (aliases: string): string => `${aliases}identities:\n  - spiffeId: ${STAY_A}\nworkloads:\n  - { selectors: ["unix:uid:${uid}"], identities: ["${STAY_A}"] }\n`;
    await writeConfig(body(''));
    await start();
    const byDefault = sotw('default');
    const byId = sotw(STAY_A);
    expect(servedName(await byDefault.next(10_000))).toBe('default');
    await byId.next(10_000);
    await writeConfig(body('aliases: { defaultCertificate: mine }\n'));
    expect(await app!.reloadConfig()).toMatchObject({ outcome: 'applied' });
    const end = await byDefault.ended;
    expect(end.code).toBe(INVALID_ARGUMENT);
    expect(end.details).toContain('SDS_ERR_UNKNOWN_SECRET');
    expect(servedName(await sotw('mine').next(10_000))).toBe('mine');
    expect({ pending: byId.pending, ended: await endedYet(byId) }).toEqual({ pending: 0, ended: undefined });
  }, 60_000);

  it('--watch-config needs --config', () => {
    expect(() => parseCommandLine(['--watch-config'], {})).toThrow('--watch-config: needs --config (the file to watch)');
  });

  it('--watch-config picks up a file change: a Delta stream waiting for a name not configured yet is served it', async () => {
    await writeConfig(`identities:\n  - spiffeId: ${STAY_A}\n`);
    await start({ watchConfig: true });
    expect(app!.status().config).toMatchObject({ watching: true, generation: 1 });
    const held = sotw(STAY_A);
    await held.next(10_000);
    // Not configured: Delta says so with removed_resources and keeps the name subscribed.
    const waiting = delta(ADDED);
    expect((await waiting.next(10_000)).removed_resources).toEqual([ADDED]);

    await writeConfig(`identities:\n  - spiffeId: ${STAY_A}\n  - spiffeId: ${ADDED}\n`);
    const served = await waiting.next(15_000);
    expect(served.resources.map((r) => r.name)).toEqual([ADDED]);
    // One change, one new generation; a second event for the same write (editors and writeFile can
    // produce two) may be recorded after it as an `unchanged` reload, which must not bump it.
    const config = app!.status().config;
    expect(config).toMatchObject({ generation: 2, lastReload: { trigger: 'config file changed' } });
    expect(['applied', 'unchanged']).toContain(config?.lastReload?.outcome);
    expect(held.pending).toBe(0);
  }, 60_000);

  it('the sds-server program reloads its --config on SIGHUP: a file certificate added is served, the one kept is not re-sent', async () => {
    const ca = await rootCa('example.org');
    for (const name of ['one', 'two']) {
      const leaf = await issueLeaf(ca, { spiffeId: `${TD}/${name}` });
      await fs.writeFile(path.join(dir, `${name}.crt`), leaf.chainPem);
      await fs.writeFile(path.join(dir, `${name}.key`), leaf.keyPem, { mode: 0o600 });
    }
    const socketPath = path.join(dir, 'sds.sock');
    const certs = (names: string[]): string =>
      `socket: { path: ${socketPath} }\ncertificates:\n${names.map((n) => `  - { name: "${TD}/${n}", cert: ${n}.crt, key: ${n}.key }\n`).join('')}`;
    await fs.writeFile(file, certs(['one']));
    const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
    const child = spawn(process.execPath, ['--import', 'tsx', path.join(root, 'src', 'cli', 'main.ts'), '--config', file], { cwd: root, stdio: ['ignore', 'pipe', 'pipe'] });
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    let output = '';
    child.stdout.on('data', (d: Buffer) => (output += d.toString()));
    child.stderr.on('data', (d: Buffer) => (output += d.toString()));
    try {
      const logged = (text: string): Promise<void> => new Promise((resolve) => (output.includes(text) ? resolve() : child.stdout.on('data', () => output.includes(text) && resolve())));
      await logged('all secrets ready');
      client = new SdsTestClient(socketPath);
      const kept = sotw(`${TD}/one`);
      await kept.next(10_000);
      const waiting = delta(`${TD}/two`);
      expect((await waiting.next(10_000)).removed_resources).toEqual([`${TD}/two`]);

      await fs.writeFile(file, certs(['one', 'two']));
      child.kill('SIGHUP');
      expect((await waiting.next(15_000)).resources.map((r) => r.name)).toEqual([`${TD}/two`]);
      // The reload is done (every file read) once logged; a new stream's answer on the same
      // connection comes after anything the reload wrote to the kept one.
      await logged('"msg":"config reloaded"');
      await sotw(`${TD}/one`).next(10_000);
      expect({ pending: kept.pending, ended: await endedYet(kept) }).toEqual({ pending: 0, ended: undefined });
    } finally {
      client?.close();
      client = undefined;
      child.kill('SIGTERM');
      expect(await exited).toBe(0);
    }
    expect(output).not.toContain('PRIVATE KEY');
  }, 60_000);

  it('the first identity starts the CA and the last one stops it; `default` can point elsewhere; the streams of other secrets see nothing', async () => {
    const ca = await rootCa('example.org');
    await fs.writeFile(path.join(dir, 'ca.crt'), ca.certPem);
    for (const name of ['front', 'other']) {
      const leaf = await issueLeaf(ca, { spiffeId: `${TD}/${name}` });
      await fs.writeFile(path.join(dir, `${name}.crt`), leaf.chainPem);
      await fs.writeFile(path.join(dir, `${name}.key`), leaf.keyPem, { mode: 0o600 });
    }
    const ISSUED = 'spiffe://mesh.org/issued';
    const files = `certificates:
  - { name: "${TD}/front", cert: front.crt, key: front.key }
  - { name: "${TD}/other", cert: other.crt, key: other.key }
bundles:
  - { name: "${TD}", ca: ca.crt }
`;
    const meshCa = `ca: { trustDomain: mesh.org, embedded: { dataDir: ${path.join(dir, 'mesh-ca')} }, bundlePropagationMs: 0 }\n`;
    const write = (body: string): Promise<void> => fs.writeFile(file, `socket: { path: ${path.join(dir, 'sds.sock')} }\n${body}`);
    await write(files);
    await start();
    const bundle = sotw(TD);
    const front = sotw(`${TD}/front`);
    const byDefault = sotw('default');
    for (const s of [bundle, front]) await s.next(10_000);
    expect(servedName(await byDefault.next(10_000))).toBe('default');
    const waiting = delta(ISSUED);
    expect((await waiting.next(10_000)).removed_resources).toEqual([ISSUED]);

    // The first identity: the CA starts and issues it; `default` now names the other certificate.
    await write(`${files}default: "${TD}/other"\n${meshCa}identities:\n  - { spiffeId: "${ISSUED}", names: [issued] }\n`);
    expect(await app!.reloadConfig()).toMatchObject({ outcome: 'applied', restartRequired: [] });
    expect((await waiting.next(10_000)).resources.map((r) => r.name)).toEqual([ISSUED]);
    const pushed = await byDefault.next(10_000);
    const otherPem = await fs.readFile(path.join(dir, 'other.crt'), 'utf8');
    expect(decodeSecret(pushed.resources[0]!).tls_certificate?.certificate_chain?.inline_bytes?.toString()).toBe(otherPem);
    expect(servedName(await sotw('issued').next(10_000))).toBe('issued');

    // The last identity: the CA stops; its identity and bundle are gone.
    const meshBundle = delta('spiffe://mesh.org');
    expect((await meshBundle.next(10_000)).resources.map((r) => r.name)).toEqual(['spiffe://mesh.org']);
    await write(`${files}default: "${TD}/other"\n`);
    expect(await app!.reloadConfig()).toMatchObject({ outcome: 'applied', generation: 3 });
    expect((await waiting.next(10_000)).removed_resources).toEqual([ISSUED]);
    expect((await meshBundle.next(10_000)).removed_resources).toEqual(['spiffe://mesh.org']);
    // Barrier on the same connection, then: the bundle and front streams got nothing.
    await sotw(TD).next(10_000);
    for (const s of [bundle, front]) expect({ pending: s.pending, ended: await endedYet(s) }).toEqual({ pending: 0, ended: undefined });
    expect(app!.status().secrets.map((x) => x.name).sort()).toEqual([TD, `${TD}/front`, `${TD}/other`]);
  }, 60_000);
});
