/**
 * @module The final state a run is judged by: a hash of the writable layer (Crab's control files
 * and run-dependent caches left out), the processes by command line, and the session shell's
 * state digest.
 */
import { span } from '../core/prof.js';
import fs from 'node:fs';
import path from 'node:path';
import { createHash } from 'node:crypto';
import type { SandboxManager } from '../sandbox/sandbox-manager.js';
import { processesOf } from '../sandbox/cgroup.js';
import { hashFileBeneath } from '../fssnap/tree-hash.js';
import { Beneath } from '../hostfs/beneath.js';

/** Paths whose content depends on when a command ran, not on what it did. */
const VOLATILE = [/^run\/crab(\/|$)/, /(^|\/)__pycache__(\/|$)/, /^var\/log(\/|$)/, /^var\/cache\/ldconfig(\/|$)/, /^root\/\.(cache|python_history|bash_history)(\/|$)/];

export interface FinalState {
  filesHash: string;
  /** Path → description (type, mode, size, content hash) of every entry of the writable layer. */
  files: Record<string, string>;
  /** Paths that changed while the final state was read (still being written by a live process). */
  live?: string[];
  processes: string[];
  shell: string | null;
}

/**
 * The writable layer's entries. A directory the upper only holds because something was created
 * or copied up below it (same mode as in a lower layer) is not an entry of its own: CRIU, for one,
 * copies up /tmp during a dump.
 */
export async function upperEntries(upper: string, lowerDirs: readonly string[] = [], pidNames: ReadonlyMap<string, string> = new Map()): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  // The layers are the sandbox's (and an image's): read beneath each, following nothing in them.
  const lowers = lowerDirs.map((l) => new Beneath(l, `the image layer ${l}`));
  try {
    const sameAsLower = async (r: string, mode: number) => {
      for (const l of lowers) {
        const st = await l.lstat(r); // null: not in this lower
        if (st?.isDirectory() && Number(st.mode & 0o7777n) === mode) return true;
      }
      return false;
    };
    await Beneath.with(upper, async (tree) => {
      // Asynchronous throughout: the bench process runs the engine and the proxy of the other runs
      // meanwhile, and a synchronous read of a 64 MiB log or 5000 files would stall their gates.
      const walk = async (rel: string) => {
        const names = (await tree.readdir(rel)).sort();
        for (const n of names) {
          const r = rel ? `${rel}/${n}` : n;
          if (VOLATILE.some((re) => re.test(r))) continue;
          const st = await tree.lstat(r);
          if (!st) continue; // removed by a live process meanwhile: the second read reports it
          const mode = Number(st.mode & 0o7777n);
          if (st.isDirectory()) {
            if (!(await sameAsLower(r, mode))) out[r] = `d ${mode}`;
            await walk(r);
          } else if (st.isSymbolicLink()) {
            out[r] = `l ${await tree.readlink(r)}`;
          } else if (st.isFile()) {
            // A pid file (*.pid) names a process: compared by what it names (a recovery re-starts it under
            // another pid). Only by name: a counter that happens to equal a live pid is data, not a pid.
            const named = n.endsWith('.pid') && st.size <= 16n ? pidNames.get(((await tree.readFile(r, 16)) ?? Buffer.alloc(0)).toString('latin1').trim()) : undefined;
            out[r] = named ? `f ${mode} pid-of ${named}` : `f ${mode} ${st.size} ${((await hashFileBeneath(tree, r, Number(st.size))) ?? 'gone').slice(0, 16)}`;
          } else {
            out[r] = `o ${st.mode} ${st.rdev}`; // whiteouts, fifos
          }
        }
      };
      await walk('');
    }, `the writable layer ${upper}`);
  } finally {
    for (const l of lowers) l.close();
  }
  return out;
}

/** How long the layer is watched for files that background processes keep changing. */
const LIVE_WATCH_MS = 300;

export async function finalState(m: SandboxManager, id: string, session: string | null): Promise<FinalState> {
  const processes: string[] = [];
  const pidNames = new Map<string, string>();
  for (const p of processesOf(id)) {
    if (p.nsPid === 1) continue;
    try {
      const cmdline = fs.readFileSync(`/proc/${p.hostPid}/cmdline`, 'utf8').replace(/\0+$/, '').split('\0').join(' ');
      // Empty: a zombie not reaped yet. Crab's own request runners may still be exiting.
      if (cmdline && !cmdline.startsWith('bash --noprofile --norc /run/crab/r/')) {
        processes.push(cmdline);
        pidNames.set(String(p.nsPid), cmdline);
      }
    } catch {
      continue; // exited meanwhile
    }
  }
  const files = await span('fs.upperEntries', () => upperEntries(m.dirs(id).upper, m.record(id).lowerDirs, pidNames));
  // Files a live process keeps rewriting (a counter, a log) have no single final value.
  await new Promise((r) => setTimeout(r, LIVE_WATCH_MS));
  const again = await upperEntries(m.dirs(id).upper, m.record(id).lowerDirs, pidNames);
  const live = Object.keys({ ...files, ...again }).filter((p) => files[p] !== again[p]);
  return {
    filesHash: createHash('sha256').update(JSON.stringify(files)).digest('hex'),
    files,
    live,
    processes: processes.sort(),
    shell: session ? m.channel(id).sessionState(session) : null,
  };
}

/** Paths whose entries differ between two states (e.g. two no-fault runs: timestamps, inode numbers in .git/index). */
export function differingPaths(a: FinalState, b: FinalState): Set<string> {
  const out = new Set<string>();
  for (const p of new Set([...Object.keys(a.files), ...Object.keys(b.files)])) if (a.files[p] !== b.files[p]) out.add(p);
  return out;
}

/**
 * What two no-fault runs disagree on: those paths, and the directories in which entries come and
 * go from run to run (git's objects/ named by commit hashes that embed timestamps).
 */
export interface Noise {
  paths: ReadonlySet<string>;
  volatileDirs: ReadonlySet<string>;
  /** The two no-fault runs already disagree on processes / shell state (e.g. a pid kept in a variable). */
  processes?: boolean;
  shell?: boolean;
}

export function noiseBetween(a: FinalState, b: FinalState): Noise {
  const paths = differingPaths(a, b);
  const volatileDirs = new Set<string>();
  for (const p of paths) if (!(p in a.files) || !(p in b.files)) volatileDirs.add(path.posix.dirname(p));
  return { paths, volatileDirs, processes: JSON.stringify(a.processes) !== JSON.stringify(b.processes), shell: a.shell !== b.shell };
}

function isNoise(p: string, want: FinalState, got: FinalState, noise: Noise): boolean {
  if (noise.paths.has(p) || want.live?.includes(p) || got.live?.includes(p)) return true;
  if (p in want.files && p in got.files) return false;
  for (let q = path.posix.dirname(p); q !== '.' && q !== '/'; q = path.posix.dirname(q)) if (noise.volatileDirs.has(q)) return true;
  return false;
}

/** Why two final states differ (ignoring noise), or null when equal. */
export function stateDifference(want: FinalState, got: FinalState, noise: Noise = { paths: new Set(), volatileDirs: new Set() }): string | null {
  const diff = [...differingPaths(want, got)].filter((p) => !isNoise(p, want, got, noise));
  if (diff.length) {
    const show = diff.slice(0, 3).map((p) => `${p}: ${want.files[p] ?? 'absent'} → ${got.files[p] ?? 'absent'}`);
    return `files differ from the no-fault run (${diff.length}): ${show.join('; ')}`;
  }
  if (!noise.processes && JSON.stringify(want.processes) !== JSON.stringify(got.processes)) {
    const missing = want.processes.filter((p) => !got.processes.includes(p));
    const extra = got.processes.filter((p) => !want.processes.includes(p));
    return `processes differ (missing ${JSON.stringify(missing)}, extra ${JSON.stringify(extra)})`;
  }
  if (!noise.shell && want.shell !== got.shell) return 'shell state (cwd, variables, functions, jobs) differs';
  return null;
}

/** Everything any of the noises counts as noise. */
export function mergeNoise(...noises: Noise[]): Noise {
  return {
    paths: new Set(noises.flatMap((n) => [...n.paths])),
    volatileDirs: new Set(noises.flatMap((n) => [...n.volatileDirs])),
    processes: noises.some((n) => n.processes),
    shell: noises.some((n) => n.shell),
  };
}
