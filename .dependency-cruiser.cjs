// Import rules for src/, checked by `npm test` (`npm run check:layers`).
// Each folder may import only the folders listed for it: the layers run one way, bottom to top.
// Why dependency-cruiser: it reads the TypeScript imports the compiler sees and reports each
// forbidden edge and each cycle by file, which a hand-written walk of the imports would not.
const ALLOWED = {
  core: [], // errors, logging, bounded file reads: imports nothing of ours
  x509: ['core'], // certificate, key, PEM and SPIFFE helpers
  secrets: ['core', 'x509'], // the Secret model, validation, the versioned store
  ca: ['core', 'x509'], // one folder per CA backend behind one interface
  attestation: ['core'], // who is calling (peer credentials, unix and k8s attestors)
  sources: ['core', 'x509', 'secrets', 'ca'], // watched files and CA-issued identities
  xds: ['core', 'secrets'], // SotW / Delta / Fetch rules, version-agnostic
  authorization: ['core', 'x509', 'secrets', 'attestation'], // who may receive which secret
  api: ['core', 'secrets', 'xds'], // v3 and v2 wire adapters
  server: ['core', 'x509', 'secrets', 'attestation', 'authorization', 'xds', 'api'], // gRPC on a Unix socket
  ops: ['core', 'x509', 'secrets', 'ca', 'attestation', 'authorization', 'sources', 'xds', 'api', 'server'], // status, admin, metrics, doctor
  cli: null, // the top: may import every folder
};

const folders = Object.keys(ALLOWED);
const layerRules = folders
  .filter((from) => ALLOWED[from] !== null)
  .map((from) => {
    const forbidden = folders.filter((to) => to !== from && !ALLOWED[from].includes(to));
    return {
      name: `layer-${from}`,
      comment: `src/${from}/ may import only ${ALLOWED[from].length ? ALLOWED[from].map((f) => `src/${f}/`).join(', ') : 'nothing else in src/'} (see .dependency-cruiser.cjs)`,
      severity: 'error',
      from: { path: `^src/${from}/` },
      to: { path: `^src/(${forbidden.join('|')})/` },
    };
  });

module.exports = {
  forbidden: [
    {
      name: 'no-circular',
      comment: 'an import cycle between modules of src/',
      severity: 'error',
      // Generated protobuf types (npm run gen:types) follow the schema, and google.protobuf.Struct,
      // Value and ListValue are defined in terms of each other: type-only imports, nothing at run time.
      from: { path: '^src/', pathNot: '^src/api/generated/' },
      to: { circular: true },
    },
    {
      name: 'no-unknown-folder',
      comment: 'every folder of src/ has a place in the layer list of .dependency-cruiser.cjs',
      severity: 'error',
      from: { path: '^src/', pathNot: `^src/(${folders.join('|')})/` },
      to: {},
    },
    ...layerRules,
  ],
  options: {
    doNotFollow: { path: 'node_modules' },
    tsPreCompilationDeps: true,
    tsConfig: { fileName: 'tsconfig.json' },
    exclude: { path: '^(test|scripts|dist)/' },
  },
};
