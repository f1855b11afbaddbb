/**
 * Inspector throughput and overhead (root): a tight write loop, a create/unlink loop and a getpid
 * loop, run (a) with no helper, (b) with the helper but outside any registered cgroup, (c) inside
 * a registered cgroup. Reports syscalls/s, events/s the helper took, and drops.
 *   node dist/bench/inspector-events.js [writes=2000000] [creates=100000]
 */
import { spawn } from 'node:child_process';
import { mkdir, mkdtemp, rm, rmdir } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { REPO_ROOT } from '../src/core/paths.js';
import { EbpfInspector } from '../src/inspector/ebpf-inspector.js';
import { testPrefix } from '../test/support/root.js';

const LOAD = path.join(REPO_ROOT, 'native', 'bin', 'crab-inspector-load');
const WRITES = Number(process.argv[2] ?? 2_000_000);
const CREATES = Number(process.argv[3] ?? 100_000);

function load(mode: string, n: number, dir: string, cgroup?: string): Promise<number> {
  // with a cgroup: the shell moves itself in, then execs the load (so only the load runs there)
  const cmd = cgroup ? `echo $$ > ${cgroup}/cgroup.procs && exec ${LOAD} ${mode} ${n} ${dir}` : `exec ${LOAD} ${mode} ${n} ${dir}`;
  return new Promise((resolve, reject) => {
    const c = spawn('sh', ['-c', cmd], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    c.stdout.on('data', (b: Buffer) => (out += b.toString()));
    c.on('exit', (code) => (code === 0 ? resolve((JSON.parse(out) as { ns: number }).ns) : reject(new Error(`load ${mode} exited ${code}`))));
  });
}

const rate = (n: number, ns: number) => Math.round(n / (ns / 1e9));

async function main(): Promise<void> {
  const prefix = testPrefix('bench');
  const cg = path.join('/sys/fs/cgroup/unified', prefix);
  const dir = await mkdtemp(path.join(os.tmpdir(), `${prefix}-`));
  await mkdir(cg);
  const ins = new EbpfInspector();
  const rows: Record<string, unknown>[] = [];
  try {
    for (const [mode, n] of [['getpid', WRITES], ['write', WRITES], ['create', CREATES]] as const) {
      const base = await load(mode, n, dir);
      await ins.start();
      const unreg = await load(mode, n, dir);
      await ins.add(prefix, { path: cg });
      await ins.effects(prefix);
      const s0 = Number((await ins.stats()).events);
      const t0 = performance.now();
      const reg = await load(mode, n, dir, cg);
      const e = await ins.effects(prefix);
      const wall = performance.now() - t0;
      const events = Number((await ins.stats()).events) - s0;
      await ins.remove(prefix);
      await ins.close();
      (ins as unknown as { closed: boolean }).closed = false; // reuse the object for the next round
      rows.push({
        mode,
        n,
        'no helper /s': rate(n, base),
        'unregistered /s': rate(n, unreg),
        'registered /s': rate(n, reg),
        'unreg overhead %': Math.round(((unreg - base) / base) * 1000) / 10,
        'reg overhead %': Math.round(((reg - base) / base) * 1000) / 10,
        'helper events': events,
        'events/s': Math.round(events / (wall / 1000)),
        dropped: e.dropped,
        unknown: e.unknown,
        paths: e.fs.changedPaths.length,
      });
    }
  } finally {
    await ins.close().catch(() => undefined);
    await rmdir(cg).catch(() => undefined);
    await rm(dir, { recursive: true, force: true });
  }
  console.table(rows);
}

await main();
