/**
 * @module What one replay reports (`RunResult`), and the figures read from its host after it
 * ran: gate waits from the proxy, checkpoints from the catalog, each charged three ways
 * (`own-traffic.ts`).
 */
import type { TurnRecord } from '../coordinator/turn-hooks.js';
import type { CheckpointRecord } from '../checkpoint/checkpoint.js';
import type { FinalState } from './final-state.js';
import { runTraffic } from './own-traffic.js';
import type { DaemonHost } from './daemon-host.js';
import type { MemoryPressure } from './memory-limit.js';

export type BenchMode = 'none' | 'chat-only' | 'full' | 'crab';
export const BENCH_MODES: readonly BenchMode[] = ['none', 'chat-only', 'full', 'crab'];

export interface RunResult {
  trace: string;
  mode: BenchMode;
  /** `none` (the first no-fault run), `none-repeat` (the reference's noise run), `none#R` (repetition R), or the fault's label. */
  fault: string;
  latency_scale: number;
  correct: boolean;
  reason: string | null;
  wall_ms: number;
  /**
   * The paper's charge (`paperTraffic`), the headline: each checkpoint's CRIU images whole as
   * CRIU writes them (uncompressed) plus the files changed since the run's previous checkpoint,
   * whole. The same charge for every mode: only which checkpoints are taken differs.
   */
  ckpt_bytes: number;
  /** What the checkpoints would write to a deduplicating store of their own (Crab's store; `ownTraffic`). */
  ckpt_dedup_bytes: number;
  /** Each checkpoint written whole, compressed, nothing shared between them (`wholeTraffic`): a self-contained full checkpoint. */
  ckpt_whole_bytes: number;
  /** What the checkpoints actually wrote to their host's store (depends on which run stored shared content first). */
  ckpt_store_bytes: number;
  /** `ckpt_bytes` of the checkpoints at boundaries 1..N: what the agent's turns cost, the setup's base checkpoint left out. */
  ckpt_bytes_turns: number;
  /** The same for `ckpt_dedup_bytes`. */
  ckpt_dedup_bytes_turns: number;
  /** The same for `ckpt_whole_bytes`. */
  ckpt_whole_bytes_turns: number;
  /** What the checkpoints hold (files + process images) before dedup. */
  ckpt_logical_bytes: number;
  /** Checkpoints by kind over all boundaries, the first (boundary 0: the setup, before turn 1) included. */
  ckpts: { full: number; process: number; fs: number; skip: number };
  /**
   * Agent turns (boundaries 1..N: boundary k judges what turn k did) and how many of them took no
   * checkpoint. Boundary 0 holds the setup, not a turn: every mode takes its base checkpoint there.
   */
  turns: { judged: number; skipped: number };
  /** Every checkpoint the run took: at which boundary, of which kind, its charge and why. */
  checkpoints: Array<{ turn: number | null; kind: string; new_bytes: number; dedup_bytes: number; store_new_bytes: number; reasons: string[] }>;
  gate_wait_ms: { p50: number; p99: number };
  gate_waits: number[];
  restore_ms: number | null;
  turns_rerun: number;
  tokens_wasted: number;
  /** Host crashes of this run, and how many of them caught the daemon busy with the sandbox (a checkpoint in flight) or an action running. */
  crashes: { total: number; busy: number; mid_action: number };
  /** Checkpoints the catalog listed right before a host crash that the fresh daemon's catalog no longer has. */
  ckpts_lost: number;
  /** The sandbox's memory limit and whether it was hit (over every start and restore of the run). */
  memory: { limit_bytes: number; limit_hits: number; oom_kills: number };
  /** Charge (`ckpt_bytes`) per boundary index, for the charts. */
  bytes_per_turn: number[];
  final?: FinalState;
}

export function emptyResult(trace: string, mode: BenchMode, fault: string, latencyScale: number, memoryBytes: number): RunResult {
  return {
    trace,
    mode,
    fault,
    latency_scale: latencyScale,
    correct: false,
    reason: null,
    wall_ms: 0,
    ckpt_bytes: 0,
    ckpt_dedup_bytes: 0,
    ckpt_whole_bytes: 0,
    ckpt_store_bytes: 0,
    ckpt_bytes_turns: 0,
    ckpt_dedup_bytes_turns: 0,
    ckpt_whole_bytes_turns: 0,
    ckpt_logical_bytes: 0,
    ckpts: { full: 0, process: 0, fs: 0, skip: 0 },
    turns: { judged: 0, skipped: 0 },
    checkpoints: [],
    gate_wait_ms: { p50: 0, p99: 0 },
    gate_waits: [],
    restore_ms: null,
    turns_rerun: 0,
    tokens_wasted: 0,
    crashes: { total: 0, busy: 0, mid_action: 0 },
    ckpts_lost: 0,
    memory: { limit_bytes: memoryBytes, limit_hits: 0, oom_kills: 0 },
    bytes_per_turn: [],
  };
}

export function notePressure(r: RunResult, p: MemoryPressure): void {
  r.memory.limit_hits += p.limitHits;
  r.memory.oom_kills += p.oomKills;
}

export function percentile(xs: number[], p: number): number {
  if (xs.length === 0) return 0;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))]!;
}

/** Fills the run's figures from its host: gate waits, checkpoints by kind, their three charges. */
export async function collectFigures(host: DaemonHost, id: string, result: RunResult): Promise<void> {
  const records: TurnRecord[] = await host.turns(id);
  result.gate_waits = records.map((r) => r.gateWaitMs ?? 0);
  result.gate_wait_ms = { p50: percentile(result.gate_waits, 50), p99: percentile(result.gate_waits, 99) };
  const cks: CheckpointRecord[] = await host.api.listCheckpoints(id).catch(() => []);
  // Boundaries that took no checkpoint (skipped by the inspector, or a mode that takes none).
  const taken = new Set(cks.map((c) => c.turn));
  const boundaries = new Set(records.map((r) => r.turnIndex));
  const skipped = [...boundaries].filter((t) => !taken.has(t));
  result.ckpts.skip = skipped.length;
  result.turns = { judged: [...boundaries].filter((t) => t >= 1).length, skipped: skipped.filter((t) => t >= 1).length };
  // charged as if the run had the store to itself: shared content is not free for whoever came second
  const traffic = await runTraffic(await host.store(), cks);
  cks.forEach((c, i) => {
    const paper = traffic.paper[i]!;
    const dedup = traffic.own[i]!;
    const whole = traffic.whole[i]!;
    result.ckpts[c.kind]++;
    result.ckpt_bytes += paper;
    result.ckpt_dedup_bytes += dedup;
    result.ckpt_whole_bytes += whole;
    result.ckpt_store_bytes += c.newBytes;
    if (c.turn !== null && c.turn >= 1) {
      result.ckpt_bytes_turns += paper;
      result.ckpt_dedup_bytes_turns += dedup;
      result.ckpt_whole_bytes_turns += whole;
    }
    result.ckpt_logical_bytes += c.logicalBytes;
    if (c.turn !== null) result.bytes_per_turn[c.turn] = (result.bytes_per_turn[c.turn] ?? 0) + paper;
    result.checkpoints.push({ turn: c.turn, kind: c.kind, new_bytes: paper, dedup_bytes: dedup, store_new_bytes: c.newBytes, reasons: reasonsOf(c.effects) });
  });
}

/** The turn controller's reasons for a checkpoint's kind, from its effect report (none for manual checkpoints). */
function reasonsOf(effects: unknown): string[] {
  const reasons = (effects as { reasons?: unknown } | null)?.reasons;
  return Array.isArray(reasons) ? reasons.filter((r): r is string => typeof r === 'string') : [];
}
