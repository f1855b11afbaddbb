import test from 'node:test';
import assert from 'node:assert/strict';
import { judge, summarize, traceClasses } from '../../../src/bench/bench.js';
import { emptyResult } from '../../../src/bench/run-result.js';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { noiseBetween, stateDifference, upperEntries, type FinalState } from '../../../src/bench/final-state.js';
import { percentile, resumeTurn, type RunResult } from '../../../src/bench/replay.js';
import { renderTable } from '../../../src/bench/report.js';

test('percentile', () => {
  assert.equal(percentile([], 99), 0);
  assert.equal(percentile([5], 50), 5);
  assert.equal(percentile([1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 50), 5);
  assert.equal(percentile([1, 2, 3, 4, 5, 6, 7, 8, 9, 100], 99), 100);
});

test('resumeTurn: a recovery skips re-running the boundaries after the checkpoint that took none', () => {
  type Gate = 'pending' | 'committed' | 'skipped' | 'failed' | 'timeout';
  const recs = (...gates: Gate[]) => gates.map((gate, turnIndex) => ({ turnIndex, gate }));
  // [what, records (boundary i = gates[i]), checkpointed turns, restored turn, done turns, want]
  const table: Array<[string, ReturnType<typeof recs>, number[], number, number, number]> = [
    // Crab mode: the job decides to skip, so the gate is 'committed' but no checkpoint has the turn.
    ['crab: every boundary after 0 was skipped inside the job', recs(...Array<Gate>(10).fill('committed')), [0], 0, 9, 9],
    ['crab: stops at the first boundary that took a checkpoint', recs(...Array<Gate>(10).fill('committed')), [0, 5], 0, 9, 4],
    ['crab: skips after the restored checkpoint', recs(...Array<Gate>(10).fill('committed')), [0, 5], 5, 9, 9],
    ['the planner needed no job: gate skipped', recs('committed', 'skipped', 'skipped', 'committed'), [0, 3], 0, 3, 2],
    ['a failed gate stops it', recs('committed', 'committed', 'failed', 'committed'), [0], 0, 3, 1],
    ['a pending gate (the killed boundary) stops it', recs('committed', 'committed', 'pending'), [0], 0, 2, 1],
    ['a timed-out gate stops it', recs('committed', 'timeout', 'committed'), [0], 0, 2, 0],
    ['a boundary without a record stops it', recs('committed', 'committed'), [0], 0, 4, 1],
    ['full: a checkpoint at every boundary, the newest restored', recs('committed', 'committed', 'committed'), [0, 1, 2], 2, 2, 2],
    ['nothing done after the restored turn', recs('committed', 'committed'), [0, 1], 1, 1, 1],
    ['never past doneTurns', recs(...Array<Gate>(10).fill('committed')), [0], 0, 3, 3],
  ];
  for (const [what, records, cks, restored, done, want] of table) assert.equal(resumeTurn(records, new Set(cks), restored, done), want, what);
  // After an earlier recovery a boundary is asked again: its newest record counts.
  assert.equal(resumeTurn([...recs('committed', 'failed', 'committed'), { turnIndex: 1, gate: 'committed' }], new Set([0]), 0, 2), 2);
});

const state = (files: Record<string, string>, processes: string[] = [], shell: string | null = 's'): FinalState => ({ filesHash: JSON.stringify(files), files, processes, shell });

test('state comparison ignores what two clean runs disagree on, nothing else', () => {
  const a = state({ 'w/a': 'f 1', 'w/.git/index': 'f x', 'w/.git/objects/aa/1': 'f c1', 'w/.git/objects/aa': 'd', 'w/.git/objects': 'd' });
  const b = state({ 'w/a': 'f 1', 'w/.git/index': 'f y', 'w/.git/objects/bb/2': 'f c2', 'w/.git/objects/bb': 'd', 'w/.git/objects': 'd' });
  const noise = noiseBetween(a, b);
  assert.ok(noise.volatileDirs.has('w/.git/objects'));
  const c = state({ 'w/a': 'f 1', 'w/.git/index': 'f z', 'w/.git/objects/cc/3': 'f c3', 'w/.git/objects/cc': 'd', 'w/.git/objects': 'd' });
  assert.equal(stateDifference(a, c, noise), null);
  assert.match(stateDifference(a, state({ ...c.files, 'w/a': 'f 2' }), noise)!, /w\/a/);
  assert.match(stateDifference(a, state({ ...c.files, 'w/new': 'f 1' }), noise)!, /w\/new/);
  assert.match(stateDifference(a, state(c.files, ['sleep 600']), noise)!, /processes/);
  assert.match(stateDifference(a, state(c.files, [], 'other'), noise)!, /shell/);
  // When the two clean runs already disagree on the shell (a pid in a variable), it is not judged.
  const shellNoise = noiseBetween(state({}, [], 'x'), state({}, [], 'y'));
  assert.equal(stateDifference(state({}, [], 'x'), state({}, [], 'z'), shellNoise), null);
  assert.match(stateDifference(state({}, [], 'x'), state({}, ['sleep 1'], 'z'), shellNoise)!, /processes/);
  // A file a live process keeps rewriting (seen changing while the state was read) is not judged.
  const counter = { ...state({ 'tmp/cnt': 'f 5' }), live: ['tmp/cnt'] };
  assert.equal(stateDifference(state({ 'tmp/cnt': 'f 9' }), counter), null);
  assert.match(stateDifference(state({ 'tmp/cnt': 'f 9' }), state({ 'tmp/cnt': 'f 5' }))!, /tmp\/cnt/);
});

function run(p: Partial<RunResult>): RunResult {
  return { ...emptyResult('t', 'none', 'none', 1, 2 ** 31), wall_ms: 1000, ...p };
}

test('judge and summarize: correctness, overhead vs none, traffic vs full under the paper charge, the store, whole and deduplicated, skip fraction', () => {
  const s = state({ a: 'f 1' });
  const runs = [
    run({ final: s }),
    run({ fault: 'none-repeat', final: s }),
    run({ mode: 'full', wall_ms: 1100, ckpt_bytes: 2000, ckpt_bytes_turns: 1500, ckpt_dedup_bytes: 1000, ckpt_dedup_bytes_turns: 600, ckpt_whole_bytes: 4000, ckpt_whole_bytes_turns: 3000, ckpts: { full: 4, process: 0, fs: 0, skip: 0 }, final: s, gate_waits: [0, 10, 20, 30] }),
    // Boundary 0 (the setup) takes the base checkpoint; turns 1..3 take none.
    run({ mode: 'crab', wall_ms: 1010, ckpt_bytes: 100, ckpt_bytes_turns: 30, ckpt_dedup_bytes: 80, ckpt_dedup_bytes_turns: 30, ckpts: { full: 1, process: 0, fs: 0, skip: 3 }, turns: { judged: 3, skipped: 3 }, final: s }),
    run({ mode: 'crab', fault: 'host-crash@after-actions:2', final: s, restore_ms: 200, turns_rerun: 2, crashes: { total: 1, busy: 0, mid_action: 0 }, ckpts_lost: 0 }),
    run({ mode: 'chat-only', fault: 'host-crash@after-actions:2', final: state({ a: 'f 2' }) }),
  ];
  judge(runs);
  assert.deepEqual(runs.map((r) => r.correct), [true, true, true, true, true, false]);
  const sum = summarize(runs, ['none', 'chat-only', 'full', 'crab']);
  assert.equal(sum.crab!.correctness, 1);
  assert.equal(sum['chat-only']!.correctness, 0);
  assert.ok(Math.abs(sum.crab!.overhead_vs_none! - 0.01) < 1e-9);
  assert.ok(Math.abs(sum.full!.overhead_vs_none! - 0.1) < 1e-9);
  assert.equal(sum.crab!.overhead_spread, null, 'one repetition: no spread');
  // the paper's charge on both sides; then crab's store against it, against full whole, and deduplicated
  assert.equal(sum.crab!.traffic_vs_full, 0.05);
  assert.equal(sum.crab!.traffic_vs_full_turns, 0.02);
  assert.equal(sum.crab!.traffic_store_vs_full, 0.04);
  assert.equal(sum.crab!.traffic_vs_full_whole, 0.02);
  assert.equal(sum.crab!.traffic_vs_full_whole_turns, 0.01);
  assert.equal(sum.crab!.traffic_vs_full_dedup, 0.08);
  assert.equal(sum.crab!.traffic_vs_full_dedup_turns, 0.05);
  assert.equal(sum.full!.traffic_vs_full, 1);
  assert.equal(sum.full!.traffic_vs_full_whole, 1);
  assert.equal(sum.full!.traffic_vs_full_dedup, 1);
  assert.equal(sum.full!.ckpt_bytes, 2000);
  assert.equal(sum.full!.ckpt_dedup_bytes, 1000);
  assert.equal(sum.full!.ckpt_whole_bytes, 4000);
  assert.equal(sum.crab!.skip_fraction, 1);
  assert.equal(sum.crab!.skip_fraction_boundaries, 0.75);
  assert.equal(sum.full!.gate_wait_p99_ms, 30);
  assert.equal(sum.crab!.ckpt_bytes, 100);
  assert.equal(sum.crab!.restore_ms_p50, 200);
  assert.deepEqual(sum.crab!.crashes, { total: 1, busy: 0, mid_action: 0, ckpts_lost: 0 });
  assert.equal(sum.crab!.turns_rerun, 2);
});

test('summarize: overhead over repetitions is the mean of every pair run side by side, with the spread of the repetitions', () => {
  const s = state({ a: 'f 1' });
  const runs = [
    run({ final: s }),
    run({ fault: 'none-repeat', wall_ms: 50, final: s }),
    run({ fault: 'none#2', wall_ms: 2000, final: s }),
    run({ fault: 'none#3', wall_ms: 1000, final: s }),
    run({ mode: 'crab', wall_ms: 1010, final: s }),
    run({ mode: 'crab', fault: 'none#2', wall_ms: 2060, final: s }),
    run({ mode: 'crab', fault: 'none#3', wall_ms: 1020, final: s }),
  ];
  judge(runs);
  assert.ok(runs.every((r) => r.correct));
  const sum = summarize(runs, ['none', 'crab']);
  assert.ok(Math.abs(sum.crab!.overhead_vs_none! - 0.02) < 1e-9, String(sum.crab!.overhead_vs_none));
  assert.deepEqual(sum.crab!.overhead_reps.map((x) => Math.round(x * 1000) / 1000), [0.01, 0.03, 0.02]);
  assert.ok(Math.abs(sum.crab!.overhead_spread! - 0.01) < 1e-9, String(sum.crab!.overhead_spread));
  assert.equal(sum.crab!.runs, 3);
});

test("judge: what a mode's no-fault runs differ in from none is noise for its fault runs; among themselves, for them", () => {
  const ref = state({ a: 'f 1', 'root/go/cache/x': 'f 1' });
  const cacheB = state({ a: 'f 1', 'root/go/cache/x': 'f 2' });
  const cacheC = state({ a: 'f 1', 'root/go/cache/x': 'f 3' });
  const rows: Array<[string, RunResult[], boolean[]]> = [
    [
      'two clean runs of the mode disagree on the cache: noise for them and for the fault runs',
      [run({ final: ref }), run({ fault: 'none-repeat', final: ref }), run({ mode: 'crab', final: cacheB }), run({ mode: 'crab', fault: 'none#2', final: cacheC }), run({ mode: 'crab', fault: 'host-crash@mid-wait:2', final: cacheB })],
      [true, true, true, true, true],
    ],
    [
      'one clean run of the mode differs from none: it is judged so, its fault runs are not held to it',
      [run({ final: ref }), run({ fault: 'none-repeat', final: ref }), run({ mode: 'crab', final: cacheB }), run({ mode: 'crab', fault: 'host-crash@mid-wait:2', final: cacheB })],
      [true, true, false, true],
    ],
    [
      'a fault run that differs elsewhere is still wrong',
      [run({ final: ref }), run({ fault: 'none-repeat', final: ref }), run({ mode: 'crab', final: cacheB }), run({ mode: 'crab', fault: 'host-crash@mid-wait:2', final: state({ a: 'f 9', 'root/go/cache/x': 'f 2' }) })],
      [true, true, false, false],
    ],
    [
      "the other mode's noise is not this mode's",
      [run({ final: ref }), run({ fault: 'none-repeat', final: ref }), run({ mode: 'full', final: cacheB }), run({ mode: 'crab', final: ref }), run({ mode: 'crab', fault: 'host-crash@mid-wait:2', final: cacheB })],
      [true, true, false, true, false],
    ],
  ];
  for (const [why, runs, want] of rows) {
    judge(runs);
    assert.deepEqual(runs.map((r) => r.correct), want, why);
  }
});

test('renderTable: per trace and mode the paper-charge ratio to full, gate p50/p99, re-run turns and tokens wasted of the fault runs', () => {
  const s = state({ a: 'f 1' });
  const runs = [
    run({ final: s }),
    run({ fault: 'none-repeat', final: s }),
    run({ mode: 'full', ckpt_bytes: 4000, ckpt_dedup_bytes: 1000, ckpt_whole_bytes: 6000, gate_wait_ms: { p50: 3, p99: 40 }, final: s }),
    run({ mode: 'crab', ckpt_bytes: 80, ckpt_dedup_bytes: 60, final: s, checkpoints: [{ turn: 0, kind: 'full', new_bytes: 60, dedup_bytes: 45, store_new_bytes: 60, reasons: ['first-boundary'] }, { turn: 2, kind: 'fs', new_bytes: 20, dedup_bytes: 15, store_new_bytes: 20, reasons: ['fs-changed'] }] }),
    run({ mode: 'crab', fault: 'host-crash@after-actions:2', restore_ms: 300, turns_rerun: 1, tokens_wasted: 0, crashes: { total: 1, busy: 0, mid_action: 0 }, final: s }),
    run({ mode: 'crab', fault: 'host-crash@mid-wait:3', restore_ms: 500, turns_rerun: 2, tokens_wasted: 1234, crashes: { total: 1, busy: 1, mid_action: 0 }, final: s }),
  ];
  const modes = ['none', 'full', 'crab'] as const;
  judge(runs);
  const report = (rs: RunResult[], m: readonly ('none' | 'full' | 'crab')[]) => ({
    machine: { cpus: 2, memGiB: 24, kernel: 'k', node: 'v20' },
    options: { modes: [...m], faults: 'every-turn', fault_kind: 'host-crash', latency_scale: 0.05, overhead_scale: 1, concurrency: 4, repetitions: 1, memory_bytes: 2 ** 31 },
    runs: rs,
    summary: summarize(rs, [...m], traceClasses(rs)),
    trace_classes: traceClasses(rs),
    event_loop_lag_ms: { p50: 0, p99: 4.2, max: 31 },
    hosts: { started: 3, restarts: 2 },
    started_at: '',
    duration_ms: 1000,
  });
  const table = renderTable(report(runs, modes));
  const cells = (mode: string) => table.split('\n').find((l) => l.startsWith(`t `) && l.split(/\s{2,}/)[1] === mode)!.split(/\s{2,}/);
  // charged (paper), vs full, store, vs full (dedup), gate p50/p99
  assert.deepEqual(cells('full').slice(6, 11), ['0.0 MiB', '100.0%', '0.0 MiB', '100.0%', '3/40']);
  assert.deepEqual(cells('crab').slice(7), ['2.0%', '0.0 MiB', '6.0%', '0/0', '400', '3', '1234']);
  assert.deepEqual(cells('none').slice(6), ['-', '-', '-', '-', '0/0', '-', '-', '-']);
  const summaryRow = (mode: string) => table.split('\n').find((l) => !l.startsWith('t ') && l.split(/\s{2,}/)[0] === mode)!.split(/\s{2,}/);
  const crab = summaryRow('crab');
  assert.deepEqual(crab.slice(5, 12), ['2.0%', '-', '0.0 MiB', '1.5%', '1.0%', '6.0%', '-'], 'paper, turns, store, store vs full, vs full whole, dedup, before dedup');
  assert.deepEqual(crab.slice(13, 17), ['300', '2 (1)', '0', '3'], 'restore p50 (nearest rank), crashes (busy), lost, re-run turns');
  assert.equal(summaryRow('full')[13], '-');
  assert.ok(table.includes("crab's store bytes by cause (checkpoints): setup 75.0% (1), files changed 25.0% (1)"), table);
  assert.ok(table.includes('shell traces (1): crab vs full (paper) 2.0%, of turns -; store vs full 1.5%'), table);
  assert.ok(table.includes('heavy traces (0): none'), table);
  assert.ok(table.includes('3 bench hosts, 2 restarts after crashes'), table);
  assert.ok(!table.includes('STOPPED'), table);
  const stopped = renderTable({ ...report([], []), summary: {}, stopped: { runs_planned: 9, runs_done: 4, runs_judged: 3 } });
  assert.ok(stopped.includes('STOPPED: 4 of 9 runs ran; 3 are in these figures'), stopped);
});

test('summarize: the shell-trace figures leave the heavy traces out, on both sides of the ratio', () => {
  const light = state({ a: 'f 420 1 x' });
  const heavy = state({ 'big.log': `f 420 ${64 * 2 ** 20} y` });
  const runs = [
    run({ trace: 'light', final: light }),
    run({ trace: 'light', mode: 'full', ckpt_bytes: 3000, ckpt_bytes_turns: 2500, ckpt_dedup_bytes: 1000, ckpt_dedup_bytes_turns: 900, ckpt_whole_bytes: 3000, final: light }),
    run({ trace: 'light', mode: 'crab', ckpt_bytes: 150, ckpt_bytes_turns: 50, ckpt_dedup_bytes: 150, ckpt_dedup_bytes_turns: 50, turns: { judged: 10, skipped: 9 }, final: light }),
    run({ trace: 'log', final: heavy }),
    run({ trace: 'log', mode: 'full', ckpt_bytes: 97000, ckpt_bytes_turns: 96000, ckpt_dedup_bytes: 9000, ckpt_dedup_bytes_turns: 8000, ckpt_whole_bytes: 97000, final: heavy }),
    run({ trace: 'log', mode: 'crab', ckpt_bytes: 8500, ckpt_bytes_turns: 7600, ckpt_dedup_bytes: 8500, ckpt_dedup_bytes_turns: 7600, turns: { judged: 10, skipped: 5 }, final: heavy }),
  ];
  const classes = traceClasses(runs);
  assert.deepEqual(classes, { light: { class: 'shell', why: null }, log: { class: 'heavy', why: '64 MiB of files' } });
  const sum = summarize(runs, ['none', 'full', 'crab'], classes);
  assert.equal(sum.crab!.traffic_vs_full, 0.0865);
  assert.equal(sum.crab!.traffic_vs_full_dedup, 0.865);
  assert.deepEqual(sum.crab!.shell, { traces: 1, traffic_vs_full: 0.05, traffic_vs_full_turns: 0.02, traffic_store_vs_full: 0.05, traffic_vs_full_whole: 0.05, traffic_vs_full_whole_turns: null, traffic_vs_full_dedup: 0.15, traffic_vs_full_dedup_turns: 50 / 900, skip_fraction: 0.9 });
  assert.equal(sum.full!.shell?.traffic_vs_full, 1);
  assert.equal(sum.full!.shell?.skip_fraction, null);
  assert.equal(sum.none!.shell, null);
  assert.deepEqual(summarize(runs, ['crab']).crab!.shell, null, 'no classes: no shell figures');
});

test('upperEntries: a pid file compares by the process it names, other small numbers by content', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'crab-upper-'));
  try {
    fs.writeFileSync(path.join(dir, 'worker.pid'), '42\n');
    fs.writeFileSync(path.join(dir, 'count'), '7');
    const a = await upperEntries(dir, [], new Map([['42', 'python3 worker.py']]));
    fs.writeFileSync(path.join(dir, 'worker.pid'), '1234\n');
    const b = await upperEntries(dir, [], new Map([['1234', 'python3 worker.py']]));
    assert.equal(a['worker.pid'], b['worker.pid']);
    assert.match(a['worker.pid']!, /pid-of python3 worker\.py/);
    assert.equal(a['count'], b['count']);
    const c = await upperEntries(dir, [], new Map([['1234', 'python3 other.py']]));
    assert.notEqual(a['worker.pid'], c['worker.pid'], 'a pid naming another process differs');
    fs.writeFileSync(path.join(dir, 'count'), '1234');
    assert.doesNotMatch((await upperEntries(dir, [], new Map([['1234', 'python3 worker.py']])))['count']!, /pid-of/, 'a number in a file not named *.pid is data');
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('judge: when the no-fault reference failed, no run of that trace counts as correct', () => {
  const s = state({ a: 'f 1' });
  const runs = [
    run({ final: s, reason: "turn 3: stdout of 'x' lacks \"y\"" }),
    run({ fault: 'none-repeat', final: s, correct: true }),
    run({ mode: 'crab', fault: 'after-actions:2', final: s, correct: true }),
  ];
  judge(runs);
  assert.deepEqual(runs.map((r) => r.correct), [false, false, false]);
  assert.match(runs[2]!.reason!, /no reference/);
});
