import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { build } from 'esbuild';

/** A script another local user can run: one self-contained file in a 0755 temp folder. */
export interface OtherUserScript {
  /** The bundled script (mode 0644). */
  file: string;
  /** Its folder (mode 0755), a good cwd for the child. */
  dir: string;
  remove(): Promise<void>;
}

/**
 * Bundles `entry` (a TypeScript file of the checkout) and everything it imports into one ESM file
 * in a fresh temp folder readable by every user. A test running as root runs it as `nobody`,
 * who may not be able to read the checkout (CI can clone into a 0700 directory), so neither tsx
 * nor node_modules are loaded from there.
 */
export async function bundleForOtherUser(entry: string): Promise<OtherUserScript> {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'sds-other-user-'));
  await fs.chmod(dir, 0o755);
  const file = path.join(dir, `${path.basename(entry, path.extname(entry))}.mjs`);
  await build({
    entryPoints: [entry],
    outfile: file,
    bundle: true,
    platform: 'node',
    format: 'esm',
    target: 'node20',
    logLevel: 'silent',
    // CommonJS dependencies call require() for Node built-ins; give the ESM bundle one.
    banner: { js: "import { createRequire as __sdsCreateRequire } from 'node:module'; const require = __sdsCreateRequire(import.meta.url);" },
  });
  await fs.chmod(file, 0o644);
  return { file, dir, remove: () => fs.rm(dir, { recursive: true, force: true }) };
}
