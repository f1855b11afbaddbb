/**
 * @module `crab bench`: replays traces in every mode on one host, side by side, with faults.
 *
 * Phase 1 (reference, overhead, traffic): every trace once per mode with no fault, at the
 * overhead latency scale (1 by default: only scale-1 overhead figures are valid). All modes of a
 * trace start together and run side by side (same load); `overheadTraces` traces at a time.
 * After them, a second no-fault run of the trace at `latencyScale` (the noise reference).
 * Phase 2 (correctness sweep): every trace × mode (but none) × fault point at `latencyScale`,
 * `concurrency` runs at a time. Each run is an independent replay from a fresh sandbox.
 * The two phases run at the same time: phase 1 mostly waits on the (replayed) LLM while phase 2
 * is CPU-bound, and phase 1's checkpoint jobs go first in the host's scheduler so the sweep does
 * not queue them. Phase 2 starts its longest runs first, so no long run is left for the end.
 * The `none` run of a trace is the reference final state the others must equal.
 */
import os from 'node:os';
import { monitorEventLoopDelay, type IntervalHistogram } from 'node:perf_hooks';
import type { CrabHost } from '../daemon/host.js';
import { ensureImage } from '../image/image-builder.js';
import type { Trace } from './trace.js';
import { percentile, runReplay, type BenchMode, type Fault, type RunResult, type RunSpec } from './replay.js';
import { noiseBetween, stateDifference } from './final-state.js';
import { pool } from '../core/pool.js';
import { bytesByCause, type CauseTotal, type CheckpointCause } from './causes.js';
import { classifyTrace, type TraceClassing } from './trace-class.js';
import { SESSION_SHELL } from '../sandbox/channel.js';

export type FaultPlan = { kind: 'none' } | { kind: 'every-turn' } | { kind: 'random'; count: number } | { kind: 'turn'; turn: number; when?: Fault['when'] };

export interface BenchOptions {
  modes: BenchMode[];
  faults: FaultPlan;
  /** Latency scale of the fault sweep (compressed waits for long correctness sweeps). */
  latencyScale: number;
  /** Latency scale of the no-fault runs that give overhead and traffic (1 = valid overhead). */
  overheadScale: number;
  concurrency: number;
  /** Traces whose no-fault runs (phase 1) go on at once, alongside the fault sweep (default 2). */
  overheadTraces?: number;
  onProgress?: (done: number, total: number, last: RunResult | null) => void;
  /** Once aborted, no run starts; the runs under way finish and the report covers what ran. */
  signal?: AbortSignal;
}

export interface ModeSummary {
  correctness: number;
  runs: number;
  overhead_vs_none: number | null;
  /**
   * Bytes written against full mode's (`RunResult.ckpt_bytes`): full checkpoints written whole every turn,
   * as a conventional full-per-turn C/R does. Each run is charged as if it had its store to itself
   * (`own-traffic.ts`).
   */
  traffic_vs_full: number | null;
  /** The same over the agent's turns (boundaries 1..N): the setup's base checkpoint, alike in every mode, left out. */
  traffic_vs_full_turns: number | null;
  /**
   * Bytes written against full checkpoints taken every turn into the same deduplicating store:
   * what the policy (which checkpoints to take) saves on its own, the store's savings given to both.
   */
  traffic_vs_full_dedup: number | null;
  /** The same over the agent's turns. */
  traffic_vs_full_dedup_turns: number | null;
  /** What the mode's checkpoints hold before dedup and compression against what full's hold (C/R volume, like for like). */
  traffic_vs_full_logical: number | null;
  gate_wait_p99_ms: number;
  /** Agent turns that took no checkpoint (boundaries 1..N of the no-fault runs). */
  skip_fraction: number | null;
  /** The same over every boundary, the setup's (boundary 0, a base checkpoint in every mode) included. */
  skip_fraction_boundaries: number | null;
  /** What the no-fault runs' checkpoints write (`RunResult.ckpt_bytes`: full's whole, crab's each run into a store of its own), in all. */
  ckpt_bytes: number;
  /** What they write into a deduplicating store, each run into its own (`own-traffic.ts`), in all. */
  ckpt_dedup_bytes: number;
  /** Median restore time of the fault runs that restored (null when none did). */
  restore_ms_p50: number | null;
  /** The no-fault runs' new bytes by why each checkpoint was taken (`causes.ts`); crab only. */
  bytes_by_cause: Partial<Record<CheckpointCause, CauseTotal>> | null;
  /** The same figures on the shell traces alone (`trace-class.ts`): the workload the paper's claims are about. */
  shell: ShellFigures | null;
}

export interface ShellFigures {
  traces: number;
  traffic_vs_full: number | null;
  traffic_vs_full_turns: number | null;
  traffic_vs_full_dedup: number | null;
  traffic_vs_full_dedup_turns: number | null;
  skip_fraction: number | null;
}

export interface BenchReport {
  machine: { cpus: number; memGiB: number; kernel: string; node: string };
  options: { modes: BenchMode[]; faults: string; latency_scale: number; overhead_scale: number; concurrency: number };
  runs: RunResult[];
  summary: Record<string, ModeSummary>;
  /** Set when the bench was stopped: the runs that did not start, and those of traces whose reference runs did not both finish, are left out. */
  stopped?: { runs_planned: number; runs_done: number; runs_judged: number };
  /** Each trace's class, from the end state of its no-fault reference run (absent when that run failed). */
  trace_classes: Record<string, TraceClassing>;
  /**
   * How late this process's event loop ran its timers during the bench: the proxy, the gates and
   * the checkpoint work of every sandbox share that loop, so a long synchronous step (hashing,
   * compression, a big JSON) delays every other sandbox's LLM responses by as much.
   */
  event_loop_lag_ms: { p50: number; p99: number; max: number };
  started_at: string;
  duration_ms: number;
}

/** The fault points of one trace under a plan. every-turn alternates kinds so both are covered. */
export function faultPoints(plan: FaultPlan, turns: number, rand: () => number = Math.random): Fault[] {
  switch (plan.kind) {
    case 'none':
      return [];
    case 'every-turn':
      return Array.from({ length: turns }, (_, i) => ({ turn: i + 1, when: i % 2 === 0 ? 'after-actions' : 'mid-wait' }) as Fault);
    case 'random': {
      const out: Fault[] = [];
      for (let i = 0; i < plan.count; i++) out.push({ turn: 1 + Math.floor(rand() * turns), when: rand() < 0.5 ? 'after-actions' : 'mid-wait' });
      return out;
    }
    case 'turn':
      return plan.turn <= turns ? [{ turn: plan.turn, when: plan.when ?? 'after-actions' }] : [];
  }
}

export function parseFaultPlan(text: string): FaultPlan | null {
  if (text === 'none') return { kind: 'none' };
  if (text === 'every-turn') return { kind: 'every-turn' };
  let m = /^random:(\d+)$/.exec(text);
  if (m) return { kind: 'random', count: Number(m[1]) };
  m = /^turn:(\d+)(?::(after-actions|mid-wait))?$/.exec(text);
  if (m) return { kind: 'turn', turn: Number(m[1]), when: m[2] as Fault['when'] | undefined };
  return null;
}

/**
 * Fault runs, the dearest first: checkpointing modes before chat-only (which takes none), then
 * traces with more turns (more boundaries, longer replays) first. Only the order changes.
 */
export function longestFirst(specs: readonly RunSpec[]): RunSpec[] {
  const weight = (s: RunSpec) => (s.mode === 'chat-only' || s.mode === 'none' ? 0 : 1000) + s.trace.turns.length;
  return specs.map((s, i) => ({ s, i, w: weight(s) })).sort((a, b) => b.w - a.w || a.i - b.i).map((x) => x.s);
}

export async function runBench(host: CrabHost, traces: Trace[], opts: BenchOptions, progress: (m: string) => void = () => undefined): Promise<BenchReport> {
  const startedAt = new Date();
  const t0 = performance.now();
  const loop = monitorEventLoopDelay({ resolution: LAG_RESOLUTION_MS });
  loop.enable();
  // Images first (cached per package set), so no run pays for a build.
  for (const pk of new Set(traces.map((t) => JSON.stringify([...t.header.image.packages].sort())))) {
    const pkgs = JSON.parse(pk) as string[];
    progress(`image: ${pkgs.join(',') || '(base)'}`);
    await ensureImage(host.service.paths.images, traces[0]!.header.image.base, pkgs, progress);
  }
  const modes = opts.modes.includes('none') ? opts.modes : (['none', ...opts.modes] as BenchMode[]);
  // Phase 1: one group per trace, its modes side by side; then a second no-fault run of the trace
  // (what differs between two clean runs is noise). Never at the same time as the first: run-time
  // dependent content (git commit dates…) must have the chance to differ.
  const phase1 = traces.map((trace) => ({
    side: modes.map((mode): RunSpec => ({ trace, mode, fault: null, latencyScale: opts.overheadScale, priority: true })),
    repeat: { trace, mode: 'none', fault: null, latencyScale: opts.latencyScale, repeat: true } as RunSpec,
  }));
  // Phase 2: the faults.
  const faultRuns = traces.flatMap((trace) =>
    faultPoints(opts.faults, trace.turns.length).flatMap((fault) => modes.filter((m) => m !== 'none').map((mode): RunSpec => ({ trace, mode, fault, latencyScale: opts.latencyScale }))),
  );
  const phase2 = longestFirst(faultRuns);
  const total = traces.length * (modes.length + 1) + phase2.length;
  let done = 0;
  opts.onProgress?.(0, total, null);
  const runs: RunResult[] = [];
  const runOne = async (spec: RunSpec) => {
    if (opts.signal?.aborted) return;
    const r = await runReplay(host, spec, null);
    runs.push(r);
    opts.onProgress?.(++done, total, r);
  };
  const groupsAtOnce = faultRuns.length ? Math.max(1, opts.overheadTraces ?? 2) : Math.max(1, Math.floor(opts.concurrency / modes.length));
  await Promise.all([
    pool(phase1, groupsAtOnce, async (group) => {
      await Promise.all(group.side.map(runOne));
      await runOne(group.repeat);
    }),
    pool(phase2, opts.concurrency, runOne),
  ]);
  if (opts.signal?.aborted) {
    // A trace whose two reference runs did not both finish cannot be judged: its runs are left out.
    const judged = new Set(runs.filter((r) => r.mode === 'none' && r.fault === 'none').map((r) => r.trace).filter((t) => runs.some((r) => r.trace === t && r.fault === 'none-repeat')));
    runs.splice(0, runs.length, ...runs.filter((r) => judged.has(r.trace)));
  }
  loop.disable();
  judge(runs);
  const classes = traceClasses(runs);
  for (const r of runs) delete r.final;
  return {
    machine: { cpus: os.cpus().length, memGiB: Math.round(os.totalmem() / 2 ** 30), kernel: os.release(), node: process.version },
    options: { modes, faults: JSON.stringify(opts.faults), latency_scale: opts.latencyScale, overhead_scale: opts.overheadScale, concurrency: opts.concurrency },
    runs,
    summary: summarize(runs, modes, classes),
    ...(opts.signal?.aborted ? { stopped: { runs_planned: total, runs_done: done, runs_judged: runs.length } } : {}),
    trace_classes: classes,
    event_loop_lag_ms: loopLag(loop),
    started_at: startedAt.toISOString(),
    duration_ms: performance.now() - t0,
  };
}

/** Sampling interval of the event-loop lag (a sample is the interval plus the lag: the interval is taken off). */
const LAG_RESOLUTION_MS = 10;

function loopLag(h: IntervalHistogram): BenchReport['event_loop_lag_ms'] {
  const lag = (ns: number) => Math.max(0, Math.round((ns / 1e6 - LAG_RESOLUTION_MS) * 10) / 10);
  return h.count ? { p50: lag(h.percentile(50)), p99: lag(h.percentile(99)), max: lag(h.max) } : { p50: 0, p99: 0, max: 0 };
}

/** Judges every run against its trace's no-fault run, with the noise two no-fault runs disagree on. */
export function judge(runs: RunResult[]): void {
  for (const ref of runs.filter((r) => r.mode === 'none' && r.fault === 'none')) {
    const repeat = runs.find((r) => r.trace === ref.trace && r.fault === 'none-repeat');
    const others = runs.filter((r) => r.trace === ref.trace && r !== ref);
    if (!ref.final || ref.reason !== null || !repeat?.final || repeat.reason !== null) {
      ref.correct = false;
      ref.reason ??= 'the no-fault reference run failed';
      for (const r of others) {
        if (r.reason === null) r.reason = 'no reference: the no-fault run of this trace failed';
        r.correct = false; // unjudged is not correct
      }
      continue;
    }
    const noise = noiseBetween(ref.final, repeat.final);
    ref.correct = true;
    // The repeat is judged by the files alone: what it disagrees on otherwise is, by definition, noise.
    repeat.reason = stateDifference(ref.final, repeat.final, noise);
    repeat.correct = repeat.reason === null;
    for (const r of others) {
      if (r.reason !== null || !r.final) continue;
      r.reason = stateDifference(ref.final, r.final, noise);
      r.correct = r.reason === null;
    }
  }
}

/** Classes every trace whose no-fault reference run ended with a state to class it by. */
export function traceClasses(runs: readonly RunResult[]): Record<string, TraceClassing> {
  const out: Record<string, TraceClassing> = {};
  for (const r of runs) if (r.mode === 'none' && r.fault === 'none' && r.final && r.reason === null) out[r.trace] = classifyTrace(r.final, [SESSION_SHELL]);
  return out;
}

/** Traffic against full (written whole, and deduplicated) and skip fraction of a mode's no-fault runs, on the traces `fullRuns` has too. */
function trafficFigures(runs: readonly RunResult[], fullRuns: readonly RunResult[]): Omit<ShellFigures, 'traces'> {
  const sum = (rs: readonly RunResult[], f: (r: RunResult) => number) => rs.reduce((a, r) => a + f(r), 0);
  const ratio = (f: (r: RunResult) => number) => {
    const base = sum(full, f);
    return base > 0 ? sum(runs, f) / base : null;
  };
  const traces = new Set(runs.map((r) => r.trace));
  const full = fullRuns.filter((r) => traces.has(r.trace));
  const turns = sum(runs, (r) => r.turns.judged);
  return {
    traffic_vs_full: ratio((r) => r.ckpt_bytes),
    traffic_vs_full_turns: ratio((r) => r.ckpt_bytes_turns),
    traffic_vs_full_dedup: ratio((r) => r.ckpt_dedup_bytes),
    traffic_vs_full_dedup_turns: ratio((r) => r.ckpt_dedup_bytes_turns),
    skip_fraction: turns ? sum(runs, (r) => r.turns.skipped) / turns : null,
  };
}

export function summarize(runs: RunResult[], modes: BenchMode[], classes: Record<string, TraceClassing> = {}): Record<string, ModeSummary> {
  const clean = (mode: BenchMode) => runs.filter((r) => r.mode === mode && r.fault === 'none');
  const noneWall = new Map(clean('none').map((r) => [r.trace, r.wall_ms]));
  const fullRuns = clean('full');
  const fullLogical = fullRuns.reduce((a, r) => a + r.ckpt_logical_bytes, 0);
  const out: Record<string, ModeSummary> = {};
  for (const mode of modes) {
    const all = runs.filter((r) => r.mode === mode);
    const c = clean(mode);
    const checkpointing = mode === 'crab' || mode === 'full';
    const overheads = c.filter((r) => noneWall.has(r.trace)).map((r) => r.wall_ms / noneWall.get(r.trace)! - 1);
    const bytes = c.reduce((a, r) => a + r.ckpt_bytes, 0);
    const logical = c.reduce((a, r) => a + r.ckpt_logical_bytes, 0);
    const boundaries = c.reduce((a, r) => a + r.ckpts.full + r.ckpts.process + r.ckpts.fs + r.ckpts.skip, 0);
    const skips = c.reduce((a, r) => a + r.ckpts.skip, 0);
    const restores = all.filter((r) => r.fault !== 'none' && r.restore_ms !== null).map((r) => r.restore_ms!);
    const traffic = trafficFigures(c, fullRuns);
    const shellRuns = c.filter((r) => classes[r.trace]?.class === 'shell');
    const shell = checkpointing && shellRuns.length ? trafficFigures(shellRuns, fullRuns) : null;
    out[mode] = {
      correctness: all.length ? all.filter((r) => r.correct).length / all.length : 0,
      runs: all.length,
      overhead_vs_none: mode === 'none' ? 0 : overheads.length ? overheads.reduce((a, b) => a + b, 0) / overheads.length : null,
      traffic_vs_full: checkpointing ? traffic.traffic_vs_full : null,
      traffic_vs_full_turns: checkpointing ? traffic.traffic_vs_full_turns : null,
      traffic_vs_full_dedup: checkpointing ? traffic.traffic_vs_full_dedup : null,
      traffic_vs_full_dedup_turns: checkpointing ? traffic.traffic_vs_full_dedup_turns : null,
      traffic_vs_full_logical: fullLogical > 0 && checkpointing ? logical / fullLogical : null,
      // Gate waits of the no-fault runs: at the recorded latencies (compressed fault sweeps wait more).
      gate_wait_p99_ms: percentile(c.flatMap((r) => r.gate_waits), 99),
      skip_fraction: mode === 'crab' ? traffic.skip_fraction : null,
      skip_fraction_boundaries: mode === 'crab' && boundaries ? skips / boundaries : null,
      ckpt_bytes: bytes,
      ckpt_dedup_bytes: c.reduce((a, r) => a + r.ckpt_dedup_bytes, 0),
      restore_ms_p50: restores.length ? percentile(restores, 50) : null,
      bytes_by_cause: mode === 'crab' ? bytesByCause(c.flatMap((r) => r.checkpoints)) : null,
      shell: shell && { traces: shellRuns.length, ...shell, skip_fraction: mode === 'crab' ? shell.skip_fraction : null },
    };
  }
  return out;
}
