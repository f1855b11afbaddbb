/**
 * @module Whether a sandbox hit its memory limit: a compiler OOM-killed at the limit fails a run
 * with "stdout lacks …", and the reason must say that the limit, not the mode, did it.
 * Read from the sandbox's memory cgroup: v2 `memory.events` (max, oom_kill), or v1
 * `memory.failcnt` (times usage hit the limit) and `memory.oom_control` (oom_kill).
 */
import fs from 'node:fs';
import path from 'node:path';
import { CGROUP_PARENT } from '../sandbox/cgroup.js';

export interface MemoryPressure {
  /** Times the usage hit the limit (the kernel reclaimed or failed a charge). */
  limitHits: number;
  /** Processes the OOM killer killed in the sandbox. */
  oomKills: number;
}

export const NO_PRESSURE: MemoryPressure = { limitHits: 0, oomKills: 0 };

function field(text: string | null, key: string): number {
  const m = text && new RegExp(`^${key} (\\d+)$`, 'm').exec(text);
  return m ? Number(m[1]) : 0;
}

/** Pure: the pressure the cgroup files say (v2 `memory.events` first; v1 failcnt and oom_control otherwise). */
export function parseMemoryPressure(files: { events?: string | null; failcnt?: string | null; oomControl?: string | null }): MemoryPressure {
  if (files.events) return { limitHits: field(files.events, 'max'), oomKills: field(files.events, 'oom_kill') };
  return { limitHits: Number(files.failcnt?.trim() || 0) || 0, oomKills: field(files.oomControl ?? null, 'oom_kill') };
}

export function addPressure(a: MemoryPressure, b: MemoryPressure): MemoryPressure {
  return { limitHits: a.limitHits + b.limitHits, oomKills: a.oomKills + b.oomKills };
}

function read(p: string): string | null {
  try {
    return fs.readFileSync(p, 'utf8');
  } catch {
    return null; // this hierarchy or file does not exist here
  }
}

/** The memory pressure of a running sandbox's cgroup (its counters start at zero with each start or restore). */
export function memoryPressure(sandboxId: string): MemoryPressure {
  const v2 = path.join('/sys/fs/cgroup/unified', CGROUP_PARENT, sandboxId, 'memory.events');
  const v1 = path.join('/sys/fs/cgroup/memory', CGROUP_PARENT, sandboxId);
  return parseMemoryPressure({ events: read(v2), failcnt: read(path.join(v1, 'memory.failcnt')), oomControl: read(path.join(v1, 'memory.oom_control')) });
}

/** What a failed run's reason adds when the sandbox hit its limit. */
export function pressureNote(p: MemoryPressure, limitBytes: number): string | null {
  if (!p.oomKills && !p.limitHits) return null;
  const mib = Math.round(limitBytes / 2 ** 20);
  return `the sandbox hit its memory limit of ${mib} MiB (${p.oomKills} OOM kill${p.oomKills === 1 ? '' : 's'}, ${p.limitHits} time${p.limitHits === 1 ? '' : 's'} at the limit): raise it with --memory`;
}
