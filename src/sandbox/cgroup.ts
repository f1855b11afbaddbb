/** @module Cgroup paths of a sandbox and the host view of its processes (runc cgroupfs driver, hybrid v1/v2 host). */
import fs from 'node:fs';
import path from 'node:path';

const CGROUP_ROOT = '/sys/fs/cgroup';
/** v1 controllers runc creates a directory in, plus the controller-less v2 hierarchy. */
const HIERARCHIES = ['memory', 'pids', 'freezer', 'cpu', 'cpuacct', 'cpuset', 'blkio', 'devices', 'systemd', 'unified'];

export const CGROUP_PARENT = 'crab';

export function cgroupsPathOf(sandboxId: string): string {
  return `/${CGROUP_PARENT}/${sandboxId}`;
}

/** The v1 freezer's state file of the sandbox's cgroup (FROZEN / FREEZING / THAWED). */
export function freezerStateFile(sandboxId: string): string {
  return path.join(CGROUP_ROOT, 'freezer', CGROUP_PARENT, sandboxId, 'freezer.state');
}

/** Lets the sandbox's frozen tasks run again. */
export function thaw(sandboxId: string): void {
  fs.writeFileSync(freezerStateFile(sandboxId), 'THAWED');
}

/** Every cgroup directory that may exist for the sandbox (for cleanup and checks). */
export function cgroupDirsOf(sandboxId: string): string[] {
  return HIERARCHIES.map((h) => path.join(CGROUP_ROOT, h, CGROUP_PARENT, sandboxId));
}

/** The cgroup v2 id (inode of the unified dir) that bpf_get_current_cgroup_id() reports. */
export function cgroupV2Id(sandboxId: string): number | null {
  try {
    return fs.statSync(path.join(CGROUP_ROOT, 'unified', CGROUP_PARENT, sandboxId)).ino;
  } catch {
    return null; // not created (sandbox not running)
  }
}

/** Host pids of every process in the sandbox. */
export function hostPidsOf(sandboxId: string): number[] {
  try {
    return fs
      .readFileSync(path.join(CGROUP_ROOT, 'pids', CGROUP_PARENT, sandboxId, 'cgroup.procs'), 'utf8')
      .split('\n')
      .filter(Boolean)
      .map(Number);
  } catch {
    return []; // no cgroup: no processes
  }
}

export interface HostProcess {
  hostPid: number;
  nsPid: number;
  ppid: number;
  comm: string;
}

/** Host-side facts about the processes of a sandbox (pid inside the sandbox, parent, name). */
export function processesOf(sandboxId: string): HostProcess[] {
  const out: HostProcess[] = [];
  for (const hostPid of hostPidsOf(sandboxId)) {
    try {
      const status = fs.readFileSync(`/proc/${hostPid}/status`, 'utf8');
      const field = (k: string) => status.match(new RegExp(`^${k}:\\s*(.*)$`, 'm'))?.[1] ?? '';
      const nspids = field('NSpid').split(/\s+/).map(Number);
      out.push({ hostPid, nsPid: nspids[nspids.length - 1] ?? 0, ppid: Number(field('PPid')), comm: field('Name') });
    } catch {
      continue; // exited between listing and reading
    }
  }
  return out;
}

/** Removes the sandbox's cgroup directories that runc left (after a crash). Only empty ones can go. */
export function removeCgroupDirs(sandboxId: string): string[] {
  const left: string[] = [];
  for (const dir of cgroupDirsOf(sandboxId)) {
    if (!fs.existsSync(dir)) continue;
    try {
      fs.rmdirSync(dir);
    } catch {
      left.push(dir); // still has processes: reported to the caller
    }
  }
  return left;
}
