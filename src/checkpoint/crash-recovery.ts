/**
 * @module What a Crab process killed mid-checkpoint or mid-restore leaves, undone by the next one
 * that looks (every CLI call, daemon start, and the daemon every few seconds): sandboxes it left
 * frozen are thawed, and its scratch is removed — CRIU image and work dirs under
 * `sandboxes/<id>/ckpt/`, restore staging `sandboxes/<id>/upper.restore.*`, and the store's
 * `tmp/` files of its unfinished writes. Only what a dead owner left (pid + start time in the
 * name or the freeze record) is touched; names with no owner (older Crab) go after an hour.
 * Cheap: a few directory reads per sandbox, no catalog.
 */
import fs from 'node:fs';
import path from 'node:path';
import { STALE_AFTER_MS, isAlive, ownerFromName } from '../core/owner.js';
import { rootLogger } from '../core/log.js';
import { freezerStateFile, hostPidsOf, thaw } from '../sandbox/cgroup.js';
import { clearFreezeRecord, readFreezeRecord, staleFreezeVerdict } from './freeze-owner.js';

/** Scratch with no owner in its name is removed only once older than this (it may be a live older Crab's). */
export const UNOWNED_SCRATCH_GRACE_MS = STALE_AFTER_MS;
/** The prefix of restore staging directories beside a sandbox's upper. */
export const RESTORE_STAGING_PREFIX = 'upper.restore';

export interface RecoveryReport {
  thawed: string[];
  /** Sandboxes left frozen because a dead owner's CRIU dump still runs (thawed on a later look). */
  deferred: string[];
  removed: string[];
  problems: string[];
}

export function emptyReport(): RecoveryReport {
  return { thawed: [], deferred: [], removed: [], problems: [] };
}

/** Undoes what dead Crab processes left: every sandbox under `sandboxesDir`, and `storeTmpDir`. */
export async function recoverAfterCrash(sandboxesDir: string, storeTmpDir: string): Promise<RecoveryReport> {
  const rep = emptyReport();
  for (const id of listDir(sandboxesDir)) await recoverSandbox(id, path.join(sandboxesDir, id), rep);
  await removeDeadEntries(storeTmpDir, rep, false);
  if (rep.thawed.length || rep.removed.length || rep.deferred.length) {
    rootLogger.warn({ thawed: rep.thawed, deferred: rep.deferred, removed: rep.removed.length }, 'undid what a crashed Crab process left');
  }
  return rep;
}

/** One sandbox: a stale freeze (thawed), and scratch of dead owners. */
export async function recoverSandbox(id: string, root: string, rep: RecoveryReport = emptyReport()): Promise<RecoveryReport> {
  try {
    const record = readFreezeRecord(root);
    if (record) {
      const alive = isAlive(record);
      const frozen = !alive && freezerFrozen(id);
      const verdict = staleFreezeVerdict({ frozen, record, ownerAlive: alive, tracedByCriu: !alive && frozen && tracedByCriu(id) });
      if (verdict === 'thaw') {
        thaw(id);
        rep.thawed.push(id);
      }
      if (verdict === 'thaw' || verdict === 'clear') clearFreezeRecord(root);
      else if (!alive) rep.deferred.push(id);
    }
    await removeDeadEntries(path.join(root, 'ckpt'), rep, true);
    await removeDeadEntries(root, rep, true, (n) => n === RESTORE_STAGING_PREFIX || n.startsWith(`${RESTORE_STAGING_PREFIX}.`));
  } catch (err) {
    rep.problems.push(`${id}: ${(err as Error).message}`);
  }
  return rep;
}

function freezerFrozen(id: string): boolean {
  try {
    return fs.readFileSync(freezerStateFile(id), 'utf8').trim() !== 'THAWED';
  } catch {
    return false; // no freezer cgroup: the sandbox is not running
  }
}

/** True when a CRIU process ptraces one of the sandbox's tasks (a dump is under way). */
function tracedByCriu(id: string): boolean {
  for (const pid of hostPidsOf(id)) {
    try {
      const tracer = Number(/^TracerPid:\s*(\d+)/m.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? 0);
      if (tracer > 1 && fs.readFileSync(`/proc/${tracer}/comm`, 'utf8').trim() === 'criu') return true;
    } catch {
      // the task or its tracer exited meanwhile
    }
  }
  return false;
}

/** Whether an entry's owner (from its name) is gone; entries without one count as gone once older than the grace. */
export function ownedByDead(p: string, nowMs = Date.now()): boolean {
  const owner = ownerFromName(path.basename(p));
  if (owner) return !isAlive(owner);
  try {
    return nowMs - fs.lstatSync(p).mtimeMs >= UNOWNED_SCRATCH_GRACE_MS;
  } catch {
    return false; // gone meanwhile
  }
}

/** Entries of `dir` (those `which` selects) whose owner is dead; async: a dump's pages file may be 100s of MiB. */
async function removeDeadEntries(dir: string, rep: RecoveryReport, recursive: boolean, which: (name: string) => boolean = () => true): Promise<void> {
  for (const name of listDir(dir)) {
    if (!which(name)) continue;
    const p = path.join(dir, name);
    if (!ownedByDead(p)) continue;
    await fs.promises.rm(p, { recursive, force: true });
    rep.removed.push(p);
  }
}

function listDir(dir: string): string[] {
  try {
    return fs.readdirSync(dir);
  } catch {
    return []; // absent
  }
}
