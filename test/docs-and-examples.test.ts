import { describe, expect, it } from 'vitest';
import fs from 'node:fs';
import { readdirSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { ErrorCode } from '../src/core/errors.js';
import { parseConfigFile } from '../src/cli/config.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

describe('documentation and examples stay true', () => {
  it('docs/errors.md documents every error code', () => {
    const doc = fs.readFileSync(path.join(ROOT, 'docs', 'errors.md'), 'utf8');
    for (const code of Object.values(ErrorCode)) expect(doc, code).toContain(`\`${code}\``);
  });

  it('the example server configuration parses, with paths relative to its own folder', () => {
    const file = path.join(ROOT, 'examples', 'config', 'sds-server.yaml');
    const config = parseConfigFile(fs.readFileSync(file, 'utf8'), file);
    expect(config.certificates.map((c) => c.name)).toEqual(['spiffe://example.org/front', 'spiffe://example.org/back']);
    expect(config.certificates[0]?.cert).toBe(path.join(ROOT, 'examples', 'config', 'certs', 'front', 'tls.crt'));
    expect(config.bundles.map((b) => b.trustDomain)).toEqual(['example.org', 'partner.test']);
    expect(config.admin).toEqual({ host: '127.0.0.1', port: 15001 });
  });

  it('the README gives the two fresh-machine commands, and .ci/run calls the same test command', () => {
    const readme = fs.readFileSync(path.join(ROOT, 'README.md'), 'utf8');
    const firstScreen = readme.split('\n').slice(0, 20).join('\n');
    expect(firstScreen).toContain('npm ci && npm start');
    expect(firstScreen).toContain('npm ci && npm test');
    const ci = fs.readFileSync(path.join(ROOT, '.ci', 'run'), 'utf8');
    expect(ci).toMatch(/^npm test$/m);
  });
  it("the README's Tests section names every skip note printed under test/ and every test file that can skip", () => {
    const readme = fs.readFileSync(path.join(ROOT, 'README.md'), 'utf8');
    const start = readme.indexOf('\n## Tests');
    const section = readme.slice(start, readme.indexOf('\n## ', start + 1));
    const files = readdirSync(path.join(ROOT, 'test'), { recursive: true, encoding: 'utf8' })
      .filter((f) => f.endsWith('.ts') && !f.startsWith('helpers'))
      .map((f) => path.posix.join('test', f.split(path.sep).join('/')));
    const notes = new Set<string>();
    const skipping: string[] = [];
    for (const file of files) {
      const text = fs.readFileSync(path.join(ROOT, file), 'utf8');
      // A skip note: the literal start (up to ":" or an interpolation) of what a skip prints.
      for (const m of text.matchAll(/(?:console\.warn\(|skipReason: |const message = )[`'"]([^`'"$:(]+)/g)) notes.add(m[1]!.trim());
      if (/\.skipIf\(|describeWith(Envoy|Cfssl)\(/.test(text) && !file.endsWith('find-envoy.ts')) skipping.push(file);
    }
    for (const helper of ['test/helpers/cfssl-server.ts', 'test/helpers/moto.ts']) {
      for (const m of fs.readFileSync(path.join(ROOT, helper), 'utf8').matchAll(/(?:console\.warn\(|skipReason: )[`'"]([^`'"$:(]+)/g)) notes.add(m[1]!.trim());
    }
    expect([...notes].sort()).toEqual(
      ['Envoy tests skipped', 'cfssl tests skipped', 'docker-compose.yml not validated with Compose', 'skipping moto emulator tests', 'skipping the unshare -Urm test', 'v2 Envoy-faithful client test skipped'].sort(),
    );
    for (const note of notes) expect(section, `skip note "${note}"`).toContain(`\`${note}`);
    expect(skipping.length).toBeGreaterThan(10);
    for (const file of skipping) {
      const named = section.includes(`\`${file}\``) || (file.startsWith('test/envoy/') && section.includes('`test/envoy/*`'));
      expect(named, `${file} can skip: the README's Tests section should name it`).toBe(true);
    }
  });
});
