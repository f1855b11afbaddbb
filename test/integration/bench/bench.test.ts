import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { rootOnly, testPrefix } from '../../support/root.js';
import { manager, paths, removeByPrefix } from '../../support/sandboxes.js';
import { rootLogger } from '../../../src/core/log.js';
import { CrabHost } from '../../../src/daemon/host.js';
import { startReplayUpstream } from '../../../src/bench/replay-upstream.js';
import { parseTrace, type Trace } from '../../../src/bench/trace.js';
import { runBench } from '../../../src/bench/bench.js';

/** A small shell trace: a file, a read that must see it, shell state, a read of the state. */
function trace(name: string): Trace {
  const llm = { latency_ms: 400, prompt_tokens: 1000, completion_tokens: 50 };
  const lines = [
    { format: 'crab-trace/1', name, source: 'integration test', image: { base: 'debian-bookworm-minbase', packages: [] }, shell: 'persistent', setup: ['mkdir -p /work'], verify: [{ cmd: 'cat /work/a', expect_stdout: 'hello' }] },
    { turn: 1, llm, actions: [{ cmd: 'cd /work && echo hello > a' }] },
    { turn: 2, llm, actions: [{ cmd: 'cat a', expect_stdout: 'hello' }] },
    { turn: 3, llm, actions: [{ cmd: 'export GREETING=hi' }] },
    { turn: 4, llm, actions: [{ cmd: 'echo $GREETING from $PWD', expect_stdout: 'hi from /work' }] },
  ];
  return parseTrace(lines.map((l) => JSON.stringify(l)).join('\n') + '\n', `${name}.trace.jsonl`);
}

describe('crab bench (real sandboxes, proxy, engine, runc + CRIU)', rootOnly(), () => {
  const name = testPrefix('bench');
  const m = manager();
  let host: CrabHost;
  let upstream: Awaited<ReturnType<typeof startReplayUpstream>>;
  const benchSandboxes = async () => (await m.list()).filter((s) => s.id.startsWith(`bench-${name}`)).map((s) => s.id);
  before(async () => {
    upstream = await startReplayUpstream();
    host = await CrabHost.start({ paths, log: rootLogger, prioritySandboxes: true, proxy: { upstreamUrl: upstream.url, link: false } });
  });
  after(async () => {
    await host.close();
    await upstream.close();
    await removeByPrefix(m, `bench-${name}`);
  });

  test('a fault at a turn: crab and full recover correctly, full is charged whole, the trace is a shell trace, no sandbox is left', async () => {
    const rep = await runBench(host, [trace(name)], { modes: ['none', 'chat-only', 'full', 'crab'], faults: { kind: 'turn', turn: 3, when: 'after-actions' }, latencyScale: 0.05, overheadScale: 0.05, concurrency: 2 });
    assert.equal(rep.stopped, undefined);
    const crab = rep.runs.filter((r) => r.mode === 'crab');
    assert.deepEqual(Object.fromEntries(crab.map((r) => [r.fault, [r.correct, r.reason]])), { none: [true, null], 'after-actions:3': [true, null] });
    const full = rep.runs.find((r) => r.mode === 'full' && r.fault === 'none')!;
    assert.equal(full.ckpts.full, 5, 'a full checkpoint at each of the 5 boundaries');
    // Written whole, every full checkpoint pays for the shell's image again: far more than deduplicated.
    assert.equal(full.ckpt_bytes, full.ckpt_whole_bytes);
    assert.ok(full.ckpt_bytes > 2 * full.ckpt_dedup_bytes, `${full.ckpt_bytes} whole vs ${full.ckpt_dedup_bytes} deduplicated`);
    assert.ok(full.ckpt_bytes_turns < full.ckpt_bytes);
    const crabClean = crab.find((r) => r.fault === 'none')!;
    assert.equal(crabClean.ckpt_bytes, crabClean.ckpt_dedup_bytes, 'crab writes into its deduplicating store');
    const s = rep.summary.crab!;
    assert.ok(s.traffic_vs_full! < s.traffic_vs_full_dedup! && s.traffic_vs_full_dedup! < 1, JSON.stringify(s));
    assert.equal(rep.summary.full!.ckpt_bytes, full.ckpt_bytes);
    assert.equal(rep.summary.full!.ckpt_dedup_bytes, full.ckpt_dedup_bytes);
    assert.deepEqual(rep.trace_classes[name], { class: 'shell', why: null });
    assert.equal(rep.summary.crab!.shell?.traces, 1);
    assert.equal(rep.summary.crab!.correctness, 1);
    assert.ok(rep.event_loop_lag_ms.max >= rep.event_loop_lag_ms.p99 && rep.event_loop_lag_ms.p99 >= rep.event_loop_lag_ms.p50, JSON.stringify(rep.event_loop_lag_ms));
    assert.deepEqual(await benchSandboxes(), []);
  });

  test('stopped after the first run: no other run starts, the report says so, no sandbox is left', async () => {
    const stop = new AbortController();
    const rep = await runBench(host, [trace(name)], {
      modes: ['none', 'crab'],
      faults: { kind: 'every-turn' },
      latencyScale: 0.05,
      overheadScale: 0.05,
      concurrency: 1,
      overheadTraces: 1,
      signal: stop.signal,
      onProgress: (done) => void (done === 1 && stop.abort()),
    });
    assert.ok(rep.stopped, 'the report says it was stopped');
    assert.equal(rep.stopped.runs_planned, 3 + 4); // none, crab, the repeat; crab at each of 4 turns
    // what was under way finished (the two reference runs side by side, the first fault run); the
    // reference's repeat never started, so the trace cannot be judged and its runs are left out
    assert.ok(rep.stopped.runs_done >= 1 && rep.stopped.runs_done <= 3, `${rep.stopped.runs_done} runs ran`);
    assert.equal(rep.stopped.runs_judged, 0);
    assert.equal(rep.runs.length, 0);
    assert.deepEqual(await benchSandboxes(), []);
  });
});
