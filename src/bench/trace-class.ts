/**
 * @module Shell traces and heavy ones. The paper's claims are about shell-intensive and
 * code-repair sessions; a bench that also replays a 64 MiB log, a 5000-file tree or a server
 * reports its figures on both, and on the shell traces alone. A trace is classed by the end
 * state of its no-fault reference run, so a user's own traces are classed the same way.
 *
 * Heavy: at the end a process besides the agent's shell still runs (a server, a worker, a job:
 * its memory is checkpointed again whenever it changes, in every mode), or the writable layer
 * holds a lot (the bytes are the data's, whatever the policy). Otherwise a shell trace.
 */
import type { FinalState } from './final-state.js';

export const HEAVY_LAYER_BYTES = 16 * 2 ** 20;
export const HEAVY_LAYER_ENTRIES = 1000;

export type TraceClass = 'shell' | 'heavy';

export interface TraceClassing {
  class: TraceClass;
  /** Why a trace is heavy (null for a shell trace). */
  why: string | null;
}

/**
 * Classes a trace by its reference run's end state. `shells` are the command lines of the
 * agent's own shells (a persistent session is one process that lives as long as the sandbox).
 */
export function classifyTrace(final: Pick<FinalState, 'files' | 'processes'>, shells: readonly string[]): TraceClassing {
  const why: string[] = [];
  const others = final.processes.filter((p) => !shells.includes(p));
  if (others.length) why.push(`${others.length} background process${others.length === 1 ? '' : 'es'} (${others[0]!.slice(0, 40)})`);
  const entries = Object.values(final.files);
  // A file's description is `f MODE SIZE HASH` (or `f MODE pid-of …`, a few bytes).
  const bytes = entries.reduce((a, d) => a + (d.startsWith('f ') ? Number(d.split(' ')[2]) || 0 : 0), 0);
  if (bytes >= HEAVY_LAYER_BYTES) why.push(`${Math.round(bytes / 2 ** 20)} MiB of files`);
  if (entries.length >= HEAVY_LAYER_ENTRIES) why.push(`${entries.length} files`);
  return why.length ? { class: 'heavy', why: why.join(', ') } : { class: 'shell', why: null };
}
