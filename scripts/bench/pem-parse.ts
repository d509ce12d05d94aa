/**
 * Issue 10: the PEM parser on hostile input. Parses files of certificate header lines (every line
 * a BEGIN marker without an END) of growing size, and one valid 200-certificate bundle, printing
 * the time per parse. Before the linear rewrite, 0.5 MB took 1.3-3 s and 1 MB 5-12 s on 2 cores.
 *
 *   npx tsx scripts/bench/pem-parse.ts
 */
import { parsePem } from '../../src/x509/pem.js';
import { createRootCa } from '../../src/x509/issue.js';

function time(label: string, text: string, runs = 5): void {
  const samples: number[] = [];
  let problems = 0;
  for (let i = 0; i < runs; i++) {
    const started = performance.now();
    problems = parsePem(text).malformed.length;
    samples.push(performance.now() - started);
  }
  samples.sort((a, b) => a - b);
  const median = samples[Math.floor(samples.length / 2)] ?? 0;
  console.log(`${label.padEnd(44)} ${(text.length / 1e6).toFixed(2)} MB  median ${median.toFixed(1)} ms  max ${(samples.at(-1) ?? 0).toFixed(1)} ms  (${problems} problem lines kept)`);
}

const header = '-----BEGIN CERTIFICATE-----\n';
for (const mb of [0.25, 0.5, 1, 2]) time(`${mb} MB of certificate header lines`, header.repeat(Math.floor((mb * 1e6) / header.length)));
const roots = await Promise.all(Array.from({ length: 200 }, (_, i) => createRootCa({ commonName: `root ${i}` })));
time('a valid bundle of 200 roots', roots.map((r) => r.certPem).join(''));
