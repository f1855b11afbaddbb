/**
 * @module Who froze a sandbox. Before Crab writes FROZEN to a sandbox's freezer it records its own
 * pid and start time in `<sandbox dir>/freeze-owner.json`, and removes the record after the thaw.
 * So a sandbox left frozen by a process that died (kill -9 mid-checkpoint) is told from one that a
 * live process is checkpointing right now: the first is thawed by the next Crab process that
 * looks (`crash-recovery.ts`), the second is left alone, and a second checkpointer gets a clear
 * CKPT_SANDBOX_BUSY instead of thawing it under the first.
 */
import fs from 'node:fs';
import path from 'node:path';
import { conflict } from '../core/errors.js';
import { isAlive, selfIdentity, type ProcessIdentity } from '../core/owner.js';

export const FREEZE_RECORD = 'freeze-owner.json';

export interface FreezeRecord extends ProcessIdentity {
  op: 'checkpoint' | 'restore';
  atMs: number;
}

const recordPath = (sandboxRoot: string) => path.join(sandboxRoot, FREEZE_RECORD);

/** The sandbox's freeze record, or null. A record that cannot be read names no live owner (pid 0). */
export function readFreezeRecord(sandboxRoot: string): FreezeRecord | null {
  let text: string;
  try {
    text = fs.readFileSync(recordPath(sandboxRoot), 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw err;
  }
  try {
    const r = JSON.parse(text) as Partial<FreezeRecord>;
    if (Number.isInteger(r.pid) && Number.isInteger(r.startTicks)) return { pid: r.pid!, startTicks: r.startTicks!, op: r.op ?? 'checkpoint', atMs: Number(r.atMs) || 0 };
  } catch {
    // written whole by a link(2) of a complete file, so this is damage, not a write in progress
  }
  return { pid: 0, startTicks: 0, op: 'checkpoint', atMs: 0 };
}

const isSelf = (r: ProcessIdentity) => r.pid === selfIdentity().pid && r.startTicks === selfIdentity().startTicks;

/**
 * Records this process as the one about to freeze the sandbox. Atomic and exclusive (the complete
 * record is link(2)ed into place, which fails if one exists). A record of a dead process is
 * replaced; one of a live other process refuses with CKPT_SANDBOX_BUSY.
 */
export function claimFreeze(sandboxRoot: string, op: FreezeRecord['op']): void {
  const me = selfIdentity();
  const tmp = path.join(sandboxRoot, `.${FREEZE_RECORD}.${me.pid}-${me.startTicks}`);
  fs.writeFileSync(tmp, JSON.stringify({ ...me, op, atMs: Date.now() } satisfies FreezeRecord));
  try {
    for (let attempt = 0; ; attempt++) {
      try {
        fs.linkSync(tmp, recordPath(sandboxRoot));
        return;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST' || attempt > 0) throw err;
      }
      const held = readFreezeRecord(sandboxRoot);
      if (held && !isSelf(held) && isAlive(held)) {
        throw conflict(
          'CKPT_SANDBOX_BUSY',
          `sandbox '${path.basename(sandboxRoot)}' is frozen by process ${held.pid} (${held.op}, since ${new Date(held.atMs).toISOString()})`,
          'Another Crab process is checkpointing or restoring it; retry when it is done.',
          { pid: held.pid, op: held.op },
        );
      }
      fs.rmSync(recordPath(sandboxRoot), { force: true }); // ours from before, or its owner died: take it over
    }
  } finally {
    fs.rmSync(tmp, { force: true });
  }
}

/** Removes the record if this process holds it (after the thaw). */
export function releaseFreeze(sandboxRoot: string): void {
  const held = readFreezeRecord(sandboxRoot);
  if (held && isSelf(held)) fs.rmSync(recordPath(sandboxRoot), { force: true });
}

/** Removes a record whose owner is dead (recovery, after it thawed the sandbox). */
export function clearFreezeRecord(sandboxRoot: string): void {
  fs.rmSync(recordPath(sandboxRoot), { force: true });
}

export type FreezeVerdict = 'leave' | 'thaw' | 'clear';

/**
 * What to do about a sandbox's freeze, seen by a process that does not hold it. Pure.
 * - no record: leave (not frozen by Crab — or by a Crab from before records — so not ours to undo);
 * - a live owner: leave (a checkpoint or restore is under way);
 * - a dead owner while CRIU still traces the sandbox's tasks (its orphaned `runc checkpoint` is
 *   finishing): leave, the next look thaws it;
 * - a dead owner and the cgroup frozen: thaw it and clear the record; not frozen: clear the record.
 */
export function staleFreezeVerdict(s: { frozen: boolean; record: FreezeRecord | null; ownerAlive: boolean; tracedByCriu: boolean }): FreezeVerdict {
  if (!s.record || s.ownerAlive || s.tracedByCriu) return 'leave';
  return s.frozen ? 'thaw' : 'clear';
}
