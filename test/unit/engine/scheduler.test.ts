import test from 'node:test';
import assert from 'node:assert/strict';
import { pino } from 'pino';
import { createScheduler, type JobResult } from '../../../src/engine/scheduler.js';
import { fifoPolicy, reactivePolicy, type Candidate } from '../../../src/engine/policy.js';
import { seededRandom } from '../../../src/core/rng.js';

const quiet = pino({ level: 'silent' });
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));


for (const policy of ['fifo', 'reactive'] as const) {
  test(`${policy}: per-sandbox turn order and the concurrency limit hold with 32 sandboxes and random durations`, async () => {
    const rand = seededRandom(policy === 'fifo' ? 1 : 2);
    const limit = 4;
    const sched = createScheduler<string>(
      { maxConcurrentJobs: limit, policy, agingBoundMs: 30 },
      { logger: quiet },
    );
    let running = 0;
    let maxRunning = 0;
    const events: Array<{ sb: string; turn: number; start: number; end: number }> = [];
    const perSandboxRunning = new Map<string, number>();
    const all: Promise<JobResult<string>>[] = [];
    for (let turn = 0; turn < 6; turn++) {
      for (let s = 0; s < 32; s++) {
        const sb = `sb${s}`;
        const dur = Math.floor(rand() * 8);
        all.push(
          sched.submit({
            sandboxId: sb,
            turnIndex: turn,
            run: async () => {
              const start = performance.now();
              running++;
              maxRunning = Math.max(maxRunning, running);
              perSandboxRunning.set(sb, (perSandboxRunning.get(sb) ?? 0) + 1);
              assert.equal(perSandboxRunning.get(sb), 1, `two jobs of ${sb} ran at once`);
              await sleep(dur);
              perSandboxRunning.set(sb, perSandboxRunning.get(sb)! - 1);
              running--;
              events.push({ sb, turn, start, end: performance.now() });
              return `${sb}:${turn}`;
            },
          }),
        );
        if (rand() < 0.3) sched.markUrgent(sb, turn);
      }
      await sleep(Math.floor(rand() * 5));
    }
    const results = await Promise.all(all);
    await sched.drain();
    assert.ok(maxRunning <= limit, `ran ${maxRunning} at once, limit ${limit}`);
    assert.equal(maxRunning, limit, 'the limit is used');
    assert.ok(results.every((r) => r.outcome === 'committed' && r.value === `${r.sandboxId}:${r.turnIndex}`));
    for (let s = 0; s < 32; s++) {
      const mine = events.filter((e) => e.sb === `sb${s}`);
      assert.deepEqual(
        mine.map((e) => e.turn),
        [0, 1, 2, 3, 4, 5],
        `sb${s} committed out of order`,
      );
      for (let i = 1; i < mine.length; i++)
        assert.ok(mine[i]!.start >= mine[i - 1]!.end, `sb${s} overlapped`);
    }
    assert.deepEqual(sched.stats().queued, 0);
    assert.deepEqual(sched.stats().running, 0);
  });
}

/** Starts a blocker so later submissions queue up, and returns its release function. */
function block(sched: ReturnType<typeof createScheduler<string>>) {
  let release!: () => void;
  const done = sched.submit({
    sandboxId: 'blocker',
    turnIndex: 0,
    run: () => new Promise<string>((r) => (release = () => r('blocker'))),
  });
  return { release: () => release(), done };
}

test('reactive serves the sandbox whose response arrived first; fifo does not', async () => {
  for (const policy of ['reactive', 'fifo'] as const) {
    const sched = createScheduler<string>({ maxConcurrentJobs: 1, policy }, { logger: quiet });
    const order: string[] = [];
    const b = block(sched);
    const jobs = ['a', 'b', 'c', 'd'].map((sb) =>
      sched.submit({ sandboxId: sb, turnIndex: 0, run: async () => (order.push(sb), sb) }),
    );
    sched.markUrgent('c', 0);
    sched.markUrgent('d', 0);
    assert.equal(sched.stats().urgentQueued, 2);
    b.release();
    await Promise.all(jobs);
    assert.deepEqual(order, policy === 'reactive' ? ['c', 'd', 'a', 'b'] : ['a', 'b', 'c', 'd']);
    const results = await Promise.all(jobs);
    if (policy === 'reactive') assert.equal(results[2]!.urgentAtStart, true);
  }
});

test('urgency for a later turn (or marked before submit) covers the sandbox chain up to it', async () => {
  const sched = createScheduler<string>({ maxConcurrentJobs: 1, policy: 'reactive' }, { logger: quiet });
  const order: string[] = [];
  const b = block(sched);
  const run = (tag: string) => async () => (order.push(tag), tag);
  sched.markUrgent('late', 1); // response for turn 1 arrived before the job was even submitted
  const p = [
    sched.submit({ sandboxId: 'x', turnIndex: 0, run: run('x0') }),
    sched.submit({ sandboxId: 'y', turnIndex: 0, run: run('y0') }),
    sched.submit({ sandboxId: 'y', turnIndex: 1, run: run('y1') }),
    sched.submit({ sandboxId: 'late', turnIndex: 1, run: run('late1') }),
  ];
  sched.markUrgent('y', 1);
  b.release();
  await Promise.all(p);
  // late1 was marked first; y0 inherits y1's urgency; x0 last.
  assert.deepEqual(order, ['late1', 'y0', 'y1', 'x0']);
});

test('reactive aging: a non-urgent job waits at most the aging bound plus one job, despite a stream of urgent ones', async () => {
  const agingBoundMs = 60;
  const jobMs = 5;
  const sched = createScheduler<string>(
    { maxConcurrentJobs: 1, policy: 'reactive', agingBoundMs },
    { logger: quiet },
  );
  let stop = false;
  let n = 0;
  // Keep ~3 urgent jobs queued at all times for ~400 ms.
  const feeder = (async () => {
    const started = performance.now();
    while (!stop && performance.now() - started < 400) {
      while (sched.stats().queued < 4) {
        const sb = `u${n++}`;
        void sched.submit({ sandboxId: sb, turnIndex: 0, run: () => sleep(jobMs).then(() => sb) });
        sched.markUrgent(sb, 0);
      }
      await sleep(1);
    }
  })();
  await sleep(20);
  const victim = await sched.submit({ sandboxId: 'patient', turnIndex: 0, run: async () => 'p' });
  stop = true;
  await feeder;
  await sched.drain();
  assert.equal(victim.urgentAtStart, false);
  assert.ok(
    victim.waitMs >= agingBoundMs - 1,
    `it should have been passed over until aged (waited ${victim.waitMs})`,
  );
  assert.ok(victim.waitMs <= agingBoundMs + jobMs + 50, `waited ${victim.waitMs} ms, bound ${agingBoundMs}`);
});

test('retry once, then escalate; the result says what happened; the sandbox chain waits for it', async () => {
  const escalations: Array<{ turnIndex: number; err: string }> = [];
  const sched = createScheduler<string>(
    { maxConcurrentJobs: 2 },
    {
      logger: quiet,
      escalate: async (job, err) => {
        escalations.push({ turnIndex: job.turnIndex, err: (err as Error).message });
        if (job.turnIndex === 3) throw new Error('full checkpoint failed too');
        return 'full';
      },
    },
  );
  const order: string[] = [];
  let flaky = 0;
  const results = await Promise.all([
    sched.submit({ sandboxId: 's', turnIndex: 0, run: async () => (order.push('0'), 'ok') }),
    sched.submit({
      sandboxId: 's',
      turnIndex: 1,
      run: async () => {
        order.push('1');
        if (flaky++ === 0) throw new Error('transient');
        return 'ok';
      },
    }),
    sched.submit({
      sandboxId: 's',
      turnIndex: 2,
      run: async () => {
        order.push('2');
        await sleep(5);
        throw new Error('broken delta');
      },
    }),
    sched.submit({
      sandboxId: 's',
      turnIndex: 3,
      run: () => {
        order.push('3');
        throw new Error('sync throw');
      },
    }),
    sched.submit({ sandboxId: 's', turnIndex: 4, run: async () => (order.push('4'), 'ok') }),
  ]);
  assert.deepEqual(
    results.map((r) => [r.outcome, r.attempts, r.value]),
    [
      ['committed', 1, 'ok'],
      ['retried', 2, 'ok'],
      ['escalated', 2, 'full'],
      ['failed', 2, undefined],
      ['committed', 1, 'ok'],
    ],
  );
  assert.deepEqual(results[2]!.errors, ['broken delta', 'broken delta']);
  assert.deepEqual(results[3]!.errors, ['sync throw', 'sync throw', 'full checkpoint failed too']);
  assert.deepEqual(escalations, [
    { turnIndex: 2, err: 'broken delta' },
    { turnIndex: 3, err: 'sync throw' },
  ]);
  assert.deepEqual(order, ['0', '1', '1', '2', '2', '3', '3', '4']);

  const none = createScheduler<string>({ maxConcurrentJobs: 1 }, { logger: quiet });
  const r = await none.submit({ sandboxId: 's', turnIndex: 0, run: () => Promise.reject(new Error('x')) });
  assert.equal(r.outcome, 'failed');
});

test('turns submitted out of order are refused', async () => {
  const sched = createScheduler<string>({ maxConcurrentJobs: 1 }, { logger: quiet });
  await sched.submit({ sandboxId: 's', turnIndex: 5, run: async () => 'x' });
  await assert.rejects(sched.submit({ sandboxId: 's', turnIndex: 5, run: async () => 'x' }), {
    code: 'SCHED_TURN_OUT_OF_ORDER',
  });
  await assert.rejects(sched.submit({ sandboxId: 's', turnIndex: 2, run: async () => 'x' }), {
    code: 'SCHED_TURN_OUT_OF_ORDER',
  });
  // gaps are fine (turns without effects have no job)
  assert.equal(
    (await sched.submit({ sandboxId: 's', turnIndex: 9, run: async () => 'x' })).outcome,
    'committed',
  );
});

test('config: default concurrency from os.availableParallelism; invalid config refused', async () => {
  const os = await import('node:os');
  assert.equal(createScheduler({}, { logger: quiet }).maxConcurrentJobs, os.availableParallelism());
  assert.throws(() => createScheduler({ maxConcurrentJobs: 0 }), { code: 'CONFIG_INVALID' });
  assert.throws(() => createScheduler({ policy: 'lifo' as 'fifo' }), { code: 'CONFIG_INVALID' });
});

test('metrics render as Prometheus text: depth, running, wait/run histograms, gate waits', async () => {
  const sched = createScheduler<string>({ maxConcurrentJobs: 1 }, { logger: quiet });
  const b = block(sched);
  const p = sched.submit({ sandboxId: 'a', turnIndex: 0, run: async () => 'a' });
  let text = sched.renderMetrics();
  assert.match(text, /^# TYPE crab_engine_queue_depth gauge$/m);
  assert.match(text, /^crab_engine_queue_depth 1$/m);
  assert.match(text, /^crab_engine_jobs_running 1$/m);
  b.release();
  await p;
  sched.observeGateWait(30);
  sched.observeGateWait(0, 'failed');
  text = sched.renderMetrics();
  assert.match(text, /^crab_engine_queue_depth 0$/m);
  assert.match(text, /^# TYPE crab_engine_job_wait_seconds histogram$/m);
  assert.match(text, /^crab_engine_job_wait_seconds_count 2$/m);
  assert.match(text, /^crab_engine_job_run_seconds_bucket\{le="\+Inf"\} 2$/m);
  assert.match(text, /^crab_gate_wait_seconds_bucket\{le="0.025"\} 1$/m);
  assert.match(text, /^crab_gate_wait_seconds_bucket\{le="0.05"\} 2$/m);
  assert.match(text, /^crab_gate_wait_seconds_sum 0.03$/m);
  assert.match(text, /^crab_gate_releases_total\{outcome="failed"\} 1$/m);
  assert.match(text, /^crab_engine_jobs_completed_total\{outcome="committed"\} 2$/m);
  // every sample line is `name{labels} value`
  for (const line of text.trim().split('\n')) {
    if (!line.startsWith('#')) assert.match(line, /^[a-z_]+(\{[^}]*\})? [-+0-9.eInfNa]+$/);
  }
});

test('policies are pure functions of their input', () => {
  const c = (
    seq: number,
    enqueuedAt: number,
    urgentSince: number | null,
    costHintMs: number | null = null,
  ): Candidate => ({
    seq,
    sandboxId: `s${seq}`,
    turnIndex: 0,
    enqueuedAt,
    urgentSince,
    costHintMs,
  });
  const list = [c(3, 30, null), c(1, 10, null), c(2, 20, 50), c(4, 40, 45)];
  assert.equal(fifoPolicy(list, { now: 60, agingBoundMs: 100 }), 1);
  assert.equal(reactivePolicy(list, { now: 60, agingBoundMs: 100 }), 3, 'earliest urgent first');
  assert.equal(reactivePolicy(list, { now: 115, agingBoundMs: 100 }), 1, 'aged beats urgent');
  assert.equal(reactivePolicy([], { now: 0, agingBoundMs: 1 }), -1);
  const hinted = [c(1, 10, null, 300), c(2, 20, null, null), c(3, 30, null, 20)];
  assert.equal(reactivePolicy(hinted, { now: 40, agingBoundMs: 100 }), 2, 'cheapest non-urgent first');
  assert.equal(fifoPolicy(hinted, { now: 40, agingBoundMs: 100 }), 0, 'fifo ignores hints');
  assert.equal(
    reactivePolicy([c(1, 10, null), c(2, 20, null)], { now: 40, agingBoundMs: 100 }),
    0,
    'no hints: fifo',
  );
  assert.equal(fifoPolicy([], { now: 0, agingBoundMs: 1 }), -1);
});
