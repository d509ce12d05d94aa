import { describe, expect, it } from 'vitest';
import fs from 'node:fs';
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
});
