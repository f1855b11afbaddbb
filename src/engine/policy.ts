/**
 * @module Scheduling policies: pure functions that pick which eligible checkpoint job runs next.
 * The scheduler only offers jobs that may start now (the head of each sandbox's queue whose
 * sandbox has nothing running), so a policy never has to know about per-sandbox ordering.
 */

/** One job that may start now, as a policy sees it. */
export interface Candidate {
  /** Submission order across the host (monotonic, unique). */
  readonly seq: number;
  readonly sandboxId: string;
  readonly turnIndex: number;
  /** When the job was submitted (scheduler clock, ms). */
  readonly enqueuedAt: number;
  /** When the sandbox's LLM response for this turn (or a later one) arrived; null if it has not. */
  readonly urgentSince: number | null;
  /** Expected run time from the submitter (effect class, process memory size…); null if unknown. */
  readonly costHintMs: number | null;
}

export interface PolicyContext {
  /** Scheduler clock, ms. */
  readonly now: number;
  /** A job that has waited this long is served before any urgent one (starvation bound). */
  readonly agingBoundMs: number;
}

/** Returns the index in `candidates` of the job to start, or -1 to start nothing. Pure, synchronous. */
export type SchedulingPolicy = (candidates: readonly Candidate[], ctx: PolicyContext) => number;

export type PolicyName = 'fifo' | 'reactive';

/** Oldest submission first. */
export const fifoPolicy: SchedulingPolicy = (candidates) => argMin(candidates, (c) => c.seq);

/**
 * Serves first the sandboxes whose LLM response already arrived (their agent is blocked on the
 * gate right now), earliest arrival first, since that minimises the largest gate wait.
 * Aging: a job that has waited `agingBoundMs` or more goes ahead of every urgent one (oldest
 * first), so a stream of urgent jobs cannot starve the others.
 * Otherwise, when jobs carry cost hints, the cheapest goes first (unknown cost counts as the
 * dearest; ties by submission): finishing more jobs sooner leaves fewer of them unfinished when
 * their responses arrive, which is what keeps the gate-wait tail down. Without hints: FIFO.
 */
export const reactivePolicy: SchedulingPolicy = (candidates, ctx) => {
  const aged = argMin(candidates, (c) => (ctx.now - c.enqueuedAt >= ctx.agingBoundMs ? c.enqueuedAt : NaN));
  if (aged >= 0) return aged;
  const urgent = argMin(candidates, (c) => (c.urgentSince === null ? NaN : c.urgentSince));
  if (urgent >= 0) return urgent;
  return argMin(candidates, (c) => c.costHintMs ?? Number.MAX_VALUE);
};

export const POLICIES: Readonly<Record<PolicyName, SchedulingPolicy>> = {
  fifo: fifoPolicy,
  reactive: reactivePolicy,
};

/** Index of the smallest key (ties: lowest seq); NaN keys are skipped; -1 if none. */
function argMin(candidates: readonly Candidate[], key: (c: Candidate) => number): number {
  let best = -1;
  let bestKey = Infinity;
  for (let i = 0; i < candidates.length; i++) {
    const c = candidates[i]!;
    const k = key(c);
    if (Number.isNaN(k)) continue;
    if (best < 0 || k < bestKey || (k === bestKey && c.seq < candidates[best]!.seq)) {
      best = i;
      bestKey = k;
    }
  }
  return best;
}
