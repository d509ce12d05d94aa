import { existsSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import path from 'node:path';
import protobuf from 'protobufjs';

/** Our own wire-compatible .proto files, shipped beside `dist/` and `src/`. */
export const PROTO_DIR = fileURLToPath(new URL('../../proto/', import.meta.url));

/** The entry points of proto/ (imports follow); also the input of `npm run gen:types`. */
export const PROTO_FILES = [
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
  // Proto field names (snake_case), as the generated types in ./generated/ spell them.
  r.loadSync(PROTO_FILES, { keepCase: true });
  return r;
}

export function messageType(name: string): protobuf.Type {
  return protoRoot().lookupType(name);
}

/**
 * How a decoded message becomes a plain object: the shape the generated `__Output` types describe
 * (scripts/gen-types.ts passes the matching generator flags): every non-oneof field present with
 * its default, message fields null when absent, 64-bit integers as strings, bytes as Buffer.
 */
export const TO_OBJECT: protobuf.IConversionOptions = { defaults: true, longs: String };

/** Decodes `bytes` as `type` into the plain object the generated `T` (a `__Output` type) describes; a Buffer, so bytes fields decode as Buffer views of it. */
export function decodeAs<T>(type: protobuf.Type, bytes: Buffer): T {
  return type.toObject(type.decode(bytes), TO_OBJECT) as T;
}
