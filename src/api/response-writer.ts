import protobuf from 'protobufjs';

/**
 * Hand-assembled DiscoveryResponse / DeltaDiscoveryResponse bytes. The field numbers are the same
 * in v2 and v3; resources arrive pre-encoded (as google.protobuf.Any), so writing a response to a
 * stream copies bytes instead of re-encoding secrets.
 */

// DiscoveryResponse: version_info=1, resources=2, type_url=4, nonce=5.
// DeltaDiscoveryResponse: system_version_info=1, resources=2, type_url=4, nonce=5, removed_resources=6.
// Resource: version=1, resource=2, name=3.
const LEN = 2;
const tag = (field: number): number => (field << 3) | LEN;

export function encodeAny(typeUrl: string, value: Uint8Array): Buffer {
  return finish(protobuf.Writer.create().uint32(tag(1)).string(typeUrl).uint32(tag(2)).bytes(value));
}

export function encodeSotwResponse(typeUrl: string, r: { versionInfo: string; resources: Uint8Array[]; nonce: string }): Buffer {
  const w = protobuf.Writer.create().uint32(tag(1)).string(r.versionInfo);
  for (const resource of r.resources) w.uint32(tag(2)).bytes(resource);
  w.uint32(tag(4)).string(typeUrl).uint32(tag(5)).string(r.nonce);
  return finish(w);
}

export function encodeDeltaResponse(
  typeUrl: string,
  r: { systemVersionInfo: string; resources: { name: string; version: string; resource: Uint8Array }[]; removed: string[]; nonce: string },
): Buffer {
  const w = protobuf.Writer.create().uint32(tag(1)).string(r.systemVersionInfo);
  for (const res of r.resources) {
    w.uint32(tag(2)).fork().uint32(tag(1)).string(res.version).uint32(tag(2)).bytes(res.resource).uint32(tag(3)).string(res.name).ldelim();
  }
  w.uint32(tag(4)).string(typeUrl).uint32(tag(5)).string(r.nonce);
  for (const name of r.removed) w.uint32(tag(6)).string(name);
  return finish(w);
}

function finish(w: protobuf.Writer): Buffer {
  const bytes = w.finish();
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}
