/**
 * @module Glue from the proxy's TurnHooks to the engine's HostScheduler: each boundary becomes a
 * checkpoint job, the gate is the job's completion, a response arrival makes the sandbox urgent,
 * and released turns feed the gate-wait metric. What work a boundary needs is the caller's `plan`.
 */
import type { HostScheduler } from '../engine/scheduler.js';
import type { GateSettlement, TurnBoundary, TurnHooks } from './turn-hooks.js';

/**
 * Returns the checkpoint work for a boundary, or null when none is needed (the gate then settles
 * at once as 'skipped'). Called synchronously at the boundary, in turn order per sandbox.
 */
export type CheckpointPlanner<R> = (boundary: TurnBoundary) => (() => Promise<R>) | null;

/**
 * `onHoldLimit`: a turn's response was released by the gate hold limit before its checkpoint
 * committed (counted in /metrics here; the caller makes the sandbox's next checkpoint full).
 */
export function schedulerTurnHooks<R>(scheduler: HostScheduler<R>, plan: CheckpointPlanner<R>, opts: { onHoldLimit?: (b: { sandboxId: string; turnIndex: number }) => void } = {}): TurnHooks {
  return {
    onHoldLimit: (rec) => {
      scheduler.observeHoldLimit();
      opts.onHoldLimit?.(rec);
    },
    onTurnBoundary: async (b): Promise<GateSettlement> => {
      const run = plan(b);
      if (run === null) return { outcome: 'skipped' };
      const r = await scheduler.submit({ sandboxId: b.sandboxId, turnIndex: b.turnIndex, run });
      if (r.outcome === 'failed') return { outcome: 'failed', detail: r.errors.at(-1) };
      return { outcome: 'committed', detail: r.outcome === 'committed' ? undefined : r.outcome };
    },
    onResponseArrived: (sandboxId, turnIndex) => scheduler.markUrgent(sandboxId, turnIndex),
    onTurnReleased: (rec) => scheduler.observeGateWait(rec.gateWaitMs ?? 0, rec.gate),
  };
}
