/**
 * @module Modes of CRAB_HOME. Nothing in it is for other host users: process images hold agents'
 * API keys, the upper dirs the agents' files, the catalog every sandbox's environment. CRAB_HOME
 * is 0700, and so is each directory directly in it (a second wall, should CRAB_HOME ever be opened
 * up for a user namespace's mapped root to traverse); files directly in it (the catalog and its
 * WAL) are 0600. Deeper entries keep their modes (chunks 0444, image trees as built): they are
 * only reachable through those 0700 directories. Applied whenever a runtime opens CRAB_HOME
 * (CLI, daemon start; `scripts/setup.sh` makes CRAB_HOME 0700 before it writes anything), so an
 * install made before this rule is fixed on its next start.
 */
import fs from 'node:fs';
import path from 'node:path';

/** The mode an entry of CRAB_HOME should have: its owner's bits kept, group's and others' dropped. Pure. */
export function privateMode(mode: number): number {
  return mode & 0o7700 & ~0o6000; // no setuid/setgid bits either: nothing here is meant to be executed as another user
}

export interface ModeFix {
  path: string;
  from: number;
  to: number;
}

/**
 * Creates CRAB_HOME (0700) if missing and takes group and other permissions away from it and from
 * every entry directly in it. Returns what it changed. Symlinks are not followed (lchmod does not
 * exist on Linux: a symlink's own mode means nothing, and what it points to is not ours to change).
 */
export function secureStateDir(home: string): ModeFix[] {
  fs.mkdirSync(home, { recursive: true, mode: 0o700 });
  const fixes: ModeFix[] = [];
  const fix = (p: string) => {
    let st: fs.Stats;
    try {
      st = fs.lstatSync(p);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return; // removed meanwhile
      throw err;
    }
    if (st.isSymbolicLink() || st.isSocket()) return; // the daemon's socket is made 0600 by the daemon itself
    const from = st.mode & 0o7777;
    const to = privateMode(from);
    if (from === to) return;
    fs.chmodSync(p, to);
    fixes.push({ path: p, from, to });
  };
  fix(home);
  for (const name of fs.readdirSync(home)) fix(path.join(home, name));
  return fixes;
}
