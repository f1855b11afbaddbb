/**
 * @module The final state a run is judged by: a hash of the writable layer (Crab's control files
 * and run-dependent caches left out), the processes by command line, and the session shell's
 * state digest.
 */
import fs from 'node:fs';
import path from 'node:path';
import { createHash } from 'node:crypto';
import type { SandboxManager } from '../sandbox/sandbox-manager.js';
import { processesOf } from '../sandbox/cgroup.js';

/** Paths whose content depends on when a command ran, not on what it did. */
const VOLATILE = [/^run\/crab(\/|$)/, /(^|\/)__pycache__(\/|$)/, /^var\/log(\/|$)/, /^var\/cache\/ldconfig(\/|$)/, /^root\/\.(cache|python_history|bash_history)(\/|$)/];

export interface FinalState {
  filesHash: string;
  processes: string[];
  shell: string | null;
}

export function upperHash(upper: string): string {
  const h = createHash('sha256');
  const walk = (rel: string) => {
    const names = fs.readdirSync(path.join(upper, rel)).sort();
    for (const n of names) {
      const r = rel ? `${rel}/${n}` : n;
      if (VOLATILE.some((re) => re.test(r))) continue;
      const p = path.join(upper, r);
      const st = fs.lstatSync(p);
      if (st.isDirectory()) {
        h.update(`d ${r} ${st.mode & 0o7777}\n`);
        walk(r);
      } else if (st.isSymbolicLink()) {
        h.update(`l ${r} ${fs.readlinkSync(p)}\n`);
      } else if (st.isFile()) {
        h.update(`f ${r} ${st.mode & 0o7777} ${st.size} ${createHash('sha256').update(fs.readFileSync(p)).digest('hex')}\n`);
      } else {
        h.update(`o ${r} ${st.mode} ${st.rdev}\n`); // whiteouts, fifos
      }
    }
  };
  walk('');
  return h.digest('hex');
}

export function finalState(m: SandboxManager, id: string, session: string | null): FinalState {
  const processes: string[] = [];
  for (const p of processesOf(id)) {
    if (p.nsPid === 1) continue;
    try {
      processes.push(fs.readFileSync(`/proc/${p.hostPid}/cmdline`, 'utf8').replace(/\0+$/, '').split('\0').join(' '));
    } catch {
      continue; // exited meanwhile
    }
  }
  return {
    filesHash: upperHash(m.dirs(id).upper),
    processes: processes.sort(),
    shell: session ? m.channel(id).sessionState(session) : null,
  };
}

/** Why two final states differ, or null when equal. */
export function stateDifference(want: FinalState, got: FinalState): string | null {
  if (want.filesHash !== got.filesHash) return 'files differ from the no-fault run';
  if (JSON.stringify(want.processes) !== JSON.stringify(got.processes)) {
    const missing = want.processes.filter((p) => !got.processes.includes(p));
    const extra = got.processes.filter((p) => !want.processes.includes(p));
    return `processes differ (missing ${JSON.stringify(missing)}, extra ${JSON.stringify(extra)})`;
  }
  if (want.shell !== got.shell) return 'shell state (cwd, variables, functions, jobs) differs';
  return null;
}
