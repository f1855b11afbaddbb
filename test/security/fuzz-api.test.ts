import test from 'node:test';
import fc from 'fast-check';
import { rootOnly } from '../support/root.js';
import { apiCases, startApiFuzzTarget } from '../support/fuzz/api-fuzz.js';

// The seeded sample; `node dist/bench/fuzz.js --cases 10000` runs the long one.
test('fuzz: API routes, ids and bodies through the real app (seeded sample)', rootOnly(), async () => {
  const t = await startApiFuzzTarget();
  try {
    await fc.assert(
      fc.asyncProperty(apiCases(t.allowed), async (c) => {
        await t.run(c);
      }),
      { numRuns: Number(process.env.CRAB_FUZZ_CASES ?? 300), seed: Number(process.env.CRAB_FUZZ_SEED ?? 19), includeErrorInReport: true },
    );
  } finally {
    await t.close();
  }
});
