/**
 * Fuzzing of the `crab-trace/1` parser: valid traces (arbitraries derived by hand from the zod
 * schemas in src/bench/trace.ts), then mutated line by line (dropped, duplicated, swapped, cut,
 * a value replaced by any JSON, random bytes, a BOM, CRLF, NUL, 100 kB lines) and random text.
 *
 * Every case must: parse into a trace that keeps the format's promises (turns 1..n in order, a
 * name that is an id), or fail with TRACE_INVALID (kind 'invalid': exit code 2) whose message names
 * the file and a line of it, in bounded time. Never another error, never a crash.
 */
import fc from 'fast-check';
import { CrabError } from '../../../src/core/errors.js';
import { ID_PATTERN } from '../../../src/core/ids.js';
import { parseTrace, TRACE_BASE_IMAGE, TRACE_FORMAT } from '../../../src/bench/trace.js';
import { jsonValue, validId } from './arbitraries.js';

const FILE = 'fuzz.trace.jsonl';

const cmd = fc.string({ minLength: 1, maxLength: 40 });
const nat = fc.nat(1_000_000);
const action = fc
  .record({ cmd, timeout_s: fc.option(fc.double({ min: 0.001, max: 1e4, noNaN: true }), { nil: undefined }), expect_exit: fc.option(fc.integer({ min: 0, max: 255 }), { nil: undefined }), expect_stdout: fc.option(fc.string({ maxLength: 20 }), { nil: undefined }) })
  .map((o) => Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)));
const header = fc
  .record({
    format: fc.constant(TRACE_FORMAT),
    name: validId,
    source: fc.string({ maxLength: 30 }),
    image: fc.record({ base: fc.constant(TRACE_BASE_IMAGE), packages: fc.array(fc.stringMatching(/^[a-z0-9][a-z0-9+.-]{1,15}$/), { maxLength: 3 }) }),
    shell: fc.option(fc.constantFrom('persistent', 'fresh'), { nil: undefined }),
    setup: fc.option(fc.array(cmd, { maxLength: 3 }), { nil: undefined }),
    verify: fc.option(fc.array(fc.record({ cmd, expect_exit: fc.integer({ min: 0, max: 255 }) }), { maxLength: 2 }), { nil: undefined }),
  })
  .map((o) => Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)));
const turn = (i: number) =>
  fc.record({
    turn: fc.constant(i),
    llm: fc.record({ latency_ms: nat, prompt_tokens: nat, completion_tokens: nat }),
    actions: fc.array(action, { maxLength: 3 }),
  });

/** The lines of a valid trace. */
export const validTrace = fc.integer({ min: 1, max: 6 }).chain((n) => fc.tuple(header, ...Array.from({ length: n }, (_, i) => turn(i + 1))).map((objs) => objs.map((o) => JSON.stringify(o))));

type Mutation = (lines: string[]) => fc.Arbitrary<string[]>;
const at = (lines: string[]) => fc.nat(Math.max(0, lines.length - 1));
const MUTATIONS: Mutation[] = [
  (l) => at(l).map((i) => l.filter((_, j) => j !== i)),
  (l) => at(l).map((i) => [...l.slice(0, i + 1), l[i]!, ...l.slice(i + 1)]),
  (l) => fc.tuple(at(l), at(l)).map(([i, j]) => l.map((x, k) => (k === i ? l[j]! : k === j ? l[i]! : x))),
  (l) => fc.tuple(at(l), fc.nat()).map(([i, c]) => l.map((x, k) => (k === i ? x.slice(0, c % (x.length + 1)) : x))),
  (l) =>
    fc.tuple(at(l), fc.nat(), jsonValue).map(([i, k, v]) =>
      l.map((x, j) => {
        if (j !== i) return x;
        const o = JSON.parse(x) as Record<string, unknown>;
        const keys = Object.keys(o);
        return JSON.stringify({ ...o, [keys[k % keys.length] ?? 'x']: v });
      }),
    ),
  (l) => fc.tuple(at(l), fc.string({ unit: 'binary', maxLength: 50 })).map(([i, junk]) => l.map((x, j) => (j === i ? junk : x))),
  (l) => fc.tuple(at(l), fc.string({ unit: 'binary', maxLength: 8 }), fc.nat()).map(([i, junk, p]) => l.map((x, j) => (j === i ? x.slice(0, p % (x.length + 1)) + junk + x.slice(p % (x.length + 1)) : x))),
  (l) => fc.constant(['\uFEFF' + l[0]!, ...l.slice(1)]),
  (l) => fc.constant(l.map((x) => x.replace(/"name":"/, '"name":"../../').replace(/"cmd":"/, '"cmd":"\\u0000'))),
  (l) => fc.integer({ min: 10_000, max: 100_000 }).map((n) => [...l, JSON.stringify({ turn: l.length, llm: { latency_ms: 1, prompt_tokens: 1, completion_tokens: 1 }, actions: [{ cmd: 'x'.repeat(n) }] })]),
  (l) => fc.constant(['', ...l]),
  (l) => fc.constant([...l, '', '', '  ']),
  (l) => fc.constant([l[0]!.replace(TRACE_FORMAT, 'crab-trace/2'), ...l.slice(1)]),
  (l) => fc.constant(l.slice(0, 1)),
];

/** A trace's text and whether it is surely valid. */
export const traceTexts: fc.Arbitrary<{ text: string; valid: boolean }> = fc.oneof(
  { weight: 2, arbitrary: fc.tuple(validTrace, fc.boolean()).map(([l, crlf]) => ({ text: l.join(crlf ? '\r\n' : '\n') + '\n', valid: true })) },
  { weight: 6, arbitrary: fc.tuple(validTrace, fc.nat(MUTATIONS.length - 1)).chain(([l, m]) => MUTATIONS[m]!(l).map((x) => ({ text: x.join('\n'), valid: false }))) },
  { weight: 1, arbitrary: fc.string({ unit: 'binary', maxLength: 400 }).map((text) => ({ text, valid: false })) },
  { weight: 1, arbitrary: fc.array(jsonValue, { maxLength: 5 }).map((vs) => ({ text: vs.map((v) => JSON.stringify(v)).join('\n'), valid: false })) },
);

/** Parses one text; throws (with the case) when a property is broken. Returns whether it parsed. */
export function checkTrace(c: { text: string; valid: boolean }, maxMs = 2000): 'parsed' | 'refused' {
  const t0 = performance.now();
  const fail = (why: string): never => {
    throw new Error(`${why}\n  text: ${JSON.stringify(c.text.slice(0, 400))}${c.text.length > 400 ? `…(${c.text.length} chars)` : ''}`);
  };
  let out: 'parsed' | 'refused';
  try {
    const t = parseTrace(c.text, FILE);
    if (!ID_PATTERN.test(t.header.name)) fail(`parsed a trace named ${JSON.stringify(t.header.name)}`);
    t.turns.forEach((x, i) => x.turn !== i + 1 && fail(`turn ${i} is numbered ${x.turn}`));
    if (t.turns.length === 0) fail('parsed a trace without turns');
    out = 'parsed';
  } catch (err) {
    if (!(err instanceof CrabError)) return fail(`threw ${(err as Error)?.name}: ${(err as Error)?.message}`);
    if (err.code !== 'TRACE_INVALID' || err.kind !== 'invalid') fail(`threw ${err.code}/${err.kind}`);
    const line = (err.details as { line?: unknown }).line;
    if (!err.message.startsWith(`${FILE}:`) || typeof line !== 'number' || line < 1) fail(`an error that names no line: ${err.message.slice(0, 200)}`);
    if (err.message.length > 2000) fail(`a ${err.message.length}-character message`);
    if (c.valid) fail(`a valid trace was refused: ${err.message.slice(0, 300)}`);
    out = 'refused';
  }
  const ms = performance.now() - t0;
  if (ms > maxMs) fail(`took ${Math.round(ms)} ms`);
  return out;
}
