/**
 * @module What a host crash does to a Crab host, done for real: every process of the daemon and
 * of its sandboxes is stopped at one instant (the v1 freezer) and killed by pid, then what a
 * reboot or a lost host takes goes too, and nothing else:
 * - gone: processes, mounts, cgroups, network namespaces and veths, runc's state, and each
 *   sandbox's directory (its record, bundle, checkpoint scratch and writable layer: local state
 *   of a host that is not coming back, or that is wiped at boot);
 * - kept: the store and the catalog (what a recovery may use), the images, and link address
 *   leases (a file per address in a host-wide directory; a recovery on the same host keeps its
 *   address).
 * Only processes in cgroups of the bench's own making (the daemon's) or the daemon's (its
 * sandboxes') are signalled, each by pid.
 */
import fs from 'node:fs';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { CrabPaths } from '../core/paths.js';
import { CrabError } from '../core/errors.js';
import { CGROUP_PARENT, freezerStateFile, hostPidsOf, removeCgroupDirs } from '../sandbox/cgroup.js';
import { removeLinkDevices, type SandboxLink } from '../sandbox/net-link.js';
import { unmount } from '../sandbox/overlay.js';

export interface CrashReport {
  /** Processes killed: the daemon's and the sandboxes'. */
  killed: number;
  /** Sandboxes whose local state was discarded. */
  sandboxes: string[];
  /** How long it took for everything to stop (freeze) and to be gone (kill). */
  freezeMs: number;
  killMs: number;
}

const FREEZE_WAIT_MS = 3000;
const KILL_WAIT_MS = 30_000;

function readPids(procsFile: string): number[] {
  try {
    return fs.readFileSync(procsFile, 'utf8').split('\n').filter(Boolean).map(Number);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return []; // no cgroup: no processes
    throw err;
  }
}

function writeState(freezerDir: string, state: 'FROZEN' | 'THAWED'): void {
  try {
    fs.writeFileSync(path.join(freezerDir, 'freezer.state'), state);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err; // gone: nothing to freeze
  }
}

function frozen(freezerDir: string): boolean {
  try {
    return fs.readFileSync(path.join(freezerDir, 'freezer.state'), 'utf8').trim() === 'FROZEN';
  } catch {
    return true; // gone: nothing left to freeze
  }
}

/** SIGKILL to each pid (never 0, 1 or a negative one): they are in cgroups of our own making. */
function killAll(pids: readonly number[]): number {
  let n = 0;
  for (const pid of pids) {
    if (!Number.isInteger(pid) || pid <= 1) continue;
    try {
      process.kill(pid, 'SIGKILL');
      n++;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ESRCH') throw err;
    }
  }
  return n;
}

/**
 * Kills every process of the given cgroups (freezer dir, procs files): frozen first, so none
 * forks meanwhile, SIGKILLed by pid, thawed to die. Resolves when all are gone.
 */
async function killFrozenSet(freezerDirs: readonly string[], procsFiles: readonly string[]): Promise<{ killed: number; freezeMs: number; killMs: number }> {
  const t0 = performance.now();
  for (const d of freezerDirs) writeState(d, 'FROZEN');
  for (const until = Date.now() + FREEZE_WAIT_MS; Date.now() < until && !freezerDirs.every(frozen); ) await sleep(5);
  const freezeMs = performance.now() - t0;
  let killed = 0;
  for (const f of procsFiles) killed += killAll(readPids(f));
  for (const d of freezerDirs) writeState(d, 'THAWED');
  for (const until = Date.now() + KILL_WAIT_MS; ; ) {
    const left = procsFiles.flatMap(readPids);
    if (!left.length) break;
    if (Date.now() > until) throw new CrabError('BENCH_CRASH_INCOMPLETE', 'internal', `processes outlived the host crash: ${left.slice(0, 10).join(' ')}`, 'See what holds them (ps -o pid,stat,wchan -p PID).');
    killAll(left); // forked between the freeze reading and the kill
    await sleep(10);
  }
  return { killed, freezeMs, killMs: performance.now() - t0 - freezeMs };
}

/** Kills every process of one of the bench's host cgroups (a daemon that would not stop). */
export async function killCgroup(freezerDir: string, pidsDir: string): Promise<void> {
  await killFrozenSet([freezerDir], [path.join(pidsDir, 'cgroup.procs')]);
}

/**
 * The crash of a host whose daemon runs in the `host` cgroups, with sandboxes `ids` under
 * `paths`: all their processes at once, then each sandbox's volatile and local state.
 */
export async function crashSandboxes(paths: CrabPaths, known: readonly string[], host: { hostFreezer: string; hostPids: string }): Promise<CrashReport> {
  // a sandbox the daemon was making or removing may have runc state and no directory (or the reverse)
  const runcRoot = path.join(paths.run, 'runc');
  const ids = [...new Set([...known, ...(fs.existsSync(runcRoot) ? fs.readdirSync(runcRoot) : [])])];
  const sandboxFreezers = ids.map((id) => path.dirname(freezerStateFile(id)));
  const sandboxProcs = ids.map((id) => path.join('/sys/fs/cgroup/pids', CGROUP_PARENT, id, 'cgroup.procs'));
  const k = await killFrozenSet([host.hostFreezer, ...sandboxFreezers], [path.join(host.hostPids, 'cgroup.procs'), ...sandboxProcs]);
  for (const id of ids) await discardSandbox(paths, id);
  return { killed: k.killed, sandboxes: [...ids], freezeMs: k.freezeMs, killMs: k.killMs };
}

/** What a reboot takes of one dead sandbox: mounts, its link's devices (not its lease), runc state, cgroups, and its directory. */
async function discardSandbox(paths: CrabPaths, id: string): Promise<void> {
  const root = path.join(paths.sandboxes, id);
  let link: SandboxLink | undefined;
  try {
    link = (JSON.parse(fs.readFileSync(path.join(root, 'sandbox.json'), 'utf8')) as { link?: SandboxLink }).link;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err; // a half-made sandbox has no record yet
  }
  // runc mounts the rootfs at criu-root in its state dir while CRIU dumps or restores: a crash then leaves it
  const runcDir = path.join(paths.run, 'runc', id);
  const mounts = fs
    .readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .map((l) => l.split(' ')[4])
    .filter((t): t is string => !!t && (t.startsWith(root + path.sep) || t.startsWith(runcDir + path.sep)))
    .sort((a, b) => b.length - a.length);
  for (const t of mounts) await unmount(t);
  if (link) await removeLinkDevices(link);
  await fs.promises.rm(runcDir, { recursive: true, force: true });
  const left = removeCgroupDirs(id);
  if (left.length) throw new CrabError('BENCH_CRASH_INCOMPLETE', 'internal', `cgroups of ${id} still in use after the crash: ${left.join(', ')}`, 'A process outlived the crash.');
  await fs.promises.rm(root, { recursive: true, force: true });
  if (hostPidsOf(id).length) throw new CrabError('BENCH_CRASH_INCOMPLETE', 'internal', `sandbox ${id} has processes after the crash`);
}
