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

let root: protobuf.Root | undefined;

/** Loads the proto files once per process. */
export function protoRoot(): protobuf.Root {
  if (root) return root;
  const r = new protobuf.Root();
  r.resolvePath = (_origin, target) => {
    // protobufjs ships google/protobuf/*; everything else is ours.
    if (target.startsWith('google/protobuf/')) return target;
    return path.isAbsolute(target) ? target : path.join(PROTO_DIR, target);
  };
  r.loadSync(PROTO_FILES, { keepCase: false });
  r.resolveAll();
  root = r;
  return r;
}

export function messageType(name: string): protobuf.Type {
  return protoRoot().lookupType(name);
}
