/**
 * Runs a FileSource in its own process, so a test running as root can observe it as another user
 * (root reads files whatever their mode). Started with `node --import tsx`.
 *
 * argv[2]: JSON `{ tls: FileTlsSecretSpec[], bundles: FileBundleSpec[] }`.
 * stdin, one command per line: `status` prints a report; `reload` calls reloadAll() first.
 * stdout: one JSON report per line (after start, then per command). Exits when stdin closes.
 */
import { createInterface } from 'node:readline';
import { createLogger } from '../../src/core/logger.js';
import { SecretStore } from '../../src/secrets/store.js';
import { FileSource, type FileBundleSpec, type FileTlsSecretSpec } from '../../src/sources/file-source.js';

export interface ChildReport {
  uid: number | undefined;
  status: ReturnType<FileSource['status']>;
  /** Name -> [version, serial] of the served entry. */
  served: Record<string, { version: string; serial?: string } | null>;
  /** Notifications per name since start. */
  pushes: Record<string, number>;
  logs: string[];
}

const config = JSON.parse(process.argv[2] ?? '{}') as { tls?: FileTlsSecretSpec[]; bundles?: FileBundleSpec[] };
const logs: string[] = [];
const store = new SecretStore();
const source = new FileSource({
  tls: config.tls ?? [],
  bundles: config.bundles ?? [],
  publisher: store,
  log: createLogger({ level: 'debug', write: (line) => logs.push(line) }),
  pollIntervalMs: 0,
});
const pushes: Record<string, number> = {};
for (const s of [...(config.tls ?? []), ...(config.bundles ?? [])]) {
  pushes[s.name] = 0;
  store.watch(s.name, () => (pushes[s.name] = (pushes[s.name] ?? 0) + 1));
}

function report(): void {
  const served: ChildReport['served'] = {};
  for (const name of Object.keys(pushes)) {
    const entry = store.get(name);
    const serial = entry?.value.kind === 'tls-certificate' ? entry.value.leaf.serialNumber : undefined;
    served[name] = entry ? { version: entry.version, ...(serial !== undefined ? { serial } : {}) } : null;
  }
  const out: ChildReport = { uid: process.getuid?.(), status: source.status(), served, pushes, logs: logs.splice(0) };
  process.stdout.write(JSON.stringify(out) + '\n');
}

await source.start();
report();
for await (const line of createInterface({ input: process.stdin })) {
  if (line === 'reload') await source.reloadAll();
  report();
}
await source.close();
