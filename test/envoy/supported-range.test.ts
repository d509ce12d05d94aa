/**
 * The supported Envoy range is one pair of numbers (envoy-oldest-version.txt, envoy-version.txt),
 * stated in the README and proven by CI: .ci/run runs the real-Envoy suite once per end, setting
 * ENVOY_EXPECT_VERSION so a run cannot silently test another binary than the one it names.
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { expect, it } from 'vitest';
import { REPO_ROOT, describeWithEnvoy, envoyVersion, pinnedEnvoyVersion } from './find-envoy.js';

const oldest = (): string => readFileSync(path.join(REPO_ROOT, 'envoy-oldest-version.txt'), 'utf8').trim();

/** -1, 0, 1 as `a` is older than, equal to, newer than `b` (x.y.z). */
function compareVersions(a: string, b: string): number {
  const pa = a.split('.').map(Number);
  const pb = b.split('.').map(Number);
  for (let i = 0; i < 3; i++) if ((pa[i] ?? 0) !== (pb[i] ?? 0)) return (pa[i] ?? 0) < (pb[i] ?? 0) ? -1 : 1;
  return 0;
}

describeWithEnvoy('the Envoy under test is in the supported range', (envoyBin) => {
  it('envoy --version lies between envoy-oldest-version.txt and envoy-version.txt (and is ENVOY_EXPECT_VERSION when set)', () => {
    const version = envoyVersion(envoyBin);
    console.log(`real-Envoy suite running on Envoy ${version ?? '(unknown)'} (${envoyBin})`);
    if (version === undefined) throw new Error(`cannot read the version of ${envoyBin}`);
    expect(compareVersions(version, oldest()), `${version} >= ${oldest()}`).toBeGreaterThanOrEqual(0);
    expect(compareVersions(version, pinnedEnvoyVersion()), `${version} <= ${pinnedEnvoyVersion()}`).toBeLessThanOrEqual(0);
    const expected = process.env.ENVOY_EXPECT_VERSION;
    if (expected) expect(version).toBe(expected);
  });

  it('the README states the range the version files hold', () => {
    const readme = readFileSync(path.join(REPO_ROOT, 'README.md'), 'utf8');
    expect(readme).toContain(`**Supported Envoy releases: ${oldest()} to ${pinnedEnvoyVersion()}**`);
  });
});
