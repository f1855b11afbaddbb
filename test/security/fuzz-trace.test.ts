import test from 'node:test';
import fc from 'fast-check';
import { checkTrace, traceTexts } from '../support/fuzz/trace-fuzz.js';

// The seeded sample; `node dist/bench/fuzz.js --cases 10000` runs the long one.
test('fuzz: crab-trace/1 files, valid, mutated and random (seeded sample)', () => {
  fc.assert(
    fc.property(traceTexts, (c) => {
      checkTrace(c);
    }),
    { numRuns: Number(process.env.CRAB_FUZZ_CASES ?? 1000), seed: Number(process.env.CRAB_FUZZ_SEED ?? 19), includeErrorInReport: true },
  );
});
