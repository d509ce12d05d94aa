import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts', 'src/**/*.test.ts'],
    testTimeout: 20_000,
    hookTimeout: 30_000,
    // Socket and file-watch tests each own temp dirs; run files in parallel, tests in a file serially.
    pool: 'forks',
  },
});
