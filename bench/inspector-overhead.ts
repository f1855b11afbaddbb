/**
 * The eBPF helper's overhead on syscall-heavy commands in a sandbox (issue 5 goal: ≤ 5%).
 *
 * Fair on a small, shared machine: every sample of a command is taken in three modes back to
 * back, in an order that rotates from sample to sample, so drift (page cache, other work on the
 * host) hits all modes alike:
 *   none  no helper process at all (the baseline)
 *   idle  the helper loaded and attached, the sandbox's cgroup not registered
 *   reg   the helper following the sandbox (the real case; a turn boundary before each sample)
 * Each sample is timed inside the sandbox with bash's `time` (runc exec's own cost is left out):
 * wall time, and the CPU time (user + sys) of the command, which is what the BPF programs add to
 * and is far less sensitive to other work on the host than wall time. The helper's own CPU time
 * (it runs beside the command) is measured from /proc and reported too. Short commands run several
 * times per sample (mean per run kept). Printed per mode: median [min–max]; overhead of the
 * medians against `none`, and the median of the per-sample paired ratios.
 * Run: node dist/bench/inspector-overhead.js [samples=7] [only=substring]   (root)
 *   INSPECTOR_BIN=path runs another helper binary (e.g. an older build, for before/after figures).
 */
import { readFileSync } from 'node:fs';
import { crabPaths } from '../src/core/paths.js';
import { SandboxManager } from '../src/sandbox/sandbox-manager.js';
import { EbpfInspector } from '../src/inspector/ebpf-inspector.js';
import { CGROUP_PARENT } from '../src/sandbox/cgroup.js';
import { percentile } from '../src/bench/replay.js';
import type { TurnEffects } from '../src/inspector/inspector.js';

const samples = Number(process.argv[2] ?? 7);
const only = process.argv[3];
// [command, runs per sample]: the short ones are repeated so that one sample is ~0.2 s
const ALL: Record<string, [string, number]> = {
  'find / -xdev': ['find / -xdev >/dev/null 2>&1', 10],
  'tar of /usr to /dev/null': ['tar -cf /dev/null /usr 2>/dev/null', 5],
  'write 20k small files, delete them': ['mkdir -p /tmp/w && cd /tmp/w && for i in $(seq 1 20000); do echo $i > f$i; done; cd / && rm -rf /tmp/w', 1],
};
const CMDS = Object.fromEntries(Object.entries(ALL).filter(([k]) => !only || k.includes(only)));
type Mode = 'none' | 'idle' | 'reg';
const MODES: Mode[] = ['none', 'idle', 'reg'];
interface Sample {
  wall: number;
  cpu: number;
  helperCpu: number;
}

const m = new SandboxManager(crabPaths());
const id = `bench-insp-${process.pid}`;
const cgroupPath = `/sys/fs/cgroup/unified/${CGROUP_PARENT}/${id}`;
const TICK_MS = 10; // USER_HZ

/** One sample: ms per run (wall, and user + sys CPU of the command). */
async function timeCmd([cmd, reps]: [string, number]): Promise<{ wall: number; cpu: number }> {
  const script = `TIMEFORMAT='T=%3R %3U %3S'; time ( for r in $(seq ${reps}); do ( ${cmd} ); done ) 2>&1`;
  const r = await m.exec(id, script, { timeoutMs: 600_000 });
  const t = /T=([\d.]+) ([\d.]+) ([\d.]+)/.exec(r.stdout + r.stderr);
  if (!t) throw new Error(`no timing from '${cmd}': ${r.stdout} ${r.stderr}`);
  return { wall: (1000 * Number(t[1])) / reps, cpu: (1000 * (Number(t[2]) + Number(t[3]))) / reps };
}

/** utime + stime of a process, in ms. */
function cpuOf(pid: number | null): number {
  if (!pid) return 0;
  try {
    const st = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = st.slice(st.lastIndexOf(')') + 2).split(' ');
    return (Number(f[11]) + Number(f[12])) * TICK_MS;
  } catch {
    return 0;
  }
}

const data: Record<string, Record<Mode, Sample[]>> = {};
for (const k of Object.keys(CMDS)) data[k] = { none: [], idle: [], reg: [] };
const reports: TurnEffects[] = [];

async function sample(mode: Mode, name: string): Promise<void> {
  const cmd = CMDS[name]!;
  let ins: EbpfInspector | null = null;
  try {
    if (mode !== 'none') {
      ins = new EbpfInspector(process.env.INSPECTOR_BIN ? { binary: process.env.INSPECTOR_BIN } : {});
      await ins.start();
      if (mode === 'reg') {
        await ins.add(id, { path: cgroupPath });
        await ins.effects(id); // a turn boundary
      }
    }
    const c0 = cpuOf(ins?.helperPid ?? null);
    const t = await timeCmd(cmd);
    if (ins && mode === 'reg') reports.push(await ins.effects(id));
    const helperCpu = (cpuOf(ins?.helperPid ?? null) - c0) / cmd[1];
    data[name]![mode].push({ ...t, helperCpu });
  } finally {
    await ins?.close();
  }
}

const med = (xs: number[]) => percentile(xs, 50);
const pct = (a: number, b: number) => `${a >= b ? '+' : ''}${(100 * (a / b - 1)).toFixed(1)}%`;
const span = (xs: number[]) => `${med(xs).toFixed(1).padStart(7)} [${Math.min(...xs).toFixed(1)}–${Math.max(...xs).toFixed(1)}]`.padEnd(30);

await m.create({ name: id, ephemeral: true });
try {
  for (const cmd of Object.values(CMDS)) await timeCmd(cmd); // warm the page cache
  let k = 0;
  for (let i = 0; i < samples; i++) {
    for (const name of Object.keys(CMDS)) {
      const order = [...MODES.slice(k % 3), ...MODES.slice(0, k % 3)];
      k++;
      for (const mode of order) await sample(mode, name);
    }
    process.stderr.write(`sample ${i + 1}/${samples} done\n`);
  }
  console.log(`inspector overhead: ${samples} samples per mode, modes interleaved per sample; ms per run, median [min–max] (goal ≤ 5%)`);
  for (const [name, d] of Object.entries(data)) {
    console.log(`  ${name}  (${CMDS[name]![1]} run(s) per sample)`);
    for (const what of ['wall', 'cpu'] as const) {
      const base = d.none.map((s) => s[what]);
      for (const mode of MODES) {
        const xs = d[mode].map((s) => s[what]);
        const paired = xs.map((x, i) => x / base[i]!);
        const label = `${what === 'wall' ? 'wall' : 'cpu '} ${mode.padEnd(4)}`;
        const helper = mode === 'none' ? '' : `  helper cpu ${med(d[mode].map((s) => s.helperCpu)).toFixed(1)} ms/run`;
        const over = mode === 'none' ? '' : `${pct(med(xs), med(base)).padStart(7)}  paired ${pct(med(paired), 1)} (${pct(Math.min(...paired), 1)}…${pct(Math.max(...paired), 1)})${what === 'cpu' ? helper : ''}`;
        console.log(`    ${label} ${span(xs)} ${over}`);
      }
    }
  }
  const events = reports.reduce((a, e) => a + (e.events ?? 0), 0);
  const dropped = reports.reduce((a, e) => a + e.dropped, 0);
  const unknown = [...new Set(reports.filter((e) => e.unknown).map((e) => e.unknown))];
  console.log(`  followed turns: ${reports.length}, events: ${events}, dropped: ${dropped}, unknown: ${unknown.length ? unknown.join('; ') : 'none'}`);
  console.log(`  changed paths per followed turn: ${reports.map((e) => e.fs.changedPaths.length).join(',')}`);
} finally {
  await m.remove(id);
}
