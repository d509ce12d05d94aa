import { describe, expect, it } from 'vitest';
import { parseConfigFile } from '../../src/cli/config.js';
import { parseCommandLine } from '../../src/cli/args.js';
import { startApp } from '../../src/cli/app.js';
import { createLogger } from '../../src/core/logger.js';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';

const problems = (text: string): string => {
  try {
    parseConfigFile(text, 'sds.yaml');
  } catch (err) {
    return (err as Error).message;
  }
  return '';
};

describe('authorization configuration (workloads, identityTemplate)', () => {
  it('reads the documented shape', () => {
    const config = parseConfigFile(
      `identities:
  - spiffeId: spiffe://example.org/front
  - spiffeId: spiffe://example.org/ns/shop/sa/back
workloads:
  - selectors: ["unix:uid:1001"]
    identities: ["spiffe://example.org/front"]
  - selectors: ["k8s:ns:shop", "k8s:sa:back"]
    identities: ["spiffe://example.org/ns/shop/sa/back"]
identityTemplate: "spiffe://{trustDomain}/ns/{k8s:ns}/sa/{k8s:sa}"
onDemandIdleSeconds: 60
onDemandLifetime: 15m
`,
      'sds.yaml',
    );
    expect(config.authorization).toEqual({
      enabled: true,
      workloads: [
        { selectors: ['unix:uid:1001'], identities: ['spiffe://example.org/front'] },
        { selectors: ['k8s:ns:shop', 'k8s:sa:back'], identities: ['spiffe://example.org/ns/shop/sa/back'] },
      ],
      identityTemplate: 'spiffe://{trustDomain}/ns/{k8s:ns}/sa/{k8s:sa}',
      onDemandIdleSeconds: 60,
      onDemandLifetimeSeconds: 900,
    });
  });

  it('is off without workloads and identityTemplate', () => {
    expect(parseConfigFile('identities: [{ spiffeId: "spiffe://example.org/a" }]', 'sds.yaml').authorization.enabled).toBe(false);
  });

  it('names the field of every problem', () => {
    const message = problems(`identities:
  - spiffeId: spiffe://example.org/front
workloads:
  - selectors: []
    identities: ["spiffe://example.org/front"]
  - selectors: ["uid:1001"]
    identities: ["spiffe://example.org/nope"]
  - identities: ["spiffe://example.org"]
  - selectors: ["unix:uid:1"]
    identities: spiffe://example.org/front
    extra: 1
identityTemplate: "spiffe://{trustDomain}/ns/{k8s:ns}/{pod}"
onDemandIdleSeconds: -1
`);
    expect(message).toContain('sds.yaml: workloads[0].selectors: must name at least one selector (an entry without selectors would match every caller)');
    expect(message).toContain('sds.yaml: workloads[1].selectors[0]: "uid:1001" is not a selector of the form type:name:value');
    expect(message).toContain('sds.yaml: workloads[1].identities[0]: "spiffe://example.org/nope" is not a configured certificate or identity');
    expect(message).toContain('sds.yaml: workloads[2].selectors: is required');
    expect(message).toContain('sds.yaml: workloads[2].identities[0]: "spiffe://example.org" is not a workload SPIFFE ID (trust bundles go to every caller; list only identities)');
    expect(message).toContain('sds.yaml: workloads[3].extra: unknown field');
    expect(message).toContain('sds.yaml: identityTemplate: placeholder {pod} is neither {trustDomain} nor a selector type');
    expect(message).toContain('sds.yaml: onDemandIdleSeconds: expected an integer >= 0 and <= 2147483, got number -1');
    expect(problems('workloads: {}')).toContain('sds.yaml: workloads: expected a list of { selectors, identities }, got a mapping');
    expect(problems('identityTemplate: "spiffe://other.org/{k8s:sa}"')).toContain("sds.yaml: identityTemplate: \"spiffe://other.org/{k8s:sa}\" is not in the CA's trust domain example.org");
    expect(problems('onDemandIdleSeconds: 5')).toContain('sds.yaml: onDemandIdleSeconds: applies only with identityTemplate');
  });

  it('with only identityTemplate, the embedded CA issues nothing until asked (no default identity)', async () => {
    const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'sds-authz-cfg-'));
    try {
      const file = path.join(dir, 'sds.yaml');
      await fs.writeFile(file, 'identityTemplate: "spiffe://{trustDomain}/uid/{unix:uid}"\n');
      const command = parseCommandLine(['--config', file, '--data-dir', path.join(dir, 'ca'), '--cert-lifetime', '10m'], {});
      if (command.kind !== 'run') throw new Error('expected run');
      expect(command.config.identities).toEqual([]);
      expect(command.config.authorization.onDemandLifetimeSeconds).toBe(600);
      expect(command.config.ca.embedded.dataDir).toBe(path.join(dir, 'ca'));
    } finally {
      await fs.rm(dir, { recursive: true, force: true });
    }
  });

  it('without workloads the server says at start and in /status that every process gets every identity', async () => {
    const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'sds-authz-off-'));
    const lines: Array<Record<string, unknown>> = [];
    const command = parseCommandLine(['--socket', path.join(dir, 'sds.sock'), '--data-dir', path.join(dir, 'ca')], {});
    if (command.kind !== 'run') throw new Error('expected run');
    const app = await startApp(command.config, createLogger({ write: (l) => lines.push(JSON.parse(l) as Record<string, unknown>) }));
    try {
      const warning = 'authorization is off (no workloads or identityTemplate in the config): every process that can open the socket gets every identity';
      expect(lines).toContainEqual(expect.objectContaining({ level: 'warn', msg: warning }));
      expect(app.status().authorization).toEqual({ enabled: false, summary: warning });
    } finally {
      await app.stop();
      await fs.rm(dir, { recursive: true, force: true });
    }
  });
});
