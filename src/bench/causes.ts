/**
 * @module Why a checkpoint was taken, in a few classes: what Crab's traffic is spent on. A pure
 * function of the turn controller's reasons (`inspector/granularity.ts`), most specific first.
 */

export const CHECKPOINT_CAUSES = [
  'setup',
  'rule',
  'server started',
  'process started',
  'process exited',
  'process memory changed',
  'shell state',
  'files changed',
  'after restore',
  'other',
] as const;
export type CheckpointCause = (typeof CHECKPOINT_CAUSES)[number];

/** The class of one checkpoint: boundary 0 is the setup's; otherwise the strongest reason. */
export function checkpointCause(turn: number | null, reasons: readonly string[]): CheckpointCause {
  if (turn === 0 || reasons.includes('first-boundary')) return 'setup';
  if (reasons.some((r) => r.startsWith('unknown') || r === 'no-report' || r === 'escalated' || r === 'mode-full')) return 'rule';
  if (reasons.includes('listening-socket')) return 'server started';
  if (reasons.includes('process-started')) return 'process started';
  if (reasons.includes('process-exited')) return 'process exited';
  if (reasons.includes('process-ran') || reasons.includes('process-changed')) return 'process memory changed';
  if (reasons.includes('shell-state')) return 'shell state';
  if (reasons.includes('fs-changed')) return 'files changed';
  if (reasons.includes('after-restore')) return 'after restore';
  return 'other';
}

export interface CauseTotal {
  checkpoints: number;
  bytes: number;
}

/** New bytes and checkpoints per cause, over the given checkpoints (causes with none left out). */
export function bytesByCause(checkpoints: ReadonlyArray<{ turn: number | null; new_bytes: number; reasons: readonly string[] }>): Partial<Record<CheckpointCause, CauseTotal>> {
  const out: Partial<Record<CheckpointCause, CauseTotal>> = {};
  for (const c of checkpoints) {
    const t = (out[checkpointCause(c.turn, c.reasons)] ??= { checkpoints: 0, bytes: 0 });
    t.checkpoints++;
    t.bytes += c.new_bytes;
  }
  return out;
}
