/**
 * The long fuzz runs (issue 19): API routes and bodies, LLM proxy requests and crab-trace/1 files,
 * `--cases` each (default 10,000), with fast-check. Prints per target: cases, time, what the
 * answers were, and the first failing case (shrunk) if any; exits 1 when a property broke.
 * Run: node dist/bench/fuzz.js [--cases N] [--seed S] [--only api,proxy,trace] [--json FILE]
 * (root for the API target: it runs a real CrabHost on a CRAB_HOME of its own in a temp dir).
 */
import fs from 'node:fs';
import fc from 'fast-check';
import { apiCases, startApiFuzzTarget } from '../test/support/fuzz/api-fuzz.js';
import { proxyCases, startProxyFuzzTarget } from '../test/support/fuzz/proxy-fuzz.js';
import { checkTrace, traceTexts } from '../test/support/fuzz/trace-fuzz.js';

function arg(name: string, fallback: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && process.argv[i + 1] ? process.argv[i + 1]! : fallback;
}
const cases = Number(arg('cases', '10000'));
const seed = Number(arg('seed', String(Date.now() % 1_000_000)));
const only = new Set(arg('only', 'api,proxy,trace').split(','));

interface Figures {
  target: string;
  cases: number;
  seed: number;
  seconds: number;
  casesPerSecond: number;
  passed: boolean;
  answers: Record<string, number>;
  failure?: string;
}

function summarize<T>(target: string, t0: number, details: fc.RunDetails<T>, answers: Map<string, number>): Figures {
  const seconds = (performance.now() - t0) / 1000;
  const f: Figures = {
    target,
    cases: details.numRuns,
    seed,
    seconds: Math.round(seconds * 10) / 10,
    casesPerSecond: Math.round(details.numRuns / seconds),
    passed: !details.failed,
    answers: Object.fromEntries([...answers].sort((a, b) => b[1] - a[1])),
  };
  if (details.failed) f.failure = `${String(details.errorInstance instanceof Error ? details.errorInstance.message : details.errorInstance).slice(0, 2000)}\n  counterexample path ${details.counterexamplePath}`;
  return f;
}

const results: Figures[] = [];
const params = { numRuns: cases, seed, endOnFailure: true } as const;

if (only.has('api')) {
  const t = await startApiFuzzTarget();
  const t0 = performance.now();
  try {
    const d = await fc.check(fc.asyncProperty(apiCases(t.allowed), async (c) => void (await t.run(c))), params);
    results.push(summarize('api', t0, d, t.seen));
  } finally {
    await t.close();
  }
}
if (only.has('proxy')) {
  const t = await startProxyFuzzTarget();
  const t0 = performance.now();
  try {
    const d = await fc.check(fc.asyncProperty(proxyCases(), async (c) => void (await t.run(c))), params);
    await t.healthy();
    results.push(summarize('proxy', t0, d, t.seen));
  } finally {
    await t.close();
  }
}
if (only.has('trace')) {
  const seen = new Map<string, number>();
  const t0 = performance.now();
  const d = fc.check(
    fc.property(traceTexts, (c) => {
      const r = checkTrace(c);
      seen.set(r, (seen.get(r) ?? 0) + 1);
    }),
    params,
  );
  results.push(summarize('trace', t0, d, seen));
}

for (const r of results) {
  const answers = Object.entries(r.answers)
    .map(([k, v]) => `${k}: ${v}`)
    .join(', ');
  console.log(`${r.target}: ${r.cases} cases (seed ${r.seed}) in ${r.seconds} s, ${r.casesPerSecond}/s — ${r.passed ? 'no property broken' : 'BROKEN'}\n  answers: ${answers}${r.failure ? `\n  ${r.failure}` : ''}`);
}
const json = arg('json', '');
if (json) fs.writeFileSync(json, JSON.stringify(results, null, 2));
process.exitCode = results.every((r) => r.passed) ? 0 : 1;
