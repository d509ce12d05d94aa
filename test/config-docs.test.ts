import { describe, expect, it } from 'vitest';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { renderConfigDocs } from '../scripts/config-docs.js';
import { USAGE } from '../src/cli/args.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

describe('docs/configuration.md', () => {
  it('is what the config schema generates (run `npm run docs:config` after changing the schema)', () => {
    const checkedIn = fs.readFileSync(path.join(ROOT, 'docs', 'configuration.md'), 'utf8');
    expect(checkedIn).toBe(renderConfigDocs());
  });

  it('documents every field of every CA backend, including cfssl profiles, label and maxResponseBytes, and the transport limits', () => {
    const doc = renderConfigDocs();
    for (const field of [
      'ca.embedded.caCert',
      'ca.awsPca.certificateAuthorityArn',
      'ca.cfssl.profiles[].lifetime',
      'ca.cfssl.label',
      'ca.cfssl.maxResponseBytes',
      'socket.limits.maxConnectionsPerUid',
      'socket.limits.pingIntervalMs',
      'attestation.kubernetes.kubeletUrl',
    ]) {
      expect(doc, field).toContain(`| \`${field}\` |`);
    }
  });

  it('is the page `--help` points at', () => {
    expect(USAGE).toContain('docs/configuration.md');
    expect(fs.existsSync(path.join(ROOT, 'docs', 'configuration.md'))).toBe(true);
  });
});
