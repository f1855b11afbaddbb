/**
 * Synthetic gate-wait benchmark for the checkpoint engine: N sandboxes start together and run
 * agent loops (LLM call -> tool time -> next LLM call). Each LLM request is a turn boundary that
 * submits a checkpoint job to a real HostScheduler; the response is held until that job finishes
 * (the gate). The same seeded scenario runs under 'fifo' and 'reactive'; gate-wait percentiles
 * are printed side by side. Timers run 1/SCALE of real time; printed figures are scaled back up.
 *
 *   node dist/bench/engine-gate.js [--scale 20] [--turns 20] [--seeds 2] [--concurrency 2]
 *                                  [--hints 1] [--aging 10000] [--json out.json]
 */
import { writeFileSync } from 'node:fs';
import { pino } from 'pino';
import { createScheduler, type JobResult } from '../src/engine/scheduler.js';
import { seededRandom } from '../src/core/rng.js';

const args = new Map<string, string>();
for (let i = 2; i + 1 < process.argv.length; i += 2)
  args.set(process.argv[i]!.replace(/^--/, ''), process.argv[i + 1]!);
const num = (k: string, d: number) => (args.has(k) ? Number(args.get(k)) : d);

type Range = readonly [number, number];
interface Scenario {
  name: string;
  /** Turn mix after the first boundary: share and duration range (real-time ms). */
  mix: ReadonlyArray<{ kind: string; share: number; ms: Range }>;
  toolMs: Range;
}

const P = {
  scale: num('scale', 20),
  sandboxes: num('sandboxes', 32),
  turns: num('turns', 20),
  seeds: num('seeds', 2),
  concurrency: num('concurrency', 2),
  llmMs: [1000, 10_000] as Range,
  /** The first boundary of a session is a full checkpoint. */
  fullMs: [150, 400] as Range,
  agingBoundMs: num('aging', 10_000),
  /** Give jobs cost hints (true cost +-25 %, as an effect class + memory size estimate would). */
  hints: num('hints', 1) === 1,
};

const SCENARIOS: Scenario[] = [
  {
    // design.md: over 75 % of turns only read.
    name: 'design mix',
    mix: [
      { kind: 'skip', share: 0.75, ms: [0, 0] },
      { kind: 'fs', share: 0.15, ms: [20, 80] },
      { kind: 'process', share: 0.1, ms: [150, 400] },
    ],
    toolMs: [200, 2000],
  },
  {
    name: 'contended',
    mix: [
      { kind: 'skip', share: 0.4, ms: [0, 0] },
      { kind: 'fs', share: 0.3, ms: [20, 80] },
      { kind: 'process', share: 0.3, ms: [150, 400] },
    ],
    toolMs: [0, 0],
  },
];

interface Turn {
  llmMs: number;
  toolMs: number;
  jobMs: number;
  hintNoise: number;
}


function draw(sc: Scenario, seed: number): Turn[][] {
  const r = seededRandom(seed);
  const uni = ([lo, hi]: Range) => lo + (hi - lo) * r();
  return Array.from({ length: P.sandboxes }, () =>
    Array.from({ length: P.turns }, (_, i) => {
      let jobMs = uni(P.fullMs);
      if (i > 0) {
        let x = r();
        const m = sc.mix.find((k) => (x -= k.share) < 0) ?? sc.mix[sc.mix.length - 1]!;
        jobMs = uni(m.ms);
      }
      return { llmMs: uni(P.llmMs), toolMs: uni(sc.toolMs), jobMs, hintNoise: uni([0.75, 1.25]) };
    }),
  );
}

const sleep = (realMs: number) =>
  realMs <= 0 ? Promise.resolve() : new Promise<void>((res) => setTimeout(res, realMs / P.scale));

interface RunStats {
  gateWaitsMs: number[];
  maxRunning: number;
}

async function runOnce(policy: 'fifo' | 'reactive', turns: Turn[][]): Promise<RunStats> {
  const sched = createScheduler<void>(
    { maxConcurrentJobs: P.concurrency, policy, agingBoundMs: P.agingBoundMs / P.scale },
    { logger: pino({ level: 'silent' }) },
  );
  const gateWaitsMs: number[] = [];
  let running = 0;
  let maxRunning = 0;
  await Promise.all(
    turns.map(async (sbTurns, s) => {
      const sandboxId = `sb${s}`;
      for (let i = 0; i < sbTurns.length; i++) {
        const turn = sbTurns[i]!;
        // Boundary: the request goes upstream and its checkpoint job is submitted at once.
        const job: Promise<JobResult<void>> = sched.submit({
          sandboxId,
          turnIndex: i,
          costHintMs: P.hints ? (turn.jobMs * turn.hintNoise) / P.scale : undefined,
          run: async () => {
            running++;
            maxRunning = Math.max(maxRunning, running);
            await sleep(turn.jobMs);
            running--;
          },
        });
        await sleep(turn.llmMs);
        const arrivedAt = performance.now();
        sched.markUrgent(sandboxId, i);
        const r = await job;
        gateWaitsMs.push(Math.max(0, r.finishedAt - arrivedAt) * P.scale);
        await sleep(turn.toolMs);
      }
    }),
  );
  return { gateWaitsMs, maxRunning };
}

function pct(xs: readonly number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))] ?? NaN;
}

function summarize(g: readonly number[]) {
  return {
    p50: pct(g, 50),
    p90: pct(g, 90),
    p99: pct(g, 99),
    p999: pct(g, 99.9),
    max: Math.max(...g),
    mean: g.reduce((a, b) => a + b, 0) / g.length,
    heldPct: (100 * g.filter((x) => x >= 1).length) / g.length,
  };
}

async function main() {
  console.log(
    `engine-gate: ${P.sandboxes} sandboxes x ${P.turns} turns started together, concurrency ${P.concurrency}, ` +
      `time scale 1/${P.scale} (figures are real-time ms), seeds 1..${P.seeds}, cost hints ${P.hints ? 'on' : 'off'}`,
  );
  console.log(
    `LLM latency U(${P.llmMs.join('..')}) ms; first boundary full U(${P.fullMs.join('..')}) ms; aging bound ${P.agingBoundMs} ms`,
  );
  const out: Record<string, Record<string, ReturnType<typeof summarize> & { maxRunning: number }>> = {};
  let ok = true;
  for (const sc of SCENARIOS) {
    console.log(
      `\n[${sc.name}] ${sc.mix.map((m) => `${m.kind} ${Math.round(m.share * 100)}% U(${m.ms.join('..')})`).join(', ')}; ` +
        `tool time U(${sc.toolMs.join('..')}) ms`,
    );
    const waits: Record<string, number[]> = { fifo: [], reactive: [] };
    const maxRunning: Record<string, number> = { fifo: 0, reactive: 0 };
    for (let seed = 1; seed <= P.seeds; seed++) {
      const turns = draw(sc, seed);
      for (const policy of ['fifo', 'reactive'] as const) {
        const st = await runOnce(policy, turns);
        waits[policy]!.push(...st.gateWaitsMs);
        maxRunning[policy] = Math.max(maxRunning[policy]!, st.maxRunning);
      }
    }
    console.log(
      `  gate wait  ${['p50', 'p90', 'p99', 'p99.9', 'max', 'mean', 'held %'].map((h) => h.padStart(9)).join('')}`,
    );
    out[sc.name] = {};
    for (const policy of ['fifo', 'reactive'] as const) {
      const s = summarize(waits[policy]!);
      out[sc.name]![policy] = { ...s, maxRunning: maxRunning[policy]! };
      console.log(
        `  ${policy.padEnd(9)}${[s.p50, s.p90, s.p99, s.p999, s.max, s.mean, s.heldPct].map((x) => x.toFixed(1).padStart(9)).join('')}`,
      );
    }
    const f = out[sc.name]!.fifo!;
    const r = out[sc.name]!.reactive!;
    // p99 is 0 for both when under 1 % of turns are held at all; then the tail beyond it decides.
    const better = f.p99 > 0 ? r.p99 < f.p99 : r.p99 === 0 && r.p999 <= f.p999;
    ok &&= better;
    console.log(
      `  reactive p99 ${r.p99.toFixed(1)} vs fifo ${f.p99.toFixed(1)} ms` +
        (f.p99 > 0
          ? ''
          : ` (both 0: fewer than 1 % of turns held; p99.9 ${r.p999.toFixed(0)} vs ${f.p999.toFixed(0)})`) +
        ` -> ${better ? 'reactive better' : 'REACTIVE NOT BETTER'}; max running ${Math.max(f.maxRunning, r.maxRunning)}`,
    );
  }
  if (args.has('json'))
    writeFileSync(args.get('json')!, JSON.stringify({ params: P, results: out }, null, 2));
  if (!ok) process.exitCode = 1;
}

await main();
