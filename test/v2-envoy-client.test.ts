/**
 * SDS v2 as Envoy 1.16 speaks it (App Mesh's Envoys), checked by a client built from the upstream
 * v2 types and validators of go-control-plane v0.9.9 (test/v2client, a Go module of its own), not
 * from our own .proto files. One StreamSecrets stream per name, like Envoy; every response runs
 * through the upstream Validate(), the chain is parsed and the key matched, and the client ACKs or
 * NACKs as Envoy does.
 *
 * The binary: $V2CLIENT_BIN, else test/v2client/v2client (built by .ci/run), else built here with
 * `go build` when Go is installed. Without it the test is skipped with a note, except under CI.
 */
import { execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { accessSync, constants } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startApp, type RunningApp } from '../src/cli/app.js';
import { defaultConfig } from '../src/cli/config.js';
import { createLogger } from '../src/core/logger.js';
import { createRootCa, issueLeaf, type CertificateAuthority, type IssuedLeaf } from '../src/x509/issue.js';
import { REPO_ROOT, isCi } from './envoy/find-envoy.js';
import { RenameWriter, makeTempDir, removeTempDir, waitFor } from './helpers/files.js';

const MODULE_DIR = path.join(REPO_ROOT, 'test', 'v2client');
const BUILT_BIN = path.join(MODULE_DIR, 'v2client');

/** Names of examples/appmesh-v2/bootstrap-v2.yaml, then the Istio-style aliases. */
const FRONT = 'spiffe://example.org/front';
const TRUST_DOMAIN_ID = 'spiffe://example.org';
const NAMES = [FRONT, TRUST_DOMAIN_ID, 'default', 'ROOTCA'];
const LEAF_NAMES = [FRONT, 'default'];
const BUNDLE_NAMES = [TRUST_DOMAIN_ID, 'ROOTCA'];

function isExecutable(file: string): boolean {
  try {
    accessSync(file, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

/** The client binary, building it with Go when possible; a problem string otherwise. */
function findOrBuildClient(): { bin: string } | { problem: string } {
  const fromEnv = process.env.V2CLIENT_BIN;
  if (fromEnv) return isExecutable(fromEnv) ? { bin: fromEnv } : { problem: `V2CLIENT_BIN=${fromEnv} is not executable` };
  if (isExecutable(BUILT_BIN)) return { bin: BUILT_BIN };
  if (spawnSync('go', ['version']).status !== 0) {
    return { problem: 'test/v2client/v2client is not built and Go is not installed (`cd test/v2client && go build -o v2client .`)' };
  }
  try {
    execFileSync('go', ['build', '-o', BUILT_BIN, '.'], { cwd: MODULE_DIR, stdio: 'pipe', timeout: 600_000 });
    return { bin: BUILT_BIN };
  } catch (err) {
    return { problem: `go build of test/v2client failed: ${(err as Error).message}` };
  }
}

interface ClientEvent {
  event: 'started' | 'accepted' | 'nacked' | 'closed';
  name?: string;
  version?: string;
  kind?: string;
  serial?: string;
  changed?: boolean;
  reason?: string;
  code?: string;
  message?: string;
}

/** The Go client as a child process; its JSON-line events collected in order. */
class V2Client {
  readonly events: ClientEvent[] = [];
  private stderr = '';
  private constructor(private readonly child: ChildProcess) {
    createInterface({ input: child.stdout! }).on('line', (line) => this.events.push(JSON.parse(line) as ClientEvent));
    child.stderr!.on('data', (d: Buffer) => (this.stderr += d.toString('utf8')));
  }

  static start(bin: string, socketPath: string, names: string[]): V2Client {
    return new V2Client(spawn(bin, ['-socket', socketPath, '-names', names.join(',')], { stdio: ['pipe', 'pipe', 'pipe'] }));
  }

  accepted(name: string): ClientEvent[] {
    return this.events.filter((e) => e.event === 'accepted' && e.name === name);
  }

  describe(): string {
    return `events: ${JSON.stringify(this.events)}\nstderr: ${this.stderr}`;
  }

  /** Closes stdin (the client's stop signal) and waits for it to exit. */
  async stop(): Promise<number | null> {
    if (this.child.exitCode !== null) return this.child.exitCode;
    const exited = new Promise<number | null>((resolve) => this.child.once('exit', (code) => resolve(code)));
    this.child.stdin!.end();
    const timer = setTimeout(() => this.child.kill('SIGKILL'), 5_000);
    const code = await exited;
    clearTimeout(timer);
    return code;
  }
}

const client = findOrBuildClient();
if ('problem' in client) {
  if (isCi()) throw new Error(`the Go v2 client is required under CI: ${client.problem}`);
  console.warn(`v2 Envoy-faithful client test skipped: ${client.problem}`);
}

describe.skipIf('problem' in client)('SDS v2 with an Envoy 1.16-faithful client on go-control-plane v0.9.9 types', () => {
  const bin = 'bin' in client ? client.bin : '';
  let dir: string;
  let app: RunningApp;
  let ca: CertificateAuthority;
  let leafWriter: RenameWriter;
  let bundleWriter: RenameWriter;
  let firstLeaf: IssuedLeaf;

  beforeAll(async () => {
    dir = await makeTempDir('sds-v2client-');
    ca = await createRootCa({ commonName: 'example.org v2 root', trustDomain: 'example.org' });
    leafWriter = new RenameWriter(path.join(dir, 'front'));
    bundleWriter = new RenameWriter(path.join(dir, 'bundle'));
    await mkdir(leafWriter.dir);
    await mkdir(bundleWriter.dir);
    firstLeaf = await issueLeaf(ca, { spiffeId: FRONT });
    await leafWriter.init({ 'tls.crt': firstLeaf.chainPem, 'tls.key': firstLeaf.keyPem });
    await bundleWriter.init({ 'ca.pem': ca.certPem });

    const config = defaultConfig();
    config.socket.path = path.join(dir, 'sds.sock');
    config.certificates = [{ name: FRONT, cert: leafWriter.path('tls.crt'), key: leafWriter.path('tls.key'), names: [] }];
    config.bundles = [{ name: TRUST_DOMAIN_ID, ca: [bundleWriter.path('ca.pem')], trustDomain: 'example.org', names: [] }];
    app = await startApp(config, createLogger({ level: 'warn', write: () => undefined }));
  });
  afterAll(async () => {
    await app?.stop();
    if (dir) await removeTempDir(dir);
  });

  const serialHex = (leaf: IssuedLeaf | CertificateAuthority): string => leaf.serialNumber.toLowerCase().replace(/^0+/, '');

  it('accepts every secret of the App Mesh v2 bootstrap, default and ROOTCA, and sees exactly one push per rotation', async () => {
    const v2 = V2Client.start(bin, app.socketPath, NAMES);
    try {
      // First answer on each of the four streams: ACKed, nothing NACKed, nothing closed.
      await waitFor(`an accepted secret on each of ${NAMES.join(', ')}`, () => NAMES.every((n) => v2.accepted(n).length === 1), 10_000).catch((err: Error) => {
        throw new Error(`${err.message}\n${v2.describe()}`);
      });
      for (const n of LEAF_NAMES) expect(v2.accepted(n)[0]?.kind, n).toBe('tls_certificate');
      // v2 has no custom validator: bundles arrive as trusted_ca.
      for (const n of BUNDLE_NAMES) {
        expect(v2.accepted(n)[0]?.kind, n).toBe('validation_context');
        expect(v2.accepted(n)[0]?.serial, n).toBe(serialHex(ca));
      }

      // Rotation of the leaf file: one push on the two streams naming it, none on the bundle streams.
      const next = await issueLeaf(ca, { spiffeId: FRONT });
      await leafWriter.rotate({ 'tls.crt': next.chainPem, 'tls.key': next.keyPem });
      await waitFor('the rotated leaf on front and default', () => LEAF_NAMES.every((n) => v2.accepted(n).length >= 2), 10_000);

      // Rotation of the bundle (a second CA added): one push on the two bundle streams. Its
      // arrival also closes the window for any duplicate push of the leaf rotation.
      const nextCa = await createRootCa({ commonName: 'example.org v2 root 2', trustDomain: 'example.org' });
      await bundleWriter.rotate({ 'ca.pem': `${ca.certPem}${nextCa.certPem}` });
      await waitFor('the rotated bundle on the trust-domain ID and ROOTCA', () => BUNDLE_NAMES.every((n) => v2.accepted(n).length >= 2), 10_000);
      // And a second leaf rotation, whose arrival closes the window for duplicates of the bundle push.
      const third = await issueLeaf(ca, { spiffeId: FRONT });
      await leafWriter.rotate({ 'tls.crt': third.chainPem, 'tls.key': third.keyPem });
      await waitFor('the second rotated leaf on front and default', () => LEAF_NAMES.every((n) => v2.accepted(n).length >= 3), 10_000);

      for (const n of LEAF_NAMES) {
        expect(v2.accepted(n).map((e) => e.serial), n).toEqual([serialHex(firstLeaf), serialHex(next), serialHex(third)]);
        expect(v2.accepted(n).every((e) => e.changed), `${n}: every push carried new content`).toBe(true);
      }
      for (const n of BUNDLE_NAMES) expect(v2.accepted(n), n).toHaveLength(2);
      expect(v2.events.filter((e) => e.event === 'nacked' || e.event === 'closed'), v2.describe()).toEqual([]);
    } finally {
      expect(await v2.stop()).toBe(0);
    }
  });

  it('NACKs, as Envoy does, a key that does not match the certificate; the server keeps serving', async () => {
    const v2 = V2Client.start(bin, app.socketPath, [FRONT]);
    try {
      await waitFor('the first answer', () => v2.accepted(FRONT).length === 1, 10_000);
      const other = await issueLeaf(ca, { spiffeId: FRONT });
      const served = v2.accepted(FRONT)[0];
      // Validation bypassed on purpose: publish straight into the store, as a broken source would.
      const current = app.store.get(FRONT);
      if (current?.value.kind !== 'tls-certificate') throw new Error('front is not served');
      app.store.publish(FRONT, { ...current.value, certificateChainPem: other.chainPem });
      await waitFor('a NACK', () => v2.events.some((e) => e.event === 'nacked'), 10_000);
      const nack = v2.events.find((e) => e.event === 'nacked');
      expect(nack?.reason).toMatch(/private key does not match public key/);
      expect(v2.accepted(FRONT)).toEqual([served]);
      expect(v2.events.filter((e) => e.event === 'closed')).toEqual([]);
    } finally {
      expect(await v2.stop()).toBe(0);
    }
  });
});
