import { existsSync } from 'node:fs';
import path from 'node:path';
import { createRequire } from 'node:module';
import protobuf from 'protobufjs';

/**
 * The upstream Envoy API protos shipped inside @grpc/grpc-js-xds (deps/), loaded with protobufjs.
 * Tests decode what our server sends with these, never with our own proto/ files.
 */
const require = createRequire(import.meta.url);
const XDS_PACKAGE_DIR = path.dirname(require.resolve('@grpc/grpc-js-xds/package.json'));
const PROTOBUFJS_DIR = path.dirname(require.resolve('protobufjs/package.json'));
export const UPSTREAM_PROTO_DIRS = ['envoy-api', 'xds', 'googleapis', 'protoc-gen-validate'].map((d) =>
  path.join(XDS_PACKAGE_DIR, 'deps', d),
);

let root: protobuf.Root | undefined;

export function upstreamRoot(): protobuf.Root {
  if (root) return root;
  const r = new protobuf.Root();
  r.resolvePath = (_origin, target) => {
    if (path.isAbsolute(target)) return target;
    for (const dir of [...UPSTREAM_PROTO_DIRS, PROTOBUFJS_DIR]) {
      const candidate = path.join(dir, target);
      if (existsSync(candidate)) return candidate;
    }
    return target; // protobufjs' bundled google/protobuf common types
  };
  r.loadSync(
    [
      'envoy/service/secret/v3/sds.proto',
      'envoy/extensions/transport_sockets/tls/v3/secret.proto',
      'envoy/extensions/transport_sockets/tls/v3/tls_spiffe_validator_config.proto',
    ],
    { keepCase: true },
  );
  r.resolveAll();
  root = r;
  return r;
}

export const upstreamType = (name: string): protobuf.Type => upstreamRoot().lookupType(name);
