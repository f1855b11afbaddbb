/**
 * @module The bench's figures per mode (pure): correctness, overhead over repetitions, traffic
 * against full under the three charges, skips, gate waits, restores; the same on shell traces.
 *
 * Traffic ratios (README, "How traffic is counted"), each against full's no-fault runs of the
 * same traces:
 * - `traffic_vs_full` (headline): the paper's charge for both (CRIU images whole, uncompressed,
 *   plus the files changed since the previous checkpoint, whole);
 * - `traffic_store_vs_full`: what the mode's deduplicating store writes against that baseline;
 * - `traffic_vs_full_whole`: against full's checkpoints each written whole and compressed (the
 *   mode's own in its deduplicating store; full's whole);
 * - `traffic_vs_full_dedup`: both into deduplicating stores (what the policy alone saves);
 * - `traffic_vs_full_logical`: what the checkpoints hold, uncompressed, before dedup.
 */
import { bytesByCause, type CauseTotal, type CheckpointCause } from './causes.js';
import { percentile, type BenchMode, type RunResult } from './run-result.js';
import type { TraceClassing } from './trace-class.js';

export interface ModeSummary {
  correctness: number;
  runs: number;
  /** Mean overhead of the no-fault runs against mode none's run of the same trace and repetition (run side by side). */
  overhead_vs_none: number | null;
  /** Standard deviation of the per-repetition mean overheads (null with one repetition). */
  overhead_spread: number | null;
  /** Mean overhead of each repetition (over the traces). */
  overhead_reps: number[];
  /** The paper's charge against full's: the headline. */
  traffic_vs_full: number | null;
  /** The same over the agent's turns (boundaries 1..N): the setup's base checkpoint, alike in every mode, left out. */
  traffic_vs_full_turns: number | null;
  /** What the mode writes into its deduplicating store against full's paper charge. */
  traffic_store_vs_full: number | null;
  /** What the mode writes (crab: its store; full: each checkpoint whole, compressed) against full's checkpoints written whole. */
  traffic_vs_full_whole: number | null;
  traffic_vs_full_whole_turns: number | null;
  /** Both into a deduplicating store of their own: what the policy (which checkpoints to take) saves on its own. */
  traffic_vs_full_dedup: number | null;
  traffic_vs_full_dedup_turns: number | null;
  /** What the mode's checkpoints hold before dedup and compression against what full's hold (C/R volume, like for like). */
  traffic_vs_full_logical: number | null;
  gate_wait_p99_ms: number;
  /** Agent turns that took no checkpoint (boundaries 1..N of the first no-fault runs). */
  skip_fraction: number | null;
  /** The same over every boundary, the setup's (boundary 0, a base checkpoint in every mode) included. */
  skip_fraction_boundaries: number | null;
  /** The first no-fault runs' paper charge (`RunResult.ckpt_bytes`), in all. */
  ckpt_bytes: number;
  /** What they write into a deduplicating store, each run into its own, in all. */
  ckpt_dedup_bytes: number;
  /** Each checkpoint written whole, in all. */
  ckpt_whole_bytes: number;
  /** Median restore time of the fault runs that restored (null when none did). */
  restore_ms_p50: number | null;
  /** Host crashes over the fault runs, those that caught the daemon checkpointing the sandbox, and checkpoints lost. */
  crashes: { total: number; busy: number; mid_action: number; ckpts_lost: number };
  /** Re-run turns over the fault runs. */
  turns_rerun: number;
  /** Runs whose sandbox hit its memory limit. */
  memory_limited_runs: number;
  /** The no-fault runs' store bytes by why each checkpoint was taken (`causes.ts`); crab only. */
  bytes_by_cause: Partial<Record<CheckpointCause, CauseTotal>> | null;
  /** The same figures on the shell traces alone (`trace-class.ts`): the workload the paper's claims are about. */
  shell: ShellFigures | null;
}

export interface ShellFigures {
  traces: number;
  traffic_vs_full: number | null;
  traffic_vs_full_turns: number | null;
  traffic_store_vs_full: number | null;
  traffic_vs_full_whole: number | null;
  traffic_vs_full_dedup: number | null;
  traffic_vs_full_dedup_turns: number | null;
  skip_fraction: number | null;
}

/** What a mode writes in the whole-layer comparison: full's checkpoints each whole, any other mode's into its deduplicating store. */
const writtenWhole = (r: RunResult) => (r.mode === 'full' ? r.ckpt_whole_bytes : r.ckpt_dedup_bytes);
const writtenWholeTurns = (r: RunResult) => (r.mode === 'full' ? r.ckpt_whole_bytes_turns : r.ckpt_dedup_bytes_turns);

/** Traffic against full under every charge, and skip fraction, of a mode's no-fault runs, on the traces `fullRuns` has too. */
export function trafficFigures(runs: readonly RunResult[], fullRuns: readonly RunResult[]): Omit<ShellFigures, 'traces'> & { traffic_vs_full_whole_turns: number | null } {
  const sum = (rs: readonly RunResult[], f: (r: RunResult) => number) => rs.reduce((a, r) => a + f(r), 0);
  const traces = new Set(runs.map((r) => r.trace));
  const full = fullRuns.filter((r) => traces.has(r.trace));
  const ratio = (mine: (r: RunResult) => number, theirs: (r: RunResult) => number = mine) => {
    const base = sum(full, theirs);
    return base > 0 ? sum(runs, mine) / base : null;
  };
  const turns = sum(runs, (r) => r.turns.judged);
  return {
    traffic_vs_full: ratio((r) => r.ckpt_bytes),
    traffic_vs_full_turns: ratio((r) => r.ckpt_bytes_turns),
    traffic_store_vs_full: ratio((r) => r.ckpt_dedup_bytes, (r) => r.ckpt_bytes),
    traffic_vs_full_whole: ratio(writtenWhole),
    traffic_vs_full_whole_turns: ratio(writtenWholeTurns),
    traffic_vs_full_dedup: ratio((r) => r.ckpt_dedup_bytes),
    traffic_vs_full_dedup_turns: ratio((r) => r.ckpt_dedup_bytes_turns),
    skip_fraction: turns ? sum(runs, (r) => r.turns.skipped) / turns : null,
  };
}

const mean = (xs: readonly number[]) => (xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : null);
function sd(xs: readonly number[]): number | null {
  if (xs.length < 2) return null;
  const m = mean(xs)!;
  return Math.sqrt(xs.reduce((a, x) => a + (x - m) ** 2, 0) / (xs.length - 1));
}

/**
 * Overhead of a mode's no-fault runs: each against mode none's run of the same trace and
 * repetition (they ran side by side, under the same load). Mean over all, and the spread of
 * the per-repetition means.
 */
export function overheadFigures(runs: readonly RunResult[], mode: BenchMode): { mean: number | null; spread: number | null; reps: number[]; perTrace: Map<string, number[]> } {
  const none = new Map(runs.filter((r) => r.mode === 'none' && isCleanRun(r) && r.reason === null).map((r) => [`${r.trace}/${r.fault}`, r.wall_ms]));
  const byRep = new Map<string, number[]>();
  const perTrace = new Map<string, number[]>();
  for (const r of runs) {
    if (r.mode !== mode || !isCleanRun(r) || r.reason !== null) continue;
    const base = none.get(`${r.trace}/${r.fault}`);
    if (!base) continue;
    const o = r.wall_ms / base - 1;
    byRep.set(r.fault, [...(byRep.get(r.fault) ?? []), o]);
    perTrace.set(r.trace, [...(perTrace.get(r.trace) ?? []), o]);
  }
  const reps = [...byRep.entries()].sort((a, b) => repIndex(a[0]) - repIndex(b[0])).map(([, xs]) => mean(xs)!);
  return { mean: mean([...byRep.values()].flat()), spread: sd(reps), reps, perTrace };
}

const isCleanRun = (r: Pick<RunResult, 'fault'>) => r.fault === 'none' || r.fault.startsWith('none#');
const repIndex = (label: string) => (label === 'none' ? 1 : Number(label.slice(5)));

export function summarize(runs: RunResult[], modes: BenchMode[], classes: Record<string, TraceClassing> = {}): Record<string, ModeSummary> {
  // traffic, skips and gate waits from the first no-fault run of each trace (repetitions repeat them)
  const first = (mode: BenchMode) => runs.filter((r) => r.mode === mode && r.fault === 'none');
  const fullRuns = first('full');
  const fullLogical = fullRuns.reduce((a, r) => a + r.ckpt_logical_bytes, 0);
  const out: Record<string, ModeSummary> = {};
  for (const mode of modes) {
    const all = runs.filter((r) => r.mode === mode);
    const c = first(mode);
    const checkpointing = mode === 'crab' || mode === 'full';
    const ov = overheadFigures(runs, mode);
    const logical = c.reduce((a, r) => a + r.ckpt_logical_bytes, 0);
    const boundaries = c.reduce((a, r) => a + r.ckpts.full + r.ckpts.process + r.ckpts.fs + r.ckpts.skip, 0);
    const skips = c.reduce((a, r) => a + r.ckpts.skip, 0);
    const faulted = all.filter((r) => !isCleanRun(r) && r.fault !== 'none-repeat');
    const restores = faulted.filter((r) => r.restore_ms !== null).map((r) => r.restore_ms!);
    const traffic = trafficFigures(c, fullRuns);
    const shellRuns = c.filter((r) => classes[r.trace]?.class === 'shell');
    const shell = checkpointing && shellRuns.length ? trafficFigures(shellRuns, fullRuns) : null;
    const only = <T>(x: T) => (checkpointing ? x : null);
    out[mode] = {
      correctness: all.length ? all.filter((r) => r.correct).length / all.length : 0,
      runs: all.length,
      overhead_vs_none: mode === 'none' ? 0 : ov.mean,
      overhead_spread: mode === 'none' ? null : ov.spread,
      overhead_reps: mode === 'none' ? [] : ov.reps,
      traffic_vs_full: only(traffic.traffic_vs_full),
      traffic_vs_full_turns: only(traffic.traffic_vs_full_turns),
      traffic_store_vs_full: only(traffic.traffic_store_vs_full),
      traffic_vs_full_whole: only(traffic.traffic_vs_full_whole),
      traffic_vs_full_whole_turns: only(traffic.traffic_vs_full_whole_turns),
      traffic_vs_full_dedup: only(traffic.traffic_vs_full_dedup),
      traffic_vs_full_dedup_turns: only(traffic.traffic_vs_full_dedup_turns),
      traffic_vs_full_logical: fullLogical > 0 && checkpointing ? logical / fullLogical : null,
      // Gate waits of the no-fault runs: at the recorded latencies (compressed fault sweeps wait more).
      gate_wait_p99_ms: percentile(all.filter(isCleanRun).flatMap((r) => r.gate_waits), 99),
      skip_fraction: mode === 'crab' ? traffic.skip_fraction : null,
      skip_fraction_boundaries: mode === 'crab' && boundaries ? skips / boundaries : null,
      ckpt_bytes: c.reduce((a, r) => a + r.ckpt_bytes, 0),
      ckpt_dedup_bytes: c.reduce((a, r) => a + r.ckpt_dedup_bytes, 0),
      ckpt_whole_bytes: c.reduce((a, r) => a + r.ckpt_whole_bytes, 0),
      restore_ms_p50: restores.length ? percentile(restores, 50) : null,
      crashes: {
        total: faulted.reduce((a, r) => a + r.crashes.total, 0),
        busy: faulted.reduce((a, r) => a + r.crashes.busy, 0),
        mid_action: faulted.reduce((a, r) => a + r.crashes.mid_action, 0),
        ckpts_lost: faulted.reduce((a, r) => a + r.ckpts_lost, 0),
      },
      turns_rerun: faulted.reduce((a, r) => a + r.turns_rerun, 0),
      memory_limited_runs: all.filter((r) => r.memory.oom_kills > 0).length,
      // where the store's bytes go (the dedup charge: what Crab actually writes)
      bytes_by_cause: mode === 'crab' ? bytesByCause(c.flatMap((r) => r.checkpoints.map((k) => ({ ...k, new_bytes: k.dedup_bytes })))) : null,
      shell: shell && { traces: shellRuns.length, ...shell, skip_fraction: mode === 'crab' ? shell.skip_fraction : null },
    };
  }
  return out;
}
