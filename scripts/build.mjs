/**
 * `npm run build`: bundles src/cli/main.ts and its dependencies into dist/cli/ with esbuild.
 *
 * Why a bundle: start-up. Unbundled, Node resolves, reads and compiles ~700 files (the AWS SDK,
 * @peculiar/x509's asn1 stack, grpc-js, ...) before the socket is bound; one file per chunk makes
 * start-up a fraction of that (BENCHMARKS.md, "Start-up"). Modules the code imports with
 * `import()` (CA backends, file watching, attestation, admin, subcommands) become chunks loaded
 * only when a configuration uses them. Type checking stays with `npm run typecheck` / `npm test`.
 *
 * Every chunk sits beside main.js in dist/cli/, so `new URL('../../proto/', import.meta.url)`
 * (src/api/proto-root.ts) and `../../package.json` (src/cli/main.ts) resolve from any of them.
 * Source maps are written next to each file: run with `node --enable-source-maps` (or
 * NODE_OPTIONS) for stack traces that name src/ files and lines.
 *
 * Also writes dist/cli/proto-root.json: the protobuf root of proto/ as JSON (src/api/proto-root.ts
 * loads it instead of parsing the .proto files at every start).
 */
import { readdir, rm, stat, writeFile } from 'node:fs/promises';
import { pathToFileURL } from 'node:url';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import * as esbuild from 'esbuild';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const args = process.argv.slice(2);
// `--if-stale` (npm start's prestart): do nothing when dist/ is newer than everything it is built
// from, so starting the server does not rebuild (issue 13).
const ifStale = args.includes('--if-stale');
const outArg = args.find((a) => !a.startsWith('--'));
const outdir = outArg ? path.resolve(outArg) : path.join(ROOT, 'dist');

/** Newest modification time (ms) of `p` and, for a directory, everything under it; 0 if absent. */
async function newest(p) {
  const s = await stat(p).catch(() => undefined);
  if (!s) return 0;
  if (!s.isDirectory()) return s.mtimeMs;
  const entries = await readdir(p);
  return Math.max(s.mtimeMs, ...(await Promise.all(entries.map((e) => newest(path.join(p, e))))));
}

if (ifStale) {
  const built = (await stat(path.join(outdir, 'cli', 'proto-root.json')).catch(() => undefined))?.mtimeMs ?? 0;
  const inputs = await Promise.all(['src', 'proto', 'package.json', 'scripts/build.mjs'].map((p) => newest(path.join(ROOT, p))));
  if (built > Math.max(...inputs)) process.exit(0);
}

await rm(outdir, { recursive: true, force: true });
await esbuild.build({
  absWorkingDir: ROOT,
  entryPoints: { 'cli/main': 'src/cli/main.ts' },
  outdir,
  bundle: true,
  splitting: true,
  chunkNames: 'cli/chunk-[hash]',
  format: 'esm',
  platform: 'node',
  target: 'node20',
  sourcemap: 'linked',
  // A native addon: loaded from node_modules at run time (src/attestation/peer-credentials.ts).
  external: ['koffi'],
  // Less to read, compile and keep in memory (~40 ms of CPU and ~1.8 MiB of RSS at start here);
  // identifiers stay, so stack traces keep function names, and the source maps give src/ lines.
  minifyWhitespace: true,
  minifySyntax: true,
  // CommonJS dependencies (grpc-js, protobufjs, ...) call require() for Node built-ins.
  banner: { js: "import { createRequire as __sdsCreateRequire } from 'node:module'; const require = __sdsCreateRequire(import.meta.url);" },
  logLevel: 'warning',
});

// The root as src/api/proto-root.ts loads it from proto/, bundled on its own and run once here.
const protoModule = path.join(outdir, 'proto-root-build.mjs');
await esbuild.build({ absWorkingDir: ROOT, entryPoints: ['src/api/proto-root.ts'], outfile: protoModule, bundle: true, format: 'esm', platform: 'node', target: 'node20', banner: { js: "import { createRequire as __sdsCreateRequire } from 'node:module'; const require = __sdsCreateRequire(import.meta.url);" }, define: { 'import.meta.url': JSON.stringify(pathToFileURL(path.join(ROOT, 'src/api/proto-root.ts')).href) }, logLevel: 'warning' });
const { loadProtoFiles } = await import(pathToFileURL(protoModule).href);
await writeFile(path.join(outdir, 'cli', 'proto-root.json'), JSON.stringify(loadProtoFiles().toJSON()));
await rm(protoModule);
