/**
 * Renders docs/configuration.md from the config schema (src/cli/config-schema.ts): every field's
 * path, type, default and description, section by section. `npm run docs:config` writes it;
 * test/config-docs.test.ts fails when the checked-in page differs.
 */
import type * as v from 'valibot';
import { AS_WRITTEN, unwrap, type Schema } from '../src/core/config-schema.js';
import { configFileSchema } from '../src/cli/config-schema.js';
import { CA_BACKEND_TYPES } from '../src/ca/registry.js';

interface Row {
  field: string;
  type: string;
  dflt: string;
  description: string;
}

interface Section {
  path: string;
  description: string;
  rows: Row[];
}

type Inspectable = Schema & { entries?: v.ObjectEntries; item?: Schema; options?: readonly string[]; wrapped?: Schema };

const HEADER = `# Configuration reference

<!-- Generated from the schema (src/cli/config-schema.ts, src/ca/*/config.ts, src/sources/file-config.ts)
     by \`npm run docs:config\`. Do not edit by hand: test/config-docs.test.ts checks it. -->

\`sds-server --config FILE\` reads one YAML file. Every field is optional unless marked
**required**; an empty value (\`key:\`) means the default. Relative paths are relative to the
folder of the config file. Durations are seconds (\`3600\`) or a number with a unit (\`90s\`,
\`15m\`, \`1h\`, \`2d\`). Command-line flags (\`sds-server --help\`) override the file.

A problem in the file stops the server at start-up with exit status 2 and
\`SDS_ERR_CONFIG_INVALID\`, listing every problem as \`FILE: field.path: message\` (for example
\`sds.yaml: certificates[2].key: is required\`). Messages never quote a value that could be a
pasted key; \`sds-server check --config FILE\` checks a file without starting the server.
`;

export function renderConfigDocs(): string {
  const sections: Section[] = [];
  collect(configFileSchema(AS_WRITTEN), '', 'The top level of the file.', sections);
  const out = [HEADER];
  for (const s of sections) {
    out.push(`## ${s.path === '' ? 'Top level' : `\`${s.path}\``}`, '', s.description, '');
    if (s.path === 'ca') {
      out.push('Backends (`ca.backend`), each with its settings under its own key:', '');
      for (const t of CA_BACKEND_TYPES) out.push(`- \`${t.name}\` (settings \`ca.${t.key}\`): ${t.description}`);
      out.push('');
    }
    out.push('| Field | Type | Default | Description |', '| --- | --- | --- | --- |');
    for (const r of s.rows) out.push(`| \`${r.field}\` | ${r.type} | ${r.dflt} | ${r.description.replace(/\|/g, '\\|')} |`);
    out.push('');
  }
  return `${out.join('\n').trimEnd()}\n`;
}

function collect(schema: Schema, path: string, description: string, sections: Section[]): void {
  const section: Section = { path, description, rows: [] };
  sections.push(section);
  const nested: Array<() => void> = [];
  const { base } = unwrap(schema);
  for (const [key, entry] of Object.entries((base as Inspectable).entries ?? {})) {
    const field = path === '' ? key : `${path}.${key}`;
    const u = unwrap(entry);
    const b = u.base as Inspectable;
    const isRequired = entry.type !== 'nullish' && entry.type !== 'optional';
    const itemBase = b.type === 'array' && b.item ? (unwrap(b.item).base as Inspectable) : undefined;
    let type = u.doc.type ?? typeName(b);
    const text = u.description ?? '';
    if (b.type === 'strict_object') {
      type = 'mapping';
      nested.push(() => collect(entry, field, text, sections));
    } else if (itemBase?.type === 'strict_object' && !u.doc.type) {
      type = 'list of mappings';
      nested.push(() => collect(b.item as Schema, `${field}[]`, text, sections));
    }
    const dflt = isRequired ? '**required**' : formatDefault(u.default ?? u.doc.default, b.type === 'strict_object');
    section.rows.push({ field, type, dflt, description: text });
  }
  for (const next of nested) next();
}

function typeName(b: Inspectable): string {
  switch (b.type) {
    case 'picklist':
      return (b.options ?? []).map((o) => `\`${o}\``).join(' \\| ');
    case 'array':
      return `list of ${b.item ? typeName(unwrap(b.item).base as Inspectable) : 'values'}`;
    case 'union':
      return 'string or number';
    default:
      return b.type;
  }
}

function formatDefault(value: unknown, isSection: boolean): string {
  if (value === undefined || isSection) return '';
  if (Array.isArray(value)) return value.length === 0 ? '`[]`' : `\`${JSON.stringify(value)}\``;
  return `\`${String(value)}\``;
}
