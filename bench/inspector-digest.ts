/**
 * Cost of the process probe's memory digest (sha256 of writable private memory via /proc/PID/mem)
 * against the cheap signals (stat + schedstat). Spawns node children holding N MiB of written heap.
 *   node dist/bench/inspector-digest.js [sizesMiB=16,64,256]
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { memoryDigest, snapshotProcesses } from '../src/inspector/process-probe.js';

const sizes = (process.argv[2] ?? '16,64,256').split(',').map(Number);

function holder(mib: number): Promise<ChildProcess> {
  const js = `const a=[];for(let i=0;i<${mib};i++){const b=Buffer.alloc(1<<20,i&255);a.push(b)}console.log('ready');setInterval(()=>a.length,1e6)`;
  const c = spawn(process.execPath, ['-e', js], { stdio: ['ignore', 'pipe', 'inherit'] });
  return new Promise((resolve) => c.stdout!.once('data', () => resolve(c)));
}

const rows: Record<string, unknown>[] = [];
for (const mib of sizes) {
  const c = await holder(mib);
  try {
    const pid = c.pid!;
    let t = performance.now();
    for (let i = 0; i < 20; i++) await snapshotProcesses([pid]);
    const cheap = (performance.now() - t) / 20;
    t = performance.now();
    const d = await memoryDigest(pid, 4 * 2 ** 30);
    const dig = performance.now() - t;
    t = performance.now();
    const d2 = await memoryDigest(pid, 4 * 2 ** 30);
    const dig2 = performance.now() - t;
    rows.push({
      'heap MiB': mib,
      'writable MiB read': Math.round((d?.bytes ?? 0) / 2 ** 20),
      'stat+schedstat ms': Math.round(cheap * 100) / 100,
      'digest ms': Math.round(dig),
      'digest ms (2nd)': Math.round(dig2),
      'MB/s': Math.round((d?.bytes ?? 0) / 1e6 / (dig2 / 1000)),
      'stable when idle': d?.digest === d2?.digest,
    });
  } finally {
    if (c.pid && c.pid > 1) c.kill('SIGKILL');
  }
}
console.table(rows);
