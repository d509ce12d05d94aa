/**
 * Writes the files docker-compose.yml mounts (examples/demo/*) from scripts/demo/mesh-config.ts,
 * the same source `npm run demo` renders its local bootstraps from.
 *
 *   npx tsx scripts/demo/render-examples.ts           # (re)write them
 *   npx tsx scripts/demo/render-examples.ts --check   # exit 1 when a committed file is stale
 */
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { REPO_ROOT, composeFiles } from './mesh-config.js';

const check = process.argv.includes('--check');
let stale = 0;
for (const [rel, content] of Object.entries(composeFiles())) {
  const file = path.join(REPO_ROOT, rel);
  let current: string | undefined;
  try {
    current = readFileSync(file, 'utf8');
  } catch {
    current = undefined;
  }
  if (current === content) {
    console.log(`up to date  ${rel}`);
  } else if (check) {
    stale++;
    console.log(`stale       ${rel}`);
  } else {
    mkdirSync(path.dirname(file), { recursive: true });
    writeFileSync(file, content);
    console.log(`written     ${rel}`);
  }
}
if (stale > 0) {
  console.error(`${stale} file(s) differ from scripts/demo/mesh-config.ts; run: npx tsx scripts/demo/render-examples.ts`);
  process.exit(1);
}
