/** Test helpers for real sandboxes: a manager on the shared CRAB_HOME, exact cleanup by name prefix. */
import fs from 'node:fs';
import path from 'node:path';
import { crabPaths } from '../../src/core/paths.js';
import { SandboxManager } from '../../src/sandbox/sandbox-manager.js';
import { cgroupDirsOf } from '../../src/sandbox/cgroup.js';

export const paths = crabPaths();

export function manager(): SandboxManager {
  return new SandboxManager(paths);
}

/** Removes every sandbox whose id starts with `prefix` (and only those). */
export async function removeByPrefix(m: SandboxManager, prefix: string): Promise<void> {
  const ids = new Set<string>();
  for (const n of fs.existsSync(paths.sandboxes) ? fs.readdirSync(paths.sandboxes) : []) if (n.startsWith(prefix)) ids.add(n);
  for (const c of await m.runc.list()) if (c.id.startsWith(prefix)) ids.add(c.id);
  for (const id of ids) await m.destroy(id).catch((err: unknown) => console.error(`cleanup ${id}:`, err));
}

/** What is left of sandbox `id` on the host: dirs, mounts, cgroups, runc containers. Empty when clean. */
export async function leftovers(m: SandboxManager, id: string): Promise<string[]> {
  const left: string[] = [];
  if (fs.existsSync(path.join(paths.sandboxes, id))) left.push(`dir ${id}`);
  const mounts = fs.readFileSync('/proc/self/mountinfo', 'utf8').split('\n').filter((l) => l.includes(`/sandboxes/${id}/`));
  if (mounts.length) left.push(`mounts ${mounts.length}`);
  for (const d of cgroupDirsOf(id)) if (fs.existsSync(d)) left.push(`cgroup ${d}`);
  if ((await m.runc.list()).some((c) => c.id === id)) left.push('runc container');
  return left;
}
