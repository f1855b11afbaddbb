/**
 * @module Who owns a scratch entry (a staging dir, a half-made sandbox), so that `crab gc` removes
 * it only once its owner is gone. The owner is a process named by its pid and its start time
 * (clock ticks since boot, field 22 of /proc/PID/stat): a pid reused by a later process has
 * another start time, so it is not mistaken for the owner.
 */
import fs from 'node:fs';

export interface ProcessIdentity {
  pid: number;
  startTicks: number;
}

/** Entries older than this are stale whoever made them (a live process that holds one this long is stuck). */
export const STALE_AFTER_MS = 60 * 60 * 1000;

/** Start time of a process in clock ticks since boot (field 22 of /proc/PID/stat), or null when there is no such process. */
export function processStartTicks(pid: number): number | null {
  if (!Number.isInteger(pid) || pid <= 0) return null;
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19]);
  } catch {
    return null; // no such process
  }
}

/** This process, as an owner. */
export function selfIdentity(): ProcessIdentity {
  return { pid: process.pid, startTicks: processStartTicks(process.pid) ?? 0 };
}

/** Whether the process `id` names still runs (same pid, same start time). */
export function isAlive(id: ProcessIdentity): boolean {
  const ticks = processStartTicks(id.pid);
  return ticks !== null && ticks === id.startTicks;
}

const MARK_RE = /~p(\d{1,10})t(\d{1,20})~/;

/** The owner mark put into an entry's name: `~p<pid>t<start ticks>~`. */
export function ownerMark(id: ProcessIdentity = selfIdentity()): string {
  return `~p${id.pid}t${id.startTicks}~`;
}

/** The owner named in an entry's name, or null when it carries no mark. */
export function ownerFromName(name: string): ProcessIdentity | null {
  const m = MARK_RE.exec(name);
  return m ? { pid: Number(m[1]), startTicks: Number(m[2]) } : null;
}

/** The owner recorded in a marker file (`pid startTicks`), or null when there is none or it is unreadable. */
export function readOwnerFile(file: string): ProcessIdentity | null {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch {
    return null; // no marker: the caller judges by age alone
  }
  const m = /^(\d{1,10}) (\d{1,20})\s*$/.exec(text);
  return m ? { pid: Number(m[1]), startTicks: Number(m[2]) } : null;
}

export function writeOwnerFile(file: string, id: ProcessIdentity = selfIdentity()): void {
  fs.writeFileSync(file, `${id.pid} ${id.startTicks}\n`, { mode: 0o600 });
}

export type StaleVerdict = { remove: true; why: 'owner-gone' | 'too-old' } | { remove: false; why: 'owner-alive' | 'young-unowned' };

/**
 * Whether gc may remove a scratch entry: when its owner is known and gone, or when it is older
 * than `staleAfterMs` (owned or not). An entry with no owner mark younger than that is kept: it
 * may belong to a process of an older version that is still at work. Pure.
 */
export function staleVerdict(entry: { owner: ProcessIdentity | null; ownerAlive: boolean; ageMs: number }, staleAfterMs = STALE_AFTER_MS): StaleVerdict {
  if (entry.ageMs >= staleAfterMs) return { remove: true, why: 'too-old' };
  if (entry.owner === null) return { remove: false, why: 'young-unowned' };
  return entry.ownerAlive ? { remove: false, why: 'owner-alive' } : { remove: true, why: 'owner-gone' };
}
