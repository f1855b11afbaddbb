import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { rootOnly, testPrefix } from '../../support/root.js';
import { paths } from '../../support/sandboxes.js';
import { startReplayUpstream } from '../../../src/bench/replay-upstream.js';
import { parseTrace, type Trace } from '../../../src/bench/trace.js';
import { runBench, type BenchOptions } from '../../../src/bench/bench.js';
import { HOST_CGROUP_PARENT } from '../../../src/bench/daemon-host.js';

/** A small shell trace: a file written by a slow action, a read that must see it, shell state, a read of the state. */
function trace(name: string): Trace {
  const llm = { latency_ms: 400, prompt_tokens: 1000, completion_tokens: 50 };
  const lines = [
    { format: 'crab-trace/1', name, source: 'integration test', image: { base: 'debian-bookworm-minbase', packages: [] }, shell: 'persistent', setup: ['mkdir -p /work'], verify: [{ cmd: 'cat /work/a', expect_stdout: 'hello', timeout_s: 30 }] },
    { turn: 1, llm, actions: [{ cmd: 'cd /work && sleep 0.5 && echo hello > a' }] },
    { turn: 2, llm, actions: [{ cmd: 'cat a', expect_stdout: 'hello' }] },
    { turn: 3, llm, actions: [{ cmd: 'export GREETING=hi' }] },
    { turn: 4, llm, actions: [{ cmd: 'echo $GREETING from $PWD', expect_stdout: 'hi from /work' }] },
  ];
  return parseTrace(lines.map((l) => JSON.stringify(l)).join('\n') + '\n', `${name}.trace.jsonl`);
}

/** This process's bench hosts: their homes under CRAB_HOME/bench/ and their cgroups. Empty when all are gone. */
function hostLeftovers(): string[] {
  const mine = (n: string) => n.endsWith(`-${process.pid}`) || n.includes(`-${process.pid}-`);
  const homes = fs.existsSync(path.join(paths.home, 'bench')) ? fs.readdirSync(path.join(paths.home, 'bench')).filter(mine) : [];
  const cgroups = ['freezer', 'pids'].flatMap((h) => {
    const dir = path.join('/sys/fs/cgroup', h, HOST_CGROUP_PARENT);
    return fs.existsSync(dir) ? fs.readdirSync(dir).filter(mine).map((n) => `${h}/${n}`) : [];
  });
  return [...homes.map((h) => `home ${h}`), ...cgroups.map((c) => `cgroup ${c}`)];
}

describe('crab bench (bench hosts: real daemons, proxy, engine, runc + CRIU; host crashes)', rootOnly(), () => {
  const name = testPrefix('bench');
  let upstream: Awaited<ReturnType<typeof startReplayUpstream>>;
  let base: Pick<BenchOptions, 'upstreamUrl' | 'home' | 'memoryBytes'>;
  before(async () => {
    upstream = await startReplayUpstream();
    base = { upstreamUrl: upstream.url, home: paths.home, memoryBytes: 256 * 2 ** 20 };
  });
  after(async () => {
    await upstream.close();
  });

  test('a host crash at every turn: crab and full recover from the store alone through a fresh daemon; the paper charge; nothing is left', async () => {
    const rep = await runBench([trace(name)], { ...base, modes: ['none', 'chat-only', 'full', 'crab'], faults: { kind: 'every-turn' }, latencyScale: 0.05, overheadScale: 0.05, concurrency: 3 });
    assert.equal(rep.stopped, undefined);
    assert.equal(rep.options.fault_kind, 'host-crash');
    const crab = rep.runs.filter((r) => r.mode === 'crab');
    assert.deepEqual(
      Object.fromEntries(crab.map((r) => [r.fault, [r.correct, r.reason]])),
      Object.fromEntries(['none', 'host-crash@after-actions:1', 'host-crash@mid-wait:2', 'host-crash@after-actions:3', 'host-crash@mid-wait:4'].map((f) => [f, [true, null]])),
    );
    for (const mode of ['crab', 'full'] as const) {
      const faulted = rep.runs.filter((r) => r.mode === mode && r.fault !== 'none');
      assert.ok(faulted.every((r) => r.correct && r.crashes.total === 1 && r.ckpts_lost === 0 && r.restore_ms !== null), JSON.stringify(faulted.map((r) => [r.fault, r.reason, r.crashes, r.ckpts_lost])));
      assert.equal(rep.summary[mode]!.crashes.total, 4);
    }
    // chat-only starts over from the image: the file and the shell state are gone
    assert.ok(rep.runs.filter((r) => r.mode === 'chat-only' && r.fault !== 'none').some((r) => !r.correct));
    assert.equal(rep.hosts.restarts, 12, 'every fault run crashed its host once and a fresh daemon came up');
    const full = rep.runs.find((r) => r.mode === 'full' && r.fault === 'none')!;
    assert.equal(full.ckpts.full, 5, 'a full checkpoint at each of the 5 boundaries');
    // the paper's charge: every full checkpoint pays its CRIU images whole again, uncompressed
    const crabClean = crab.find((r) => r.fault === 'none')!;
    assert.ok(full.ckpt_bytes > 4 * crabClean.ckpt_bytes, `${full.ckpt_bytes} full vs ${crabClean.ckpt_bytes} crab`);
    assert.ok(full.ckpt_bytes > full.ckpt_whole_bytes, 'uncompressed images weigh more than compressed ones');
    assert.ok(full.ckpt_whole_bytes > 2 * full.ckpt_dedup_bytes, `${full.ckpt_whole_bytes} whole vs ${full.ckpt_dedup_bytes} deduplicated`);
    const s = rep.summary.crab!;
    assert.ok(s.traffic_vs_full! < 0.5 && s.traffic_vs_full_dedup! < 1 && s.traffic_store_vs_full! < s.traffic_vs_full!, JSON.stringify(s));
    assert.deepEqual(rep.trace_classes[name], { class: 'shell', why: null });
    assert.equal(s.correctness, 1);
    assert.equal(crabClean.memory.limit_bytes, 256 * 2 ** 20);
    assert.deepEqual(hostLeftovers(), []);
  });

  test('mid-action: the host crashes while turn 1 sleeps; the action runs again after the recovery', async () => {
    const rep = await runBench([trace(name)], { ...base, modes: ['none', 'crab'], faults: { kind: 'turn', turn: 1, fault: 'mid-action' }, latencyScale: 0.05, overheadScale: 0.05, concurrency: 1 });
    const r = rep.runs.find((x) => x.mode === 'crab' && x.fault === 'mid-action@mid-action:1')!;
    assert.deepEqual([r.correct, r.reason], [true, null]);
    assert.deepEqual(r.crashes, { total: 1, busy: 0, mid_action: 1 });
    assert.equal(r.turns_rerun, 1, 'turn 1 ran again');
    assert.deepEqual(hostLeftovers(), []);
  });

  test('stopped after the first run: no other run starts, the report says so, nothing is left', async () => {
    const stop = new AbortController();
    const rep = await runBench([trace(name)], {
      ...base,
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
    assert.deepEqual(hostLeftovers(), []);
  });
});
