/**
 * Measures how long a certificate rotation takes to reach a real Envoy: from the rename of the
 * new cert/key files to Envoy's admin /certs showing the new serial. Runs the end-to-end topology
 * of test/envoy (sds-server in this process, two Envoys), rotates the server-side leaf N times by
 * write-temp-and-rename, and prints each time and the median.
 *
 *   npx tsx scripts/envoy/measure-rotation.ts [--runs 10]
 *
 * Needs Envoy: ENVOY_BIN, `envoy` on PATH, or `bash scripts/envoy/install-envoy.sh`.
 */
import { findEnvoy, INSTALL_HINT, envoyVersion } from '../../test/envoy/find-envoy.js';
import { sameSerial, sleep } from '../../test/envoy/harness.js';
import { Mesh, issueServerLeaf } from '../../test/envoy/mesh.js';

function parseRuns(argv: string[]): number {
  const i = argv.indexOf('--runs');
  const value = i >= 0 ? Number(argv[i + 1]) : 10;
  if (!Number.isInteger(value) || value < 1) throw new Error(`--runs expects a positive integer, got ${argv[i + 1]}`);
  return value;
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? (sorted[mid] ?? NaN) : ((sorted[mid - 1] ?? NaN) + (sorted[mid] ?? NaN)) / 2;
}

async function main(): Promise<number> {
  const runs = parseRuns(process.argv.slice(2));
  const found = findEnvoy();
  if (!found.found) {
    console.error(`measure-rotation: ${found.problem}; ${INSTALL_HINT}`);
    return 1;
  }
  console.log(`Envoy ${envoyVersion(found.bin) ?? '?'} (${found.bin})`);
  const mesh = await Mesh.start({ envoyBin: found.bin });
  const times: number[] = [];
  try {
    const envoy = mesh.serverEnvoy;
    const ca = mesh.files.cas[0];
    if (!ca) throw new Error('no CA');
    for (let run = 1; run <= runs; run++) {
      const leaf = await issueServerLeaf(ca);
      await mesh.files.rotateServer(leaf);
      const renamedAt = mesh.files.server.lastRenameAt;
      const deadline = renamedAt + 10_000;
      for (;;) {
        if (sameSerial(await envoy.servedSerial(), leaf.serialNumber)) break;
        if (performance.now() > deadline) throw new Error(`run ${run}: Envoy did not show serial ${leaf.serialNumber} within 10 s\n${mesh.report()}`);
        await sleep(2);
      }
      const ms = performance.now() - renamedAt;
      times.push(ms);
      console.log(`run ${String(run).padStart(2)}: ${ms.toFixed(1)} ms`);
      // Let the previous rotation settle so runs do not overlap.
      await sleep(100);
    }
  } finally {
    await mesh.close();
  }
  const m = median(times);
  console.log(`median rename -> Envoy /certs: ${m.toFixed(1)} ms over ${times.length} runs (min ${Math.min(...times).toFixed(1)}, max ${Math.max(...times).toFixed(1)})`);
  return 0;
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    console.error(err instanceof Error ? err.message : err);
    process.exit(1);
  },
);
