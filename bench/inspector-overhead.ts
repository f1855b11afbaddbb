/**
 * The eBPF helper's overhead on syscall-heavy commands in a sandbox (issue 5 goal: ≤ 5%):
 * the same commands timed with no helper, then with the helper following the sandbox.
 * Run: node dist/bench/inspector-overhead.js [rounds=5]   (root)
 */
import { crabPaths } from '../src/core/paths.js';
import { SandboxManager } from '../src/sandbox/sandbox-manager.js';
import { EbpfInspector } from '../src/inspector/ebpf-inspector.js';
import { CGROUP_PARENT } from '../src/sandbox/cgroup.js';
import { percentile } from '../src/bench/replay.js';

const rounds = Number(process.argv[2] ?? 5);
const CMDS = {
  'find / -xdev': 'find / -xdev >/dev/null 2>&1',
  'tar of /usr to /dev/null': 'tar -cf /dev/null /usr 2>/dev/null',
  'write 20k small files, delete them': 'mkdir -p /tmp/w && cd /tmp/w && for i in $(seq 1 20000); do echo $i > f$i; done; cd / && rm -rf /tmp/w',
};
const m = new SandboxManager(crabPaths());
const id = `bench-insp-${process.pid}`;
await m.create({ name: id, ephemeral: true });
const time = async () => {
  const out: Record<string, number> = {};
  for (const [name, cmd] of Object.entries(CMDS)) {
    const xs: number[] = [];
    for (let i = 0; i < rounds; i++) xs.push((await m.exec(id, cmd, { timeoutMs: 600_000 })).durationMs);
    out[name] = percentile(xs, 50);
  }
  return out;
};
try {
  await time(); // warm the page cache
  const without = await time();
  const ins = new EbpfInspector();
  await ins.start();
  await ins.add(id, { path: `/sys/fs/cgroup/unified/${CGROUP_PARENT}/${id}` });
  const withHelper = await time();
  const eff = await ins.effects(id);
  await ins.close();
  console.log(`inspector overhead, median of ${rounds} (goal ≤ 5%):`);
  for (const name of Object.keys(CMDS)) {
    console.log(`  ${name.padEnd(36)} ${without[name]!.toFixed(0).padStart(6)} ms → ${withHelper[name]!.toFixed(0).padStart(6)} ms  (${(100 * (withHelper[name]! / without[name]! - 1)).toFixed(1)}%)`);
  }
  console.log(`  events seen: ${eff.events ?? '?'}, dropped: ${eff.dropped}, turn unknown: ${eff.unknown ?? 'no'}`);
} finally {
  await m.remove(id);
}
