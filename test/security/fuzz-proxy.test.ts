import test from 'node:test';
import fc from 'fast-check';
import { proxyCases, startProxyFuzzTarget } from '../support/fuzz/proxy-fuzz.js';

// The seeded sample; `node dist/bench/fuzz.js --cases 10000` runs the long one.
test('fuzz: raw requests to the LLM proxy, in front of a local fake upstream (seeded sample)', async () => {
  const t = await startProxyFuzzTarget();
  try {
    await fc.assert(
      fc.asyncProperty(proxyCases(), async (c) => {
        await t.run(c);
      }),
      { numRuns: Number(process.env.CRAB_FUZZ_CASES ?? 400), seed: Number(process.env.CRAB_FUZZ_SEED ?? 19), includeErrorInReport: true },
    );
    await t.healthy();
  } finally {
    await t.close();
  }
});
