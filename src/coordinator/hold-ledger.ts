/**
 * @module Which turns' gates hit the hold limit, by sandbox (pure bookkeeping). Their responses
 * went out before their checkpoints committed, so the next boundary after each must take a full
 * checkpoint. A boundary at turn T covers every timed-out turn before T; a turn that times out
 * while an earlier one's forced checkpoint is still queued (its job runs late: that is why it
 * timed out) keeps its own claim on a later boundary.
 */
export class HoldLedger {
  private readonly turns = new Map<string, Set<number>>();

  /** The gate of `turn` was released at the hold limit. */
  add(sandboxId: string, turn: number): void {
    const set = this.turns.get(sandboxId) ?? new Set<number>();
    set.add(turn);
    this.turns.set(sandboxId, set);
  }

  /** Timed-out turns a checkpoint at `turn` covers (those before it), earliest first; empty: none. */
  before(sandboxId: string, turn: number): number[] {
    return [...(this.turns.get(sandboxId) ?? [])].filter((t) => t < turn).sort((a, b) => a - b);
  }

  /** A checkpoint covering `turns` committed. */
  settle(sandboxId: string, turns: readonly number[]): void {
    const set = this.turns.get(sandboxId);
    if (!set) return;
    for (const t of turns) set.delete(t);
    if (set.size === 0) this.turns.delete(sandboxId);
  }

  forget(sandboxId: string): void {
    this.turns.delete(sandboxId);
  }
}
