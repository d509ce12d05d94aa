/**
 * `npm run gen:types`: TypeScript types for the messages of proto/ (v3 and v2 SDS), written to
 * src/api/generated/ by @grpc/proto-loader's `proto-loader-gen-types` (as grpc-js-xds does).
 * The output is committed; test/generated-types.test.ts fails when it differs from a fresh run.
 *
 * The flags describe how src/api/proto-root.ts turns decoded messages into plain objects
 * (TO_OBJECT there): proto field names (keepCase), 64-bit integers as strings, defaults filled in,
 * bytes as Buffer. Change both together.
 */
import { execFileSync } from 'node:child_process';
import { readdirSync, rmSync, statSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { PROTO_FILES } from '../src/api/proto-root.js';

export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
export const GENERATED_DIR = path.join(REPO_ROOT, 'src', 'api', 'generated');

const require = createRequire(import.meta.url);
const LOADER_DIR = path.dirname(require.resolve('@grpc/proto-loader/package.json'));
const GENERATOR = path.join(LOADER_DIR, 'build', 'bin', 'proto-loader-gen-types.js');

const FLAGS = ['--keepCase', '--longs=String', '--defaults', '--grpcLib=@grpc/grpc-js', '--importFileExtension=.js'];

/**
 * Writes the generated types for PROTO_FILES into `outDir` (created if missing; existing files
 * are overwritten, others left alone). Runs from the repository root with `-I proto`, because
 * each file names its source proto relative to that. Throws when the generator fails.
 */
export function generateTypes(outDir: string): void {
  execFileSync(process.execPath, [GENERATOR, ...FLAGS, '-I', 'proto', '-O', outDir, ...PROTO_FILES], {
    cwd: REPO_ROOT,
    // stderr carries the generator's warnings that google/protobuf/* come from protobufjs' bundled copies.
    stdio: ['ignore', 'inherit', 'pipe'],
  });
  // The generator also writes one package-root file per input proto (sds.ts, secret.ts, ...), each
  // a `ProtoGrpcType` for proto-loader's loadPackageDefinition, which we do not use. Message types
  // all live in package folders, so every top-level file is such a root.
  for (const entry of readdirSync(outDir)) {
    const file = path.join(outDir, entry);
    if (statSync(file).isFile()) rmSync(file);
  }
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  rmSync(GENERATED_DIR, { recursive: true, force: true });
  generateTypes(GENERATED_DIR);
  console.log(`wrote ${path.relative(REPO_ROOT, GENERATED_DIR)}/`);
}
