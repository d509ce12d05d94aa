import { existsSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import path from 'node:path';
import protobuf from 'protobufjs';

/** Our own wire-compatible .proto files, shipped beside `dist/` and `src/`. */
export const PROTO_DIR = fileURLToPath(new URL('../../proto/', import.meta.url));

const FILES = [
  'envoy/service/secret/v3/sds.proto',
  'envoy/extensions/transport_sockets/tls/v3/secret.proto',
  'envoy/extensions/transport_sockets/tls/v3/tls_spiffe_validator_config.proto',
  'envoy/service/discovery/v2/sds.proto',
  'envoy/api/v2/auth/secret.proto',
];

/**
 * Written by `npm run build` (scripts/build.mjs) beside the bundle: {@link loadProtoFiles}' root as
 * JSON, which loads about four times faster than parsing proto/ (start-up time, BENCHMARKS.md).
 * Absent when running from src/: the .proto files are parsed then.
 */
const PREBUILT = fileURLToPath(new URL('./proto-root.json', import.meta.url));

let root: protobuf.Root | undefined;

/** Loads the proto files once per process (from the build's JSON when there is one). */
export function protoRoot(): protobuf.Root {
  if (root) return root;
  const r = existsSync(PREBUILT) ? protobuf.Root.fromJSON(JSON.parse(readFileSync(PREBUILT, 'utf8')) as protobuf.INamespace) : loadProtoFiles();
  r.resolveAll();
  root = r;
  return r;
}

/** Parses proto/ (our files; protobufjs ships google/protobuf/*). */
export function loadProtoFiles(): protobuf.Root {
  const r = new protobuf.Root();
  r.resolvePath = (_origin, target) => {
    // protobufjs ships google/protobuf/*; everything else is ours.
    if (target.startsWith('google/protobuf/')) return target;
    return path.isAbsolute(target) ? target : path.join(PROTO_DIR, target);
  };
  r.loadSync(FILES, { keepCase: false });
  return r;
}

export function messageType(name: string): protobuf.Type {
  return protoRoot().lookupType(name);
}
