/**
 * C/R chain figures (issue 4): a sandbox with ~100 MB of files and a ~50 MB process.
 * Prints time and new bytes of a first full checkpoint, an fs checkpoint after one file edit,
 * a process checkpoint of an idle process, restore and rollback latency, fork latency and
 * unique bytes per fork. Run: node dist/bench/cr-bench.js  (root; uses CRAB_HOME)
 */
import { execFileSync } from 'node:child_process';
import { setTimeout as sleep } from 'node:timers/promises';
import { crabPaths } from '../src/core/paths.js';
import { SandboxManager } from '../src/sandbox/sandbox-manager.js';
import { LocalContentStore, type LocalContentStoreOptions } from '../src/store/local-content-store.js';
import { SqliteCatalog } from '../src/catalog/sqlite-catalog.js';
import { Checkpointer } from '../src/checkpoint/checkpointer.js';

const MiB = 1024 * 1024;
const fmt = (n: number) => (n >= MiB ? `${(n / MiB).toFixed(1)} MiB` : `${(n / 1024).toFixed(1)} KiB`);
const duBytes = (dir: string) => Number(execFileSync('du', ['-sb', dir]).toString().split(/\s/)[0]);

const paths = crabPaths();
const m = new SandboxManager(paths);
const cr = new Checkpointer(m, await LocalContentStore.open(paths.store), SqliteCatalog.open(paths.catalog));
const id = `bench-cr-${process.pid}`;
const rows: Array<[string, string, string]> = [];
const cleanup: string[] = [id];
try {
  await m.create({ name: id, packages: ['python3'], memoryLimitBytes: 1024 * MiB });
  const s = (cmd: string, timeoutMs = 120_000) => m.exec(id, cmd, { session: 'main', timeoutMs });
  // ~100 MB of files: 400 × 192 KiB random + 400 × 64 KiB text.
  await s('mkdir -p /data && cd /data && for i in $(seq 1 400); do head -c 196608 /dev/urandom > r$i.bin; yes "line $i of a text file" | head -c 65536 > t$i.txt; done');
  // ~50 MB process: python3 holding 50 MiB of random bytes, idle.
  await s("python3 -c 'import os,time; b=bytearray(os.urandom(50*2**20)); open(\"/tmp/ready\",\"w\").close(); time.sleep(10**6)' &");
  while ((await s('test -e /tmp/ready && echo y')).stdout !== 'y\n') await sleep(100);

  const full = await cr.take(id, { kind: 'full', turn: 1 });
  rows.push(['first full checkpoint', `${Math.round(full.totalMs)} ms (frozen ${Math.round(full.frozenMs)} ms)`, `${fmt(full.newBytes)} new of ${fmt(full.logicalBytes)}`]);
  await s('echo edited >> /data/t1.txt');
  const fsck = await cr.take(id, { kind: 'fs', turn: 2, hintPaths: ['/data/t1.txt'] });
  rows.push(['fs checkpoint, one file edited (hinted)', `${Math.round(fsck.totalMs)} ms (frozen ${Math.round(fsck.frozenMs)} ms)`, `${fmt(fsck.newBytes)} new`]);
  await s('echo edited again >> /data/t2.txt');
  const fsFull = await cr.take(id, { kind: 'fs', turn: 3 });
  rows.push(['fs checkpoint, one file edited (full rescan)', `${Math.round(fsFull.totalMs)} ms`, `${fmt(fsFull.newBytes)} new`]);
  // A new process builds on the parent's chunks: trusting the parent's recorded check (recent),
  // and with a trust period of 0, reading every chunk of the parent first (the worst case).
  const coldFs = await new Checkpointer(m, await LocalContentStore.open(paths.store), cr.catalog).take(id, { kind: 'fs', turn: 3, hintPaths: [] });
  rows.push(['fs checkpoint, nothing changed, new process', `${Math.round(coldFs.totalMs)} ms`, `${fmt(coldFs.newBytes)} new`]);
  const strictStore = await LocalContentStore.open(paths.store, { verifiedTrustMs: 0 } as LocalContentStoreOptions);
  const strictFs = await new Checkpointer(m, strictStore, cr.catalog).take(id, { kind: 'fs', turn: 3, hintPaths: [] });
  rows.push(['fs checkpoint, nothing changed, new process, every parent chunk read', `${Math.round(strictFs.totalMs)} ms`, `${fmt(strictFs.newBytes)} new`]);
  const proc = await cr.take(id, { kind: 'process', turn: 4, hintPaths: [] });
  const ratio = ((100 * proc.newBytes) / full.newBytes).toFixed(2);
  rows.push(['process checkpoint, idle process', `${Math.round(proc.totalMs)} ms (dump ${Math.round(proc.dumpMs)} ms)`, `${fmt(proc.newBytes)} new = ${ratio}% of the first (goal < 5%)`]);

  await m.stop(id);
  const restore = await cr.restore(proc.checkpoint.id);
  rows.push(['restore after kill (files + processes)', `${Math.round(restore.totalMs)} ms (files ${Math.round(restore.fsMs)}, processes ${Math.round(restore.processMs)})`, '']);
  const rollback = await cr.rollback(id, full.checkpoint.id);
  rows.push(['rollback to turn 1', `${Math.round(rollback.totalMs)} ms (files ${Math.round(rollback.fsMs)}, processes ${Math.round(rollback.processMs)})`, '']);
  const forks = await cr.fork(full.checkpoint.id, 3, { prefix: `${id}-fork` });
  cleanup.push(...forks.map((f) => f.sandboxId));
  const forkMs = forks.map((f) => f.totalMs).sort((a, b) => a - b)[1]!;
  const forkBytes = duBytes(m.dirs(forks[0]!.sandboxId).upper);
  rows.push(['fork (median of 3)', `${Math.round(forkMs)} ms (goal ≤ 100 ms)`, `${fmt(forkBytes)} unique (own writable layer; goal ≤ 1 MiB)`]);

  // A small process image (~12 MB class), as in the restore goal.
  const small = `${id}-small`;
  cleanup.push(small);
  await m.create({ name: small, packages: ['python3'] });
  await m.exec(small, 'python3 -m http.server 8000 >/dev/null 2>&1 & (while :; do sleep 1; done) &', { session: 'main' });
  await sleep(500);
  const sck = await cr.take(small, { kind: 'full' });
  const sizes: number[] = [];
  for (let i = 0; i < 3; i++) sizes.push((await cr.rollback(small, sck.checkpoint.id)).totalMs);
  sizes.sort((a, b) => a - b);
  rows.push([`rollback, small sandbox (${fmt(sck.logicalBytes)} checkpoint)`, `${Math.round(sizes[1]!)} ms median of 3 (goal ≤ 150 ms)`, '']);
} finally {
  for (const x of cleanup) await m.destroy(x).catch(() => undefined);
}
const w0 = Math.max(...rows.map((r) => r[0].length));
const w1 = Math.max(...rows.map((r) => r[1].length));
console.log(`C/R bench on ${new Date().toISOString()} (${(await import('node:os')).cpus().length} cores)`);
for (const [a, b, c] of rows) console.log(`${a.padEnd(w0)}  ${b.padEnd(w1)}  ${c}`);
