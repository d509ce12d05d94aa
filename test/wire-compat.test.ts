/**
 * Wire compatibility of our minimal protos (proto/) with the upstream Envoy API
 * protos vendored by @grpc/grpc-js-xds (node_modules/@grpc/grpc-js-xds/deps).
 *
 * - structure: every field of every message we define exists upstream with the
 *   same name, number, type, repeated/map-ness and oneof membership;
 * - bytes: fully populated messages encoded with ours decode field by field with
 *   upstream and vice versa, and the encodings are byte-identical;
 * - v2: our envoy.api.v2.* messages against the upstream v3 messages (same numbers);
 * - services: SDS method names, types, streaming flags and gRPC paths.
 */
import { existsSync, readdirSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import * as protoLoader from '@grpc/proto-loader';
import protobuf from 'protobufjs';
import { beforeAll, describe, expect, it } from 'vitest';

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const OUR_PROTO_DIR = path.join(repoRoot, 'proto');
const DEPS_DIR = path.join(repoRoot, 'node_modules', '@grpc', 'grpc-js-xds', 'deps');
const UPSTREAM_DIRS = ['envoy-api', 'xds', 'googleapis', 'protoc-gen-validate'].map((d) =>
  path.join(DEPS_DIR, d),
);

const OUR_FILES = [
  'envoy/service/secret/v3/sds.proto',
  'envoy/service/discovery/v3/discovery.proto',
  'envoy/config/core/v3/base.proto',
  'envoy/config/core/v3/extension.proto',
  'envoy/type/v3/semantic_version.proto',
  'envoy/extensions/transport_sockets/tls/v3/secret.proto',
  'envoy/extensions/transport_sockets/tls/v3/common.proto',
  'envoy/extensions/transport_sockets/tls/v3/tls_spiffe_validator_config.proto',
  'google/rpc/status.proto',
  'envoy/service/discovery/v2/sds.proto',
  'envoy/api/v2/discovery.proto',
  'envoy/api/v2/core/base.proto',
  'envoy/type/semantic_version.proto',
  'envoy/api/v2/auth/secret.proto',
  'envoy/api/v2/auth/common.proto',
];

const UPSTREAM_FILES = [
  'envoy/service/secret/v3/sds.proto',
  'envoy/extensions/transport_sockets/tls/v3/secret.proto',
  'envoy/extensions/transport_sockets/tls/v3/tls_spiffe_validator_config.proto',
];

/** Our v3 messages: each must exist upstream under the same full name. */
const V3_MESSAGES = [
  'envoy.service.discovery.v3.DiscoveryRequest',
  'envoy.service.discovery.v3.DiscoveryResponse',
  'envoy.service.discovery.v3.DeltaDiscoveryRequest',
  'envoy.service.discovery.v3.DeltaDiscoveryResponse',
  'envoy.service.discovery.v3.Resource',
  'envoy.config.core.v3.Node',
  'envoy.config.core.v3.Locality',
  'envoy.config.core.v3.BuildVersion',
  'envoy.config.core.v3.DataSource',
  'envoy.config.core.v3.TypedExtensionConfig',
  'envoy.type.v3.SemanticVersion',
  'envoy.extensions.transport_sockets.tls.v3.Secret',
  'envoy.extensions.transport_sockets.tls.v3.GenericSecret',
  'envoy.extensions.transport_sockets.tls.v3.TlsCertificate',
  'envoy.extensions.transport_sockets.tls.v3.CertificateValidationContext',
  'envoy.extensions.transport_sockets.tls.v3.SPIFFECertValidatorConfig',
  'envoy.extensions.transport_sockets.tls.v3.SPIFFECertValidatorConfig.TrustDomain',
  'google.rpc.Status',
];

/** Our v2 messages and the upstream v3 message each one is compared with. */
const V2_TO_V3: Record<string, string> = {
  'envoy.api.v2.DiscoveryRequest': 'envoy.service.discovery.v3.DiscoveryRequest',
  'envoy.api.v2.DiscoveryResponse': 'envoy.service.discovery.v3.DiscoveryResponse',
  'envoy.api.v2.DeltaDiscoveryRequest': 'envoy.service.discovery.v3.DeltaDiscoveryRequest',
  'envoy.api.v2.DeltaDiscoveryResponse': 'envoy.service.discovery.v3.DeltaDiscoveryResponse',
  'envoy.api.v2.Resource': 'envoy.service.discovery.v3.Resource',
  'envoy.api.v2.core.Node': 'envoy.config.core.v3.Node',
  'envoy.api.v2.core.Locality': 'envoy.config.core.v3.Locality',
  'envoy.api.v2.core.BuildVersion': 'envoy.config.core.v3.BuildVersion',
  'envoy.api.v2.core.DataSource': 'envoy.config.core.v3.DataSource',
  'envoy.type.SemanticVersion': 'envoy.type.v3.SemanticVersion',
  'envoy.api.v2.auth.Secret': 'envoy.extensions.transport_sockets.tls.v3.Secret',
  'envoy.api.v2.auth.GenericSecret': 'envoy.extensions.transport_sockets.tls.v3.GenericSecret',
  'envoy.api.v2.auth.TlsCertificate': 'envoy.extensions.transport_sockets.tls.v3.TlsCertificate',
  'envoy.api.v2.auth.CertificateValidationContext':
    'envoy.extensions.transport_sockets.tls.v3.CertificateValidationContext',
};

/** v2 fields that upstream v3 reserved (and so are absent from the v3 message). */
const V2_FIELDS_RESERVED_IN_V3: Record<string, ReadonlyArray<{ name: string; id: number }>> = {
  'envoy.api.v2.core.Node': [{ name: 'build_version', id: 5 }],
};

// ---------------------------------------------------------------- loading

function loadRoot(dirs: readonly string[], files: readonly string[]): protobuf.Root {
  const root = new protobuf.Root();
  root.resolvePath = (_origin: string, target: string): string => {
    if (path.isAbsolute(target)) return target;
    for (const dir of dirs) {
      const candidate = path.join(dir, target);
      if (existsSync(candidate)) return candidate;
    }
    // google/protobuf/*.proto: protobufjs serves its bundled copies by this name.
    return target;
  };
  root.loadSync([...files], { keepCase: true });
  root.resolveAll();
  return root;
}

const PROTO_LOADER_OPTIONS = {
  keepCase: true,
  longs: String,
  enums: String,
  defaults: false,
  oneofs: true,
} as const;

function listProtoFiles(dir: string, base = dir): string[] {
  const out: string[] = [];
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const full = path.join(dir, entry.name);
    if (entry.isDirectory()) out.push(...listProtoFiles(full, base));
    else if (entry.name.endsWith('.proto')) out.push(path.relative(base, full).split(path.sep).join('/'));
  }
  return out.sort();
}

function allTypes(ns: protobuf.NamespaceBase): protobuf.Type[] {
  const out: protobuf.Type[] = [];
  for (const obj of ns.nestedArray) {
    if (obj instanceof protobuf.Type) out.push(obj);
    if (obj instanceof protobuf.Namespace) out.push(...allTypes(obj));
  }
  return out;
}

/**
 * Inclusive check of a message's `reserved` ranges. protobufjs' own isReservedId
 * treats ranges as end-exclusive, so it misses single ids (`reserved 5;` -> [5, 5]).
 */
function isReservedId(type: protobuf.Type, id: number): boolean {
  return (type.reserved ?? []).some((r) => typeof r !== 'string' && r[0] !== undefined && r[0] <= id && id <= (r[1] ?? r[0]));
}

const fullName = (obj: protobuf.ReflectionObject): string => obj.fullName.replace(/^\./, '');

// ---------------------------------------------------------------- structure

interface FieldShape {
  name: string;
  id: number;
  kind: 'scalar' | 'message' | 'enum';
  type: string;
  repeated: boolean;
  map: boolean;
  keyType: string | null;
  oneof: string | null;
}

/** Describes a field; message/enum types by full name, or by short name when comparing across packages. */
function shapeOf(field: protobuf.Field, typeNames: 'full' | 'short'): FieldShape {
  const resolved = field.resolvedType;
  let kind: FieldShape['kind'] = 'scalar';
  let type = field.type;
  if (resolved instanceof protobuf.Type) kind = 'message';
  else if (resolved instanceof protobuf.Enum) kind = 'enum';
  if (resolved !== null) {
    // Types of our own two packages differ only by package, except shared ones (google.*).
    type = typeNames === 'full' || fullName(resolved).startsWith('google.') ? fullName(resolved) : resolved.name;
  }
  return {
    name: field.name,
    id: field.id,
    kind,
    type,
    repeated: field.repeated,
    map: field.map,
    keyType: field instanceof protobuf.MapField ? field.keyType : null,
    oneof: field.partOf ? field.partOf.name : null,
  };
}

function compareMessage(
  ours: protobuf.Type,
  upstream: protobuf.Type,
  typeNames: 'full' | 'short',
  reservedUpstream: ReadonlyArray<{ name: string; id: number }> = [],
): void {
  for (const field of ours.fieldsArray) {
    const where = `${fullName(ours)}.${field.name} (= ${field.id}) vs ${fullName(upstream)}`;
    if (reservedUpstream.some((r) => r.id === field.id && r.name === field.name)) {
      expect(upstream.fields[field.name], where).toBeUndefined();
      expect(upstream.fieldsById[field.id], where).toBeUndefined();
      expect(isReservedId(upstream, field.id), where).toBe(true);
      expect(upstream.isReservedName(field.name), where).toBe(true);
      continue;
    }
    const byName = upstream.fields[field.name];
    expect(byName, `${where}: no field of that name upstream`).toBeDefined();
    const byId = upstream.fieldsById[field.id];
    expect(byId?.name, `${where}: upstream field number ${field.id}`).toBe(field.name);
    if (byName === undefined) continue;
    expect(shapeOf(field, typeNames), where).toEqual(shapeOf(byName, typeNames));
  }
}

// ---------------------------------------------------------------- value helpers

type Plain = Record<string, unknown>;

/** Reads a dotted path ("a.b.0.c") out of a decoded plain object. */
function at(obj: unknown, dotted: string): unknown {
  let cur: unknown = obj;
  for (const key of dotted.split('.')) {
    if (cur === null || typeof cur !== 'object') return undefined;
    cur = (cur as Record<string, unknown>)[key];
  }
  return cur;
}

function bytesAt(obj: unknown, dotted: string): Buffer {
  const value = at(obj, dotted);
  if (!(value instanceof Uint8Array)) throw new Error(`${dotted} is not bytes: ${String(value)}`);
  return Buffer.from(value);
}

const TO_OBJECT: protobuf.IConversionOptions = {
  longs: String,
  enums: String,
  defaults: false,
  oneofs: true,
};

function encode(type: protobuf.Type, value: Plain): Uint8Array {
  return type.encode(type.fromObject(value)).finish();
}

function decode(type: protobuf.Type, bytes: Uint8Array): Plain {
  return type.toObject(type.decode(bytes), TO_OBJECT);
}

/**
 * Encodes `value` with `from`, decodes with `to` and returns the decoded plain object.
 * Also asserts that `to` understood every byte (re-encoding gives the same bytes,
 * since protobufjs drops unknown fields) and that `to` itself encodes the same
 * value to identical bytes.
 */
function cross(from: protobuf.Type, to: protobuf.Type, value: Plain): Plain {
  const bytes = encode(from, value);
  const decoded = to.decode(bytes);
  expect(Buffer.from(to.encode(decoded).finish()), `${fullName(to)} re-encode`).toEqual(Buffer.from(bytes));
  expect(Buffer.from(encode(to, value)), `${fullName(to)} encodes identically`).toEqual(Buffer.from(bytes));
  return to.toObject(decoded, TO_OBJECT);
}

// ---------------------------------------------------------------- fixtures

const CERT_PEM = Buffer.from(
  '-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIUQ2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n',
);
const KEY_PEM = Buffer.from('-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgE=\n-----END PRIVATE KEY-----\n');
const BUNDLE_PEM = Buffer.from('-----BEGIN CERTIFICATE-----\nMIIBfDCCASOgAwIBAgIUYnVuZGxl\n-----END CERTIFICATE-----\n');
const STATUS_DETAIL = Buffer.from([0x0a, 0x07, ...Buffer.from('bad pem')]);

const V3_SECRET_URL = 'type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret';
const V2_SECRET_URL = 'type.googleapis.com/envoy.api.v2.auth.Secret';
const SPIFFE_URL = 'type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.SPIFFECertValidatorConfig';

function nodeValue(withBuildVersion: boolean): Plain {
  const node: Plain = {
    id: 'sidecar~10.1.2.3~web-7d9f.default~default.svc.cluster.local',
    cluster: 'web.default',
    metadata: {
      fields: {
        ISTIO_VERSION: { stringValue: '1.20.3' },
        WORKLOAD: { structValue: { fields: { app: { stringValue: 'web' }, replicas: { numberValue: 3 } } } },
        SDS: { boolValue: true },
        CONCURRENCY: { numberValue: 2.5 },
        EXTRA: { listValue: { values: [{ stringValue: 'a' }, { nullValue: 'NULL_VALUE' }] } },
      },
    },
    locality: { region: 'us-east-1', zone: 'us-east-1b', sub_zone: 'rack-42' },
    user_agent_name: 'envoy',
    user_agent_build_version: {
      version: { major_number: 1, minor_number: 17, patch: 4 },
      metadata: { fields: { 'build.type': { stringValue: 'RELEASE' }, 'ssl.version': { stringValue: 'BoringSSL' } } },
    },
    client_features: ['envoy.lb.does_not_support_overprovisioning', 'envoy.restart_features.use_apple_api_for_dns_lookups'],
  };
  if (withBuildVersion) node.build_version = 'a1b2c3/1.16.0/Clean/RELEASE/BoringSSL';
  return node;
}

function expectNode(obj: unknown, p: string): void {
  expect(at(obj, `${p}.id`)).toBe('sidecar~10.1.2.3~web-7d9f.default~default.svc.cluster.local');
  expect(at(obj, `${p}.cluster`)).toBe('web.default');
  expect(at(obj, `${p}.metadata.fields.ISTIO_VERSION.stringValue`)).toBe('1.20.3');
  expect(at(obj, `${p}.metadata.fields.WORKLOAD.structValue.fields.app.stringValue`)).toBe('web');
  expect(at(obj, `${p}.metadata.fields.WORKLOAD.structValue.fields.replicas.numberValue`)).toBe(3);
  expect(at(obj, `${p}.metadata.fields.SDS.boolValue`)).toBe(true);
  expect(at(obj, `${p}.metadata.fields.CONCURRENCY.numberValue`)).toBe(2.5);
  expect(at(obj, `${p}.metadata.fields.EXTRA.listValue.values.0.stringValue`)).toBe('a');
  expect(at(obj, `${p}.metadata.fields.EXTRA.listValue.values.1.nullValue`)).toBe('NULL_VALUE');
  expect(at(obj, `${p}.locality.region`)).toBe('us-east-1');
  expect(at(obj, `${p}.locality.zone`)).toBe('us-east-1b');
  expect(at(obj, `${p}.locality.sub_zone`)).toBe('rack-42');
  expect(at(obj, `${p}.user_agent_name`)).toBe('envoy');
  expect(at(obj, `${p}.user_agent_version_type`)).toBe('user_agent_build_version');
  expect(at(obj, `${p}.user_agent_version`)).toBeUndefined();
  expect(at(obj, `${p}.user_agent_build_version.version.major_number`)).toBe(1);
  expect(at(obj, `${p}.user_agent_build_version.version.minor_number`)).toBe(17);
  expect(at(obj, `${p}.user_agent_build_version.version.patch`)).toBe(4);
  // Keys containing dots cannot go through at().
  const bvFields = at(obj, `${p}.user_agent_build_version.metadata.fields`) as Record<string, unknown> | undefined;
  expect(at(bvFields?.['build.type'], 'stringValue')).toBe('RELEASE');
  expect(at(bvFields?.['ssl.version'], 'stringValue')).toBe('BoringSSL');
  expect(at(obj, `${p}.client_features`)).toEqual([
    'envoy.lb.does_not_support_overprovisioning',
    'envoy.restart_features.use_apple_api_for_dns_lookups',
  ]);
}

const errorDetail: Plain = {
  code: 3,
  message: 'failed to parse certificate',
  details: [{ type_url: 'type.googleapis.com/google.protobuf.StringValue', value: STATUS_DETAIL }],
};

function expectErrorDetail(obj: unknown, p: string): void {
  expect(at(obj, `${p}.code`)).toBe(3);
  expect(at(obj, `${p}.message`)).toBe('failed to parse certificate');
  expect(at(obj, `${p}.details.length`)).toBe(1);
  expect(at(obj, `${p}.details.0.type_url`)).toBe('type.googleapis.com/google.protobuf.StringValue');
  expect(bytesAt(obj, `${p}.details.0.value`)).toEqual(STATUS_DETAIL);
}

/** The message types one side of a round trip uses. */
interface Side {
  label: string;
  DiscoveryRequest: protobuf.Type;
  DiscoveryResponse: protobuf.Type;
  DeltaDiscoveryRequest: protobuf.Type;
  DeltaDiscoveryResponse: protobuf.Type;
  Secret: protobuf.Type;
  secretTypeUrl: string;
  /** false for v2, whose DataSource has no environment_variable. */
  hasEnvironmentVariable: boolean;
}

function side(root: protobuf.Root, label: string, version: 'v2' | 'v3'): Side {
  const t = (name: string): protobuf.Type => root.lookupType(name);
  return version === 'v3'
    ? {
        label,
        DiscoveryRequest: t('envoy.service.discovery.v3.DiscoveryRequest'),
        DiscoveryResponse: t('envoy.service.discovery.v3.DiscoveryResponse'),
        DeltaDiscoveryRequest: t('envoy.service.discovery.v3.DeltaDiscoveryRequest'),
        DeltaDiscoveryResponse: t('envoy.service.discovery.v3.DeltaDiscoveryResponse'),
        Secret: t('envoy.extensions.transport_sockets.tls.v3.Secret'),
        secretTypeUrl: V3_SECRET_URL,
        hasEnvironmentVariable: true,
      }
    : {
        label,
        DiscoveryRequest: t('envoy.api.v2.DiscoveryRequest'),
        DiscoveryResponse: t('envoy.api.v2.DiscoveryResponse'),
        DeltaDiscoveryRequest: t('envoy.api.v2.DeltaDiscoveryRequest'),
        DeltaDiscoveryResponse: t('envoy.api.v2.DeltaDiscoveryResponse'),
        Secret: t('envoy.api.v2.auth.Secret'),
        secretTypeUrl: V2_SECRET_URL,
        hasEnvironmentVariable: false,
      };
}

// ---------------------------------------------------------------- tests

let ours: protobuf.Root;
let upstream: protobuf.Root;

beforeAll(() => {
  ours = loadRoot([OUR_PROTO_DIR], OUR_FILES);
  upstream = loadRoot(UPSTREAM_DIRS, UPSTREAM_FILES);
});

describe('our proto files load', () => {
  it('proto/ holds exactly the expected files', () => {
    expect(listProtoFiles(OUR_PROTO_DIR)).toEqual([...OUR_FILES].sort());
  });

  it('all files load together with protobufjs and resolve', () => {
    const root = loadRoot([OUR_PROTO_DIR], listProtoFiles(OUR_PROTO_DIR));
    expect(root.lookupService('envoy.service.secret.v3.SecretDiscoveryService')).toBeInstanceOf(protobuf.Service);
    expect(root.lookupService('envoy.service.discovery.v2.SecretDiscoveryService')).toBeInstanceOf(protobuf.Service);
  });

  it.each(OUR_FILES)('%s loads with @grpc/proto-loader', (file) => {
    const def = protoLoader.loadSync(file, { includeDirs: [OUR_PROTO_DIR], ...PROTO_LOADER_OPTIONS });
    expect(Object.keys(def).length).toBeGreaterThan(0);
  });
});

describe('structure matches upstream', () => {
  it('defines exactly the expected messages', () => {
    const names = allTypes(ours)
      .map(fullName)
      .filter((n) => !n.startsWith('google.protobuf.'))
      .sort();
    expect(names).toEqual([...V3_MESSAGES, ...Object.keys(V2_TO_V3)].sort());
  });

  it.each(V3_MESSAGES)('v3 %s: every field has upstream name, number, type and cardinality', (name) => {
    const ourType = ours.lookupType(name);
    expect(ourType.fieldsArray.length).toBeGreaterThan(0);
    compareMessage(ourType, upstream.lookupType(name), 'full');
  });

  it.each(Object.entries(V2_TO_V3))('v2 %s matches upstream %s', (v2Name, v3Name) => {
    const ourType = ours.lookupType(v2Name);
    expect(ourType.fieldsArray.length).toBeGreaterThan(0);
    compareMessage(ourType, upstream.lookupType(v3Name), 'short', V2_FIELDS_RESERVED_IN_V3[v2Name]);
  });

  it('v2 messages only reference v2 (or google.*) types', () => {
    for (const v2Name of Object.keys(V2_TO_V3)) {
      for (const field of ours.lookupType(v2Name).fieldsArray) {
        const resolved = field.resolvedType;
        if (resolved === null) continue;
        const n = fullName(resolved);
        expect(n.startsWith('google.') || n.startsWith('envoy.api.v2.') || n.startsWith('envoy.type.'), n).toBe(true);
        expect(n.includes('.v3.'), `${v2Name}.${field.name} -> ${n}`).toBe(false);
      }
    }
  });

  it('v2 Node keeps build_version = 5 as a string (v3 reserved it)', () => {
    const field = ours.lookupType('envoy.api.v2.core.Node').fields.build_version;
    expect(field?.id).toBe(5);
    expect(field?.type).toBe('string');
    expect(isReservedId(ours.lookupType('envoy.config.core.v3.Node'), 5)).toBe(true);
    expect(isReservedId(upstream.lookupType('envoy.config.core.v3.Node'), 5)).toBe(true);
  });
});

describe('SDS service definitions', () => {
  const methods = ['DeltaSecrets', 'StreamSecrets', 'FetchSecrets'];

  function describeMethods(service: protobuf.Service, typeNames: 'full' | 'short'): unknown[] {
    return service.methodsArray
      .map((m) => {
        m.resolve();
        const req = m.resolvedRequestType;
        const res = m.resolvedResponseType;
        if (req === null || res === null) throw new Error(`unresolved ${m.name}`);
        return {
          name: m.name,
          request: typeNames === 'full' ? fullName(req) : req.name,
          response: typeNames === 'full' ? fullName(res) : res.name,
          requestStream: m.requestStream === true,
          responseStream: m.responseStream === true,
        };
      })
      .sort((a, b) => a.name.localeCompare(b.name));
  }

  it('v3 methods equal upstream (names, types, streaming)', () => {
    const ourSvc = ours.lookupService('envoy.service.secret.v3.SecretDiscoveryService');
    const upSvc = upstream.lookupService('envoy.service.secret.v3.SecretDiscoveryService');
    expect(ourSvc.methodsArray.map((m) => m.name).sort()).toEqual([...methods].sort());
    expect(describeMethods(ourSvc, 'full')).toEqual(describeMethods(upSvc, 'full'));
    expect(describeMethods(ourSvc, 'full')).toEqual([
      {
        name: 'DeltaSecrets',
        request: 'envoy.service.discovery.v3.DeltaDiscoveryRequest',
        response: 'envoy.service.discovery.v3.DeltaDiscoveryResponse',
        requestStream: true,
        responseStream: true,
      },
      {
        name: 'FetchSecrets',
        request: 'envoy.service.discovery.v3.DiscoveryRequest',
        response: 'envoy.service.discovery.v3.DiscoveryResponse',
        requestStream: false,
        responseStream: false,
      },
      {
        name: 'StreamSecrets',
        request: 'envoy.service.discovery.v3.DiscoveryRequest',
        response: 'envoy.service.discovery.v3.DiscoveryResponse',
        requestStream: true,
        responseStream: true,
      },
    ]);
  });

  it('v2 methods mirror v3 with envoy.api.v2 types', () => {
    const v2 = ours.lookupService('envoy.service.discovery.v2.SecretDiscoveryService');
    const v3 = upstream.lookupService('envoy.service.secret.v3.SecretDiscoveryService');
    expect(describeMethods(v2, 'short')).toEqual(describeMethods(v3, 'short'));
    for (const m of v2.methodsArray) {
      expect(fullName(m.resolvedRequestType ?? v2)).toMatch(/^envoy\.api\.v2\.\w+$/);
      expect(fullName(m.resolvedResponseType ?? v2)).toMatch(/^envoy\.api\.v2\.\w+$/);
    }
  });

  function serviceOf(def: protoLoader.PackageDefinition, name: string): protoLoader.ServiceDefinition {
    const svc = def[name];
    if (svc === undefined || 'format' in svc) throw new Error(`${name} is not a service`);
    return svc as protoLoader.ServiceDefinition;
  }

  it('gRPC paths and serializers agree with upstream via @grpc/proto-loader', () => {
    const ourDef = protoLoader.loadSync('envoy/service/secret/v3/sds.proto', {
      includeDirs: [OUR_PROTO_DIR],
      ...PROTO_LOADER_OPTIONS,
    });
    const upDef = protoLoader.loadSync('envoy/service/secret/v3/sds.proto', {
      includeDirs: UPSTREAM_DIRS,
      ...PROTO_LOADER_OPTIONS,
    });
    const v2Def = protoLoader.loadSync('envoy/service/discovery/v2/sds.proto', {
      includeDirs: [OUR_PROTO_DIR],
      ...PROTO_LOADER_OPTIONS,
    });
    const ourSvc = serviceOf(ourDef, 'envoy.service.secret.v3.SecretDiscoveryService');
    const upSvc = serviceOf(upDef, 'envoy.service.secret.v3.SecretDiscoveryService');
    const v2Svc = serviceOf(v2Def, 'envoy.service.discovery.v2.SecretDiscoveryService');
    expect(Object.keys(ourSvc).sort()).toEqual(Object.keys(upSvc).sort());
    for (const name of methods) {
      const o = ourSvc[name];
      const u = upSvc[name];
      const v2m = v2Svc[name];
      if (o === undefined || u === undefined || v2m === undefined) throw new Error(`missing ${name}`);
      expect(o.path).toBe(`/envoy.service.secret.v3.SecretDiscoveryService/${name}`);
      expect(o.path).toBe(u.path);
      expect([o.requestStream, o.responseStream]).toEqual([u.requestStream, u.responseStream]);
      expect(v2m.path).toBe(`/envoy.service.discovery.v2.SecretDiscoveryService/${name}`);
      expect([v2m.requestStream, v2m.responseStream]).toEqual([u.requestStream, u.responseStream]);

      // The serializers grpc-js would use: ours -> upstream and v2 -> upstream v3.
      const req = { version_info: 'v9', type_url: V3_SECRET_URL, response_nonce: 'n-1', resource_names: ['default'] };
      const delta = { type_url: V3_SECRET_URL, resource_names_subscribe: ['default'], initial_resource_versions: { default: 'v9' } };
      const value = name === 'DeltaSecrets' ? delta : req;
      for (const enc of [o, v2m]) {
        const decoded = u.requestDeserialize(enc.requestSerialize(value));
        expect(decoded).toEqual(value);
        expect(o.requestDeserialize(u.requestSerialize(value))).toEqual(value);
      }
    }
  });
});

interface Pair {
  name: string;
  from: () => Side;
  to: () => Side;
}

const pairs: Pair[] = [
  { name: 'ours v3 -> upstream v3', from: () => side(ours, 'ours v3', 'v3'), to: () => side(upstream, 'upstream v3', 'v3') },
  { name: 'upstream v3 -> ours v3', from: () => side(upstream, 'upstream v3', 'v3'), to: () => side(ours, 'ours v3', 'v3') },
  { name: 'ours v2 -> upstream v3', from: () => side(ours, 'ours v2', 'v2'), to: () => side(upstream, 'upstream v3', 'v3') },
  { name: 'upstream v3 -> ours v2', from: () => side(upstream, 'upstream v3', 'v3'), to: () => side(ours, 'ours v2', 'v2') },
];

describe.each(pairs)('round trip $name', ({ from: fromSide, to: toSide }) => {
  let from: Side;
  let to: Side;
  beforeAll(() => {
    from = fromSide();
    to = toSide();
  });

  it('DiscoveryRequest (node with metadata struct and build version, error_detail)', () => {
    const obj = cross(from.DiscoveryRequest, to.DiscoveryRequest, {
      version_info: '2024-05-01T10:00:00Z/7',
      node: nodeValue(false),
      resource_names: ['default', 'ROOTCA', 'spiffe://cluster.local/ns/default/sa/web'],
      type_url: from.secretTypeUrl,
      response_nonce: 'nonce-41',
      error_detail: errorDetail,
    });
    expect(at(obj, 'version_info')).toBe('2024-05-01T10:00:00Z/7');
    expectNode(obj, 'node');
    expect(at(obj, 'resource_names')).toEqual(['default', 'ROOTCA', 'spiffe://cluster.local/ns/default/sa/web']);
    expect(at(obj, 'type_url')).toBe(from.secretTypeUrl);
    expect(at(obj, 'response_nonce')).toBe('nonce-41');
    expectErrorDetail(obj, 'error_detail');
  });

  it('DiscoveryResponse carrying Secrets in Any (tls_certificate, validation_context, generic_secret)', () => {
    const tlsSecret = encode(from.Secret, {
      name: 'default',
      tls_certificate: { certificate_chain: { inline_bytes: CERT_PEM }, private_key: { inline_bytes: KEY_PEM } },
    });
    const caSecret = encode(from.Secret, {
      name: 'ROOTCA',
      validation_context: { trusted_ca: { filename: '/etc/certs/root-cert.pem' } },
    });
    const genericSecret = encode(from.Secret, {
      name: 'token',
      generic_secret: { secret: { inline_string: 'hunter2' } },
    });
    const obj = cross(from.DiscoveryResponse, to.DiscoveryResponse, {
      version_info: 'v42',
      resources: [
        { type_url: from.secretTypeUrl, value: tlsSecret },
        { type_url: from.secretTypeUrl, value: caSecret },
        { type_url: from.secretTypeUrl, value: genericSecret },
      ],
      canary: true,
      type_url: from.secretTypeUrl,
      nonce: 'nonce-42',
    });
    expect(at(obj, 'version_info')).toBe('v42');
    expect(at(obj, 'canary')).toBe(true);
    expect(at(obj, 'type_url')).toBe(from.secretTypeUrl);
    expect(at(obj, 'nonce')).toBe('nonce-42');
    expect(at(obj, 'resources.length')).toBe(3);
    expect(at(obj, 'resources.0.type_url')).toBe(from.secretTypeUrl);
    expect(bytesAt(obj, 'resources.0.value')).toEqual(Buffer.from(tlsSecret));

    const tls = decode(to.Secret, bytesAt(obj, 'resources.0.value'));
    expect(at(tls, 'name')).toBe('default');
    expect(at(tls, 'type')).toBe('tls_certificate');
    expect(at(tls, 'tls_certificate.certificate_chain.specifier')).toBe('inline_bytes');
    expect(bytesAt(tls, 'tls_certificate.certificate_chain.inline_bytes')).toEqual(CERT_PEM);
    expect(at(tls, 'tls_certificate.private_key.specifier')).toBe('inline_bytes');
    expect(bytesAt(tls, 'tls_certificate.private_key.inline_bytes')).toEqual(KEY_PEM);

    const ca = decode(to.Secret, bytesAt(obj, 'resources.1.value'));
    expect(at(ca, 'name')).toBe('ROOTCA');
    expect(at(ca, 'type')).toBe('validation_context');
    expect(at(ca, 'validation_context.trusted_ca.specifier')).toBe('filename');
    expect(at(ca, 'validation_context.trusted_ca.filename')).toBe('/etc/certs/root-cert.pem');

    const generic = decode(to.Secret, bytesAt(obj, 'resources.2.value'));
    expect(at(generic, 'name')).toBe('token');
    expect(at(generic, 'type')).toBe('generic_secret');
    expect(at(generic, 'generic_secret.secret.specifier')).toBe('inline_string');
    expect(at(generic, 'generic_secret.secret.inline_string')).toBe('hunter2');
  });

  it('DataSource environment_variable (v3 only)', () => {
    if (!from.hasEnvironmentVariable || !to.hasEnvironmentVariable) {
      // v2 DataSource has no field 4; v3's would be an unknown field there.
      expect(ours.lookupType('envoy.api.v2.core.DataSource').fieldsById[4]).toBeUndefined();
      return;
    }
    const obj = cross(from.Secret, to.Secret, {
      name: 'token',
      generic_secret: { secret: { environment_variable: 'SDS_TOKEN' } },
    });
    expect(at(obj, 'generic_secret.secret.specifier')).toBe('environment_variable');
    expect(at(obj, 'generic_secret.secret.environment_variable')).toBe('SDS_TOKEN');
  });

  it('DeltaDiscoveryRequest (initial_resource_versions map, subscribe/unsubscribe)', () => {
    const node = nodeValue(false);
    delete node.user_agent_build_version;
    node.user_agent_version = '1.17.4';
    const obj = cross(from.DeltaDiscoveryRequest, to.DeltaDiscoveryRequest, {
      node,
      type_url: from.secretTypeUrl,
      resource_names_subscribe: ['default', 'ROOTCA'],
      resource_names_unsubscribe: ['old-cert'],
      initial_resource_versions: { default: 'v3', ROOTCA: 'v1', 'spiffe://td/ns/a': 'v9' },
      response_nonce: 'delta-nonce-7',
      error_detail: errorDetail,
    });
    expect(at(obj, 'node.id')).toBe('sidecar~10.1.2.3~web-7d9f.default~default.svc.cluster.local');
    expect(at(obj, 'node.user_agent_version_type')).toBe('user_agent_version');
    expect(at(obj, 'node.user_agent_version')).toBe('1.17.4');
    expect(at(obj, 'node.user_agent_build_version')).toBeUndefined();
    expect(at(obj, 'node.locality.sub_zone')).toBe('rack-42');
    expect(at(obj, 'node.client_features.1')).toBe('envoy.restart_features.use_apple_api_for_dns_lookups');
    expect(at(obj, 'type_url')).toBe(from.secretTypeUrl);
    expect(at(obj, 'resource_names_subscribe')).toEqual(['default', 'ROOTCA']);
    expect(at(obj, 'resource_names_unsubscribe')).toEqual(['old-cert']);
    expect(at(obj, 'initial_resource_versions')).toEqual({ default: 'v3', ROOTCA: 'v1', 'spiffe://td/ns/a': 'v9' });
    expect(at(obj, 'response_nonce')).toBe('delta-nonce-7');
    expectErrorDetail(obj, 'error_detail');
  });

  it('DeltaDiscoveryResponse (Resource with version, aliases, ttl; removed_resources)', () => {
    const secret = encode(from.Secret, {
      name: 'default',
      tls_certificate: { certificate_chain: { inline_bytes: CERT_PEM }, private_key: { filename: '/etc/certs/key.pem' } },
    });
    const obj = cross(from.DeltaDiscoveryResponse, to.DeltaDiscoveryResponse, {
      system_version_info: 'sys-2024-05-01',
      resources: [
        {
          name: 'default',
          aliases: ['default-alias'],
          version: 'v4',
          resource: { type_url: from.secretTypeUrl, value: secret },
          ttl: { seconds: 300, nanos: 500 },
        },
        { name: 'ROOTCA', version: 'v2' },
      ],
      type_url: from.secretTypeUrl,
      removed_resources: ['old-cert', 'older-cert'],
      nonce: 'delta-nonce-8',
    });
    expect(at(obj, 'system_version_info')).toBe('sys-2024-05-01');
    expect(at(obj, 'type_url')).toBe(from.secretTypeUrl);
    expect(at(obj, 'removed_resources')).toEqual(['old-cert', 'older-cert']);
    expect(at(obj, 'nonce')).toBe('delta-nonce-8');
    expect(at(obj, 'resources.length')).toBe(2);
    expect(at(obj, 'resources.0.name')).toBe('default');
    expect(at(obj, 'resources.0.aliases')).toEqual(['default-alias']);
    expect(at(obj, 'resources.0.version')).toBe('v4');
    expect(at(obj, 'resources.0.resource.type_url')).toBe(from.secretTypeUrl);
    expect(at(obj, 'resources.0.ttl.seconds')).toBe('300');
    expect(at(obj, 'resources.0.ttl.nanos')).toBe(500);
    expect(at(obj, 'resources.1.name')).toBe('ROOTCA');
    expect(at(obj, 'resources.1.version')).toBe('v2');
    expect(at(obj, 'resources.1.resource')).toBeUndefined();

    const inner = decode(to.Secret, bytesAt(obj, 'resources.0.resource.value'));
    expect(at(inner, 'name')).toBe('default');
    expect(bytesAt(inner, 'tls_certificate.certificate_chain.inline_bytes')).toEqual(CERT_PEM);
    expect(at(inner, 'tls_certificate.private_key.filename')).toBe('/etc/certs/key.pem');
  });
});

describe.each([
  { name: 'ours -> upstream', enc: (): protobuf.Root => ours, dec: (): protobuf.Root => upstream },
  { name: 'upstream -> ours', enc: (): protobuf.Root => upstream, dec: (): protobuf.Root => ours },
])('v3 Secret with SPIFFE custom_validator_config, $name', ({ enc, dec }) => {
  it('decodes every field, including the nested Any', () => {
    const SECRET = 'envoy.extensions.transport_sockets.tls.v3.Secret';
    const SPIFFE = 'envoy.extensions.transport_sockets.tls.v3.SPIFFECertValidatorConfig';
    const spiffe = encode(enc().lookupType(SPIFFE), {
      trust_domains: [
        { name: 'cluster.local', trust_bundle: { filename: '/etc/spiffe/cluster.local.pem' } },
        { name: 'partner.example.org', trust_bundle: { inline_bytes: BUNDLE_PEM } },
      ],
    });
    const obj = cross(enc().lookupType(SECRET), dec().lookupType(SECRET), {
      name: 'spiffe-validation',
      validation_context: {
        trusted_ca: { inline_string: BUNDLE_PEM.toString() },
        custom_validator_config: {
          name: 'envoy.tls.cert_validator.spiffe',
          typed_config: { type_url: SPIFFE_URL, value: spiffe },
        },
      },
    });
    expect(at(obj, 'name')).toBe('spiffe-validation');
    expect(at(obj, 'type')).toBe('validation_context');
    expect(at(obj, 'validation_context.trusted_ca.inline_string')).toBe(BUNDLE_PEM.toString());
    expect(at(obj, 'validation_context.custom_validator_config.name')).toBe('envoy.tls.cert_validator.spiffe');
    expect(at(obj, 'validation_context.custom_validator_config.typed_config.type_url')).toBe(SPIFFE_URL);

    const cfgBytes = bytesAt(obj, 'validation_context.custom_validator_config.typed_config.value');
    const cfgType = dec().lookupType(SPIFFE);
    expect(Buffer.from(cfgType.encode(cfgType.decode(cfgBytes)).finish())).toEqual(cfgBytes);
    const cfg = decode(cfgType, cfgBytes);
    expect(at(cfg, 'trust_domains.length')).toBe(2);
    expect(at(cfg, 'trust_domains.0.name')).toBe('cluster.local');
    expect(at(cfg, 'trust_domains.0.trust_bundle.specifier')).toBe('filename');
    expect(at(cfg, 'trust_domains.0.trust_bundle.filename')).toBe('/etc/spiffe/cluster.local.pem');
    expect(at(cfg, 'trust_domains.1.name')).toBe('partner.example.org');
    expect(at(cfg, 'trust_domains.1.trust_bundle.specifier')).toBe('inline_bytes');
    expect(bytesAt(cfg, 'trust_domains.1.trust_bundle.inline_bytes')).toEqual(BUNDLE_PEM);
  });
});

describe('v2-only Node.build_version (field 5)', () => {
  it('is skipped by upstream v3 without disturbing other fields', () => {
    const v2 = ours.lookupType('envoy.api.v2.DiscoveryRequest');
    const v3 = upstream.lookupType('envoy.service.discovery.v3.DiscoveryRequest');
    const bytes = encode(v2, { node: nodeValue(true), resource_names: ['default'], type_url: V2_SECRET_URL });
    const obj = decode(v3, bytes);
    expectNode(obj, 'node');
    expect(at(obj, 'node.build_version')).toBeUndefined();
    expect(at(obj, 'resource_names')).toEqual(['default']);

    // And our v2 decodes it back.
    const back = decode(v2, bytes);
    expect(at(back, 'node.build_version')).toBe('a1b2c3/1.16.0/Clean/RELEASE/BoringSSL');
    expectNode(back, 'node');
  });
});
