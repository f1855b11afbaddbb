/**
 * The eBPF helper's overhead on syscall-heavy commands in a sandbox (issue 5 goal: ≤ 5%).
 *
 * Fair on a small, shared machine: each round runs every command in three modes, in an order
 * that rotates from round to round, so drift (page cache, other work on the host) hits all modes
 * alike:
 *   none  no helper process at all (the baseline)
 *   idle  the helper loaded and attached, the sandbox's cgroup not registered
 *   reg   the helper following the sandbox (the real case)
 * Each command is timed inside the sandbox (date +%s%N around it, so runc exec's own cost is left
 * out) and per mode the median and the spread (min–max) are printed, with the overhead of the
 * medians and the median of the per-round paired ratios (reg/none of the same round).
 * Run: node dist/bench/inspector-overhead.js [rounds=7] [only=substring]   (root)
 */
import { crabPaths } from '../src/core/paths.js';
import { SandboxManager } from '../src/sandbox/sandbox-manager.js';
import { EbpfInspector } from '../src/inspector/ebpf-inspector.js';
import { CGROUP_PARENT } from '../src/sandbox/cgroup.js';
import { percentile } from '../src/bench/replay.js';
import type { TurnEffects } from '../src/inspector/inspector.js';

const rounds = Number(process.argv[2] ?? 7);
const only = process.argv[3];
const ALL: Record<string, string> = {
  'find / -xdev': 'find / -xdev >/dev/null 2>&1',
  'tar of /usr to /dev/null': 'tar -cf /dev/null /usr 2>/dev/null',
  'write 20k small files, delete them': 'mkdir -p /tmp/w && cd /tmp/w && for i in $(seq 1 20000); do echo $i > f$i; done; cd / && rm -rf /tmp/w',
};
const CMDS = Object.fromEntries(Object.entries(ALL).filter(([k]) => !only || k.includes(only)));
type Mode = 'none' | 'idle' | 'reg';
const MODES: Mode[] = ['none', 'idle', 'reg'];

const m = new SandboxManager(crabPaths());
const id = `bench-insp-${process.pid}`;
const cgroupPath = `/sys/fs/cgroup/unified/${CGROUP_PARENT}/${id}`;

/** Wall time of the command measured inside the sandbox, in ms. */
async function timeCmd(cmd: string): Promise<number> {
  const r = await m.exec(id, `s=$(date +%s%N); ( ${cmd} ); e=$(date +%s%N); echo "T=$((e - s))"`, { timeoutMs: 600_000 });
  const t = /T=(\d+)/.exec(r.stdout);
  if (!t) throw new Error(`no timing from '${cmd}': ${r.stderr}`);
  return Number(t[1]) / 1e6;
}

const times: Record<string, Record<Mode, number[]>> = {};
for (const k of Object.keys(CMDS)) times[k] = { none: [], idle: [], reg: [] };
const reports: TurnEffects[] = [];

async function runMode(mode: Mode): Promise<void> {
  let ins: EbpfInspector | null = null;
  if (mode !== 'none') {
    ins = new EbpfInspector();
    await ins.start();
    if (mode === 'reg') await ins.add(id, { path: cgroupPath });
  }
  try {
    for (const [name, cmd] of Object.entries(CMDS)) {
      if (ins && mode === 'reg') await ins.effects(id); // a turn boundary before each command
      times[name]![mode].push(await timeCmd(cmd));
      if (ins && mode === 'reg') reports.push(await ins.effects(id));
    }
  } finally {
    await ins?.close();
  }
}

const fmt = (x: number) => x.toFixed(0).padStart(6);
const pct = (a: number, b: number) => `${a >= b ? '+' : ''}${(100 * (a / b - 1)).toFixed(1)}%`;

await m.create({ name: id, ephemeral: true });
try {
  for (const cmd of Object.values(CMDS)) await timeCmd(cmd); // warm the page cache
  for (let r = 0; r < rounds; r++) {
    const order = [...MODES.slice(r % 3), ...MODES.slice(0, r % 3)];
    for (const mode of order) await runMode(mode);
    process.stderr.write(`round ${r + 1}/${rounds} (${order.join(',')}) done\n`);
  }
  console.log(`inspector overhead, ${rounds} interleaved rounds; ms inside the sandbox, median [min–max] (goal ≤ 5%):`);
  for (const [name, t] of Object.entries(times)) {
    const med = (xs: number[]) => percentile(xs, 50);
    const span = (xs: number[]) => `${fmt(med(xs))} [${Math.min(...xs).toFixed(0)}–${Math.max(...xs).toFixed(0)}]`;
    const paired = t.reg.map((x, i) => x / t.none[i]!);
    console.log(`  ${name}`);
    console.log(`    no helper      ${span(t.none)}`);
    console.log(`    helper, idle   ${span(t.idle)}  ${pct(med(t.idle), med(t.none))}`);
    console.log(`    helper, follow ${span(t.reg)}  ${pct(med(t.reg), med(t.none))}  (paired per round: median ${pct(med(paired), 1)}, range ${pct(Math.min(...paired), 1)}…${pct(Math.max(...paired), 1)})`);
  }
  const events = reports.reduce((a, e) => a + (e.events ?? 0), 0);
  const dropped = reports.reduce((a, e) => a + e.dropped, 0);
  const unknown = reports.filter((e) => e.unknown).map((e) => e.unknown);
  const paths = reports.map((e) => e.fs.changedPaths.length);
  console.log(`  followed turns: ${reports.length}, events seen: ${events}, dropped: ${dropped}, unknown: ${unknown.length ? unknown.join('; ') : 'none'}, changed paths per turn: ${paths.join(',')}`);
} finally {
  await m.remove(id);
}
