/**
 * The message types in src/api/generated/ are what `npm run gen:types` (scripts/gen-types.ts)
 * makes from proto/ now: the generator runs into a temp folder and every file must match the
 * checked-in one byte for byte, with none missing and none left over.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { GENERATED_DIR, generateTypes } from '../scripts/gen-types.js';

/** Every file below `dir`, as sorted paths relative to it. */
function filesUnder(dir: string, base = dir): string[] {
  return readdirSync(dir, { withFileTypes: true })
    .flatMap((e) => (e.isDirectory() ? filesUnder(path.join(dir, e.name), base) : [path.relative(base, path.join(dir, e.name))]))
    .sort();
}

describe('generated message types (src/api/generated)', () => {
  let fresh: string;
  beforeAll(() => {
    fresh = mkdtempSync(path.join(os.tmpdir(), 'sds-gen-types-'));
    generateTypes(fresh);
  });
  afterAll(() => rmSync(fresh, { recursive: true, force: true }));

  it('are the files the generator writes now (else: npm run gen:types and commit)', () => {
    const expected = filesUnder(fresh);
    expect(expected).toContain('envoy/service/discovery/v3/DiscoveryRequest.ts');
    expect(expected).toContain('envoy/api/v2/DeltaDiscoveryRequest.ts');
    expect(filesUnder(GENERATED_DIR)).toEqual(expected);
    const stale = expected.filter((f) => readFileSync(path.join(GENERATED_DIR, f), 'utf8') !== readFileSync(path.join(fresh, f), 'utf8'));
    expect(stale, 'out of date: run npm run gen:types').toEqual([]);
  });
});
