/** Test helpers for real sandboxes: a manager on the shared CRAB_HOME, exact cleanup by name prefix. */
import fs from 'node:fs';
import path from 'node:path';
import { crabPaths } from '../../src/core/paths.js';
import { SandboxManager } from '../../src/sandbox/sandbox-manager.js';
import { cgroupDirsOf } from '../../src/sandbox/cgroup.js';
import { SqliteCatalog } from '../../src/catalog/sqlite-catalog.js';

export const paths = crabPaths();

export function manager(): SandboxManager {
  return new SandboxManager(paths);
}

/**
 * Removes every sandbox whose id starts with `prefix` (and only those), and their checkpoints
 * from the catalog: checkpoints outlive their sandbox by design, so tests forget their own.
 */
export async function removeByPrefix(m: SandboxManager, prefix: string): Promise<void> {
  const ids = new Set<string>();
  for (const n of fs.existsSync(paths.sandboxes) ? fs.readdirSync(paths.sandboxes) : []) if (n.startsWith(prefix)) ids.add(n);
  for (const c of await m.runc.list()) if (c.id.startsWith(prefix)) ids.add(c.id);
  for (const id of ids) await m.destroy(id).catch((err: unknown) => console.error(`cleanup ${id}:`, err));
  if (!fs.existsSync(paths.catalog)) return;
  const catalog = SqliteCatalog.open(paths.catalog);
  try {
    for (const s of await catalog.listSandboxes()) {
      if (s.id.startsWith(prefix)) await catalog.deleteSandbox(s.id, { cascade: true }).catch((err: unknown) => console.error(`cleanup catalog ${s.id}:`, err));
    }
  } finally {
    await catalog.close();
  }
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
