/**
 * @module The checkpoint a turn boundary needs, from the turn's effects. Pure.
 *
 * | turn did                                          | granularity |
 * |---------------------------------------------------|-------------|
 * | first boundary of a session                       | full        |
 * | anything unknown (lost events, helper restart…)   | full        |
 * | processes started / exited / changed (± files)    | process     |
 * | files only, with an in-sandbox agent              | process     |
 * | files only                                        | fs          |
 * | nothing, first turn after a restore               | fs (rescan) |
 * | nothing                                           | skip        |
 */
import type { TurnEffects } from './inspector.js';
import type { ProcessDiff } from './process-probe.js';

export type Granularity = 'full' | 'process' | 'fs' | 'skip';

export interface GranularityInput {
  /** No checkpoint of this sandbox exists yet. */
  first: boolean;
  /** The inspector's report; null when there is none (inspector unavailable). */
  effects: TurnEffects | null;
  /** Optional process-state diff (process-probe), for processes that ran without syscalls we follow. */
  probe?: ProcessDiff | null;
  /**
   * An in-sandbox agent was left out of the probe (its memory changes every turn). Restoring an
   * fs checkpoint would pair new files with the agent's memory from an older process image, and
   * the agent would redo writes: so file changes take a process checkpoint. Skips stay skips: an
   * agent restored from before read-only turns only redoes reads.
   */
  agentInside?: boolean;
  /**
   * The sandbox was restored since its last checkpoint, and the inspector follows it only from
   * after the restore: the restored processes' first writes may be missing from its path list. So
   * the whole writable layer is compared, and a turn that would skip takes an fs checkpoint.
   */
  afterRestore?: boolean;
}

export interface GranularityDecision {
  granularity: Granularity;
  /** Short, stable reasons (for logs, metrics and the timeline UI). */
  reasons: string[];
  /** For 'fs'/'process': whether `fs.changedPaths` lists every changed path (else diff the whole upper). */
  pathsComplete: boolean;
}

export function fsChanged(e: TurnEffects): boolean {
  return e.fs.changedPaths.length > 0 || e.fs.unresolved > 0 || e.fs.overflow || e.fs.bytesWritten > 0;
}

export function processesChanged(e: TurnEffects, probe?: ProcessDiff | null): string[] {
  const r: string[] = [];
  if (e.processes.started > 0) r.push('process-started');
  if (e.processes.exited > 0) r.push('process-exited');
  if (e.processes.changed) r.push('process-changed');
  if (e.listening.length > 0) r.push('listening-socket');
  if (probe?.changed) r.push('process-ran');
  return r;
}

export function decideGranularity(input: GranularityInput): GranularityDecision {
  const { first, effects: e, probe } = input;
  if (first) return { granularity: 'full', reasons: ['first-boundary'], pathsComplete: false };
  if (!e) return { granularity: 'full', reasons: ['no-report'], pathsComplete: false };
  if (e.unknown !== null) return { granularity: 'full', reasons: [`unknown: ${e.unknown}`], pathsComplete: false };
  const pathsComplete = !input.afterRestore && e.fs.unresolved === 0 && !e.fs.overflow;
  const proc = processesChanged(e, probe);
  const fs = fsChanged(e);
  if (proc.length > 0) return { granularity: 'process', reasons: fs ? [...proc, 'fs-changed'] : proc, pathsComplete };
  if (fs && input.agentInside) return { granularity: 'process', reasons: ['fs-changed', 'agent-inside'], pathsComplete };
  if (fs) return { granularity: 'fs', reasons: ['fs-changed'], pathsComplete };
  if (input.afterRestore) return { granularity: 'fs', reasons: ['after-restore'], pathsComplete: false };
  return { granularity: 'skip', reasons: [], pathsComplete: true };
}
