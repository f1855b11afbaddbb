/**
 * @module Opt-in span profiler (CRAB_PROF=1): per named span, count, wall time, this process's
 * CPU and its reaped children's CPU (runc, CRIU, helpers). Printed to stderr at exit.
 */
import fs from 'node:fs';

const enabled = !!process.env.CRAB_PROF;
interface Acc { n: number; wall: number; cpu: number; child: number }
const spans = new Map<string, Acc>();

function childTicks(): number {
  try {
    const s = fs.readFileSync('/proc/self/stat', 'utf8');
    const f = s.slice(s.lastIndexOf(')') + 2).split(' ');
    return (Number(f[13]) + Number(f[14])) * 10; // cutime + cstime, ms at 100 Hz
  } catch {
    return 0;
  }
}

export async function span<T>(name: string, fn: () => Promise<T>): Promise<T> {
  if (!enabled) return fn();
  const w0 = performance.now();
  const c0 = process.cpuUsage();
  const k0 = childTicks();
  try {
    return await fn();
  } finally {
    const c = process.cpuUsage(c0);
    const a = spans.get(name) ?? { n: 0, wall: 0, cpu: 0, child: 0 };
    a.n++;
    a.wall += performance.now() - w0;
    a.cpu += (c.user + c.system) / 1000;
    a.child += childTicks() - k0;
    spans.set(name, a);
  }
}

if (enabled) {
  process.on('exit', () => {
    const c = process.cpuUsage();
    const rows = [...spans.entries()].sort((a, b) => b[1].wall - a[1].wall);
    const lines = rows.map(([k, a]) => `${k.padEnd(28)} n=${String(a.n).padStart(5)} wall=${(a.wall / 1000).toFixed(2).padStart(8)}s cpu=${(a.cpu / 1000).toFixed(2).padStart(7)}s child=${(a.child / 1000).toFixed(2).padStart(7)}s`);
    lines.push(`TOTAL node cpu=${((c.user + c.system) / 1e6).toFixed(2)}s children=${(childTicks() / 1000).toFixed(2)}s`);
    process.stderr.write(`\n[crab prof]\n${lines.join('\n')}\n`);
  });
}

/** Adds a sandbox's cgroup CPU so far (its own workload: setup, actions, CRIU inside it) to span `name`. */
export function noteSandboxCpu(name: string, sandboxId: string): void {
  if (!enabled) return;
  try {
    const ns = Number(fs.readFileSync(`/sys/fs/cgroup/cpuacct/crab/${sandboxId}/cpuacct.usage`, 'utf8'));
    const a = spans.get(name) ?? { n: 0, wall: 0, cpu: 0, child: 0 };
    a.n++;
    a.child += ns / 1e6;
    spans.set(name, a);
  } catch {
    // no cgroup (not running)
  }
}
