/**
 * @module `crab bench`: replays traces in every mode, side by side, with faults, against bench
 * hosts: `crab daemon` processes on CRAB_HOMEs of their own under `<home>/bench/` (`daemon-host.ts`),
 * which share the home's images and which the bench can crash like hosts.
 *
 * Phase 1 (reference, overhead, traffic): every trace once per mode with no fault, at the
 * overhead latency scale (1 by default: only scale-1 overhead figures are valid), `repetitions`
 * times. All modes of a trace start together and run side by side (same load), on the main host;
 * `overheadTraces` traces at a time. After the first repetition, a second no-fault run of the
 * trace in mode none at `latencyScale` (the noise reference).
 * Phase 2 (correctness sweep): every trace × mode (but none) × fault point at `latencyScale`,
 * `concurrency` runs at a time, each run alone on a fault host of its own (a host crash takes
 * down only its run), the dearest runs first. Fault hosts run at a lower CPU priority (nice), so
 * the overhead runs alongside are served first.
 * The `none` run of a trace is the reference final state the others must equal.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { monitorEventLoopDelay, type IntervalHistogram } from 'node:perf_hooks';
import { ensureImage } from '../image/image-builder.js';
import type { Trace } from './trace.js';
import { runReplay, type RunSpec } from './replay.js';
import { percentile, type BenchMode, type RunResult } from './run-result.js';
import { mergeNoise, noiseBetween, stateDifference, type Noise } from './final-state.js';
import { pool } from '../core/pool.js';
import { classifyTrace, type TraceClassing } from './trace-class.js';
import { SESSION_SHELL } from '../sandbox/channel.js';
import { DaemonHost } from './daemon-host.js';
import { faultPoints, planKind, type FaultPlan } from './faults.js';
import { summarize, type ModeSummary } from './summary.js';

export { faultPoints, parseFaultPlan, type FaultPlan } from './faults.js';
export { summarize, type ModeSummary, type ShellFigures } from './summary.js';

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
  /** No-fault runs of each trace and mode (default 1): overhead is reported as mean ± spread over them. */
  repetitions?: number;
  /** Memory limit of every replay's sandbox (default 2 GiB). */
  memoryBytes?: number;
  /** The replayed LLM upstream every host's proxy forwards to. */
  upstreamUrl: string;
  /** The CRAB_HOME whose images the bench hosts share; their homes go under its `bench/`. */
  home: string;
  policy?: 'fifo' | 'reactive';
  /** Keep the bench hosts' homes (stores, catalogs, daemon logs) instead of removing them at the end. */
  keepHomes?: boolean;
  onProgress?: (done: number, total: number, last: RunResult | null) => void;
  /** Once aborted, no run starts; the runs under way finish and the report covers what ran. */
  signal?: AbortSignal;
}

export interface BenchReport {
  machine: { cpus: number; memGiB: number; kernel: string; node: string };
  options: { modes: BenchMode[]; faults: string; fault_kind: string; latency_scale: number; overhead_scale: number; concurrency: number; repetitions: number; memory_bytes: number };
  runs: RunResult[];
  summary: Record<string, ModeSummary>;
  /** Set when the bench was stopped: the runs that did not start, and those of traces whose reference runs did not both finish, are left out. */
  stopped?: { runs_planned: number; runs_done: number; runs_judged: number };
  /** Each trace's class, from the end state of its no-fault reference run (absent when that run failed). */
  trace_classes: Record<string, TraceClassing>;
  /** How late the bench process's event loop ran its timers (it drives every replay; the daemons have their own). */
  event_loop_lag_ms: { p50: number; p99: number; max: number };
  /** Daemons the bench started: hosts, and how many times one came back from a crash. */
  hosts: { started: number; restarts: number };
  started_at: string;
  duration_ms: number;
}

/**
 * Fault runs, the dearest first: checkpointing modes before chat-only (which takes none), then
 * traces with more turns (more boundaries, longer replays) first. Only the order changes.
 */
export function longestFirst(specs: readonly RunSpec[]): RunSpec[] {
  const weight = (s: RunSpec) => (s.mode === 'chat-only' || s.mode === 'none' ? 0 : 1000) + s.trace.turns.length;
  return specs.map((s, i) => ({ s, i, w: weight(s) })).sort((a, b) => b.w - a.w || a.i - b.i).map((x) => x.s);
}

/** A no-fault run: the first (`none`) or a repetition (`none#R`); not the noise run `none-repeat`. */
export const isClean = (r: Pick<RunResult, 'fault'>): boolean => r.fault === 'none' || r.fault.startsWith('none#');

export async function runBench(traces: Trace[], opts: BenchOptions, progress: (m: string) => void = () => undefined): Promise<BenchReport> {
  const startedAt = new Date();
  const t0 = performance.now();
  const loop = monitorEventLoopDelay({ resolution: LAG_RESOLUTION_MS });
  loop.enable();
  // Images first (cached per package set), so no run pays for a build.
  for (const pk of new Set(traces.map((t) => JSON.stringify([...t.header.image.packages].sort())))) {
    const pkgs = JSON.parse(pk) as string[];
    progress(`image: ${pkgs.join(',') || '(base)'}`);
    await ensureImage(path.join(opts.home, 'images'), traces[0]!.header.image.base, pkgs, progress);
  }
  const reps = Math.max(1, opts.repetitions ?? 1);
  const memoryBytes = opts.memoryBytes;
  const modes = opts.modes.includes('none') ? opts.modes : (['none', ...opts.modes] as BenchMode[]);
  const benchDir = path.join(opts.home, 'bench', `${startedAt.toISOString().replace(/[-:.]/g, '').slice(0, 15)}-${process.pid}`);
  const hostOpts = (name: string, nice?: number) => ({ home: path.join(benchDir, name), name: `${path.basename(benchDir)}-${name}`, upstreamUrl: opts.upstreamUrl, policy: opts.policy, imagesFrom: path.join(opts.home, 'images'), nice });
  const hosts: DaemonHost[] = [];
  const newHost = async (name: string, nice?: number) => {
    const h = await DaemonHost.start(hostOpts(name, nice));
    hosts.push(h);
    return h;
  };
  // Phase 1: one group per trace and repetition, its modes side by side; after the first, a
  // second no-fault run of the trace in mode none (what differs between two clean runs is noise).
  // Never at the same time as the first: run-time dependent content (git commit dates…) must have
  // the chance to differ.
  const phase1 = traces.flatMap((trace) =>
    Array.from({ length: reps }, (_, rep) => ({
      side: modes.map((mode): RunSpec => ({ trace, mode, fault: null, latencyScale: opts.overheadScale, label: rep === 0 ? 'none' : `none#${rep + 1}`, memoryBytes })),
      repeat: rep === 0 ? ({ trace, mode: 'none', fault: null, latencyScale: opts.latencyScale, label: 'none-repeat', memoryBytes } as RunSpec) : null,
    })),
  );
  // Phase 2: the faults.
  const faultRuns = traces.flatMap((trace) =>
    faultPoints(opts.faults, trace.turns.length, Math.random, (t) => trace.turns[t - 1]?.actions.length ?? 0).flatMap((fault) =>
      modes.filter((m) => m !== 'none').map((mode): RunSpec => ({ trace, mode, fault, latencyScale: opts.latencyScale, memoryBytes })),
    ),
  );
  const phase2 = longestFirst(faultRuns);
  const total = traces.length * (modes.length * reps + 1) + phase2.length;
  let done = 0;
  opts.onProgress?.(0, total, null);
  const runs: RunResult[] = [];
  const runOne = async (host: DaemonHost, spec: RunSpec) => {
    if (opts.signal?.aborted) return;
    const r = await runReplay(host, spec);
    runs.push(r);
    opts.onProgress?.(++done, total, r);
  };
  try {
    const main = await newHost('main');
    const groupsAtOnce = faultRuns.length ? Math.max(1, opts.overheadTraces ?? 2) : Math.max(1, Math.floor(opts.concurrency / modes.length));
    await Promise.all([
      pool(phase1, groupsAtOnce, async (group) => {
        await Promise.all(group.side.map((s) => runOne(main, s)));
        if (group.repeat) await runOne(main, group.repeat);
      }),
      faultSweep(phase2, opts.concurrency, (k) => newHost(`h${k}`, FAULT_HOST_NICE), runOne, opts.signal),
    ]);
  } finally {
    for (const h of hosts) await h.close().catch((err: unknown) => progress(`bench host ${h.opts.name} did not stop cleanly: ${(err as Error).message}`));
    if (!opts.keepHomes) await fs.promises.rm(benchDir, { recursive: true, force: true });
    else progress(`bench hosts kept in ${benchDir}`);
  }
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
    options: {
      modes,
      faults: JSON.stringify(opts.faults),
      fault_kind: opts.faults.kind === 'none' ? 'none' : planKind(opts.faults),
      latency_scale: opts.latencyScale,
      overhead_scale: opts.overheadScale,
      concurrency: opts.concurrency,
      repetitions: reps,
      memory_bytes: runs[0]?.memory.limit_bytes ?? memoryBytes ?? 0,
    },
    runs,
    summary: summarize(runs, modes, classes),
    ...(opts.signal?.aborted ? { stopped: { runs_planned: total, runs_done: done, runs_judged: runs.length } } : {}),
    trace_classes: classes,
    event_loop_lag_ms: loopLag(loop),
    hosts: { started: hosts.length, restarts: hosts.reduce((a, h) => a + h.starts - 1, 0) },
    started_at: startedAt.toISOString(),
    duration_ms: performance.now() - t0,
  };
}

/** Niceness of the fault hosts (and so of their sandboxes): the overhead runs alongside go first. */
const FAULT_HOST_NICE = 5;

/**
 * Runs the fault runs `concurrency` at a time, each worker on a host of its own, made on first
 * use. A host whose daemon is gone after a run (it could not come back from a crash) is
 * replaced by a new one.
 */
async function faultSweep(specs: readonly RunSpec[], concurrency: number, makeHost: (k: number) => Promise<DaemonHost>, run: (h: DaemonHost, s: RunSpec) => Promise<void>, signal?: AbortSignal): Promise<void> {
  let next = 0;
  let made = 0;
  const worker = async () => {
    let host: DaemonHost | null = null;
    while (next < specs.length && !signal?.aborted) {
      const spec = specs[next++]!;
      host ??= await makeHost(made++);
      await run(host, spec);
      if (host.pid === null || !(await host.api.ping())) host = null; // lost: the next run gets a new host
    }
  };
  await Promise.all(Array.from({ length: Math.min(Math.max(1, concurrency), specs.length) }, worker));
}

/** Sampling interval of the event-loop lag (a sample is the interval plus the lag: the interval is taken off). */
const LAG_RESOLUTION_MS = 10;

function loopLag(h: IntervalHistogram): BenchReport['event_loop_lag_ms'] {
  const lag = (ns: number) => Math.max(0, Math.round((ns / 1e6 - LAG_RESOLUTION_MS) * 10) / 10);
  return h.count ? { p50: lag(h.percentile(50)), p99: lag(h.percentile(99)), max: lag(h.max) } : { p50: 0, p99: 0, max: 0 };
}

const pairs = <T>(xs: readonly T[]): Array<[T, T]> => xs.flatMap((a, i) => xs.slice(i + 1).map((b): [T, T] => [a, b]));

/**
 * Judges every run against its trace's no-fault run of mode none, ignoring noise:
 * - what the no-fault runs of mode none disagree on (the reference, its noise run, repetitions);
 * - for a no-fault run of a mode, also what that mode's no-fault runs disagree on among themselves;
 * - for a fault run of a mode, also what that mode's no-fault runs differ in from the reference:
 *   they restore nothing, so their differences are noise too (a Go build cache, timestamps).
 */
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
    const finals = (rs: readonly RunResult[]) => rs.filter((r) => r.final && r.reason === null);
    const noneRuns = finals(others.filter((r) => r.mode === 'none' && (r.fault === 'none-repeat' || isClean(r))));
    const base = mergeNoise(...noneRuns.map((r) => noiseBetween(ref.final!, r.final!)));
    ref.correct = true;
    // The noise runs are judged by the files alone: what they disagree on otherwise is, by definition, noise.
    for (const r of noneRuns) {
      r.reason = stateDifference(ref.final, r.final!, base);
      r.correct = r.reason === null;
    }
    const modes = new Set(others.map((r) => r.mode).filter((m) => m !== 'none'));
    for (const mode of modes) {
      const clean = finals(others.filter((r) => r.mode === mode && isClean(r)));
      const within = mergeNoise(base, ...pairs(clean).map(([a, b]) => noiseBetween(a.final!, b.final!)));
      for (const r of clean) {
        r.reason = stateDifference(ref.final, r.final!, within);
        r.correct = r.reason === null;
      }
      const faultNoise: Noise = mergeNoise(within, ...clean.map((c) => noiseBetween(ref.final!, c.final!)));
      for (const r of others.filter((x) => x.mode === mode && !isClean(x))) {
        if (r.reason !== null || !r.final) continue;
        r.reason = stateDifference(ref.final, r.final, faultNoise);
        r.correct = r.reason === null;
      }
    }
  }
}

/** Classes every trace whose no-fault reference run ended with a state to class it by. */
export function traceClasses(runs: readonly RunResult[]): Record<string, TraceClassing> {
  const out: Record<string, TraceClassing> = {};
  for (const r of runs) if (r.mode === 'none' && r.fault === 'none' && r.final && r.reason === null) out[r.trace] = classifyTrace(r.final, [SESSION_SHELL]);
  return out;
}

export { percentile };
