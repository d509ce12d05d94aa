// Module hooks (node --import): appends every resolved module URL to $RECORD_IMPORTS_FILE, so a
// test can tell which files a process loaded. Registered after tsx, so it sees tsx's answers.
import { register } from 'node:module';

register('./record-imports-hooks.mjs', import.meta.url, { data: { out: process.env.RECORD_IMPORTS_FILE } });
