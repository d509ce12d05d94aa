/** `npm run docs:config`: writes docs/configuration.md from the config schema. */
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { renderConfigDocs } from './config-docs.js';

const file = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'docs', 'configuration.md');
fs.writeFileSync(file, renderConfigDocs());
console.log(`wrote ${path.relative(process.cwd(), file)}`);
