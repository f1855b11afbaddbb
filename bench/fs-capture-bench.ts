/**
 * What fs capture, rollback materialize and tree hashing cost on a many-file upper: a full scan,
 * a hinted capture of a few changed files, a materialize that links every unchanged file from the
 * old upper (a rollback), and a tree hash. Medians of --reps runs, in ms.
 * Run: npx tsc -p tsconfig.json && node dist/bench/fs-capture-bench.js [--files 5000] [--dirs 100] [--reps 5] [--dir /var/lib/crab/tmp]
 * Prints one JSON object. Needs root (trusted.* xattrs, the metadata helper).
 */
import { randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import { capture, materialize, treeHashOfDir } from '../src/fssnap/index.js';
import { LocalContentStore } from '../src/store/local-content-store.js';

function arg(name: string, def: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && process.argv[i + 1] ? process.argv[i + 1]! : def;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return Math.round(s[Math.floor(s.length / 2)]! * 10) / 10;
}

async function timed(fn: () => Promise<unknown>): Promise<number> {
  const t = performance.now();
  await fn();
  return performance.now() - t;
}

async function main(): Promise<void> {
  const files = Number(arg('files', '5000'));
  const dirs = Number(arg('dirs', '100'));
  const reps = Number(arg('reps', '5'));
  const parent = arg('dir', '/var/lib/crab/tmp');
  await fs.mkdir(parent, { recursive: true });
  const base = await fs.mkdtemp(path.join(parent, 'crab-fs-bench-'));
  try {
    const upper = path.join(base, 'upper');
    for (let d = 0; d < dirs; d++) await fs.mkdir(path.join(upper, 'proj', `d${d}`, 'sub'), { recursive: true });
    for (let f = 0; f < files; f++) await fs.writeFile(path.join(upper, 'proj', `d${f % dirs}`, 'sub', `f${f}.txt`), randomBytes(512 + (f % 7) * 300));
    const store = await LocalContentStore.open(path.join(base, 'store'));
    const full: number[] = [];
    const hinted: number[] = [];
    const rollback: number[] = [];
    const hash: number[] = [];
    let previous = (await capture(upper, store)).manifest;
    for (let r = 0; r < reps; r++) {
      full.push(await timed(() => capture(upper, store)));
      const changedFiles = Array.from({ length: 10 }, (_, i) => (r * 10 + i) % files).map((k) => `proj/d${k % dirs}/sub/f${k}.txt`);
      for (const p of changedFiles) await fs.appendFile(path.join(upper, p), `turn ${r}\n`);
      let m = previous;
      hinted.push(await timed(async () => (m = (await capture(upper, store, { previous, hintPaths: changedFiles })).manifest)));
      previous = m;
      const target = path.join(base, `restore-${r}`);
      rollback.push(await timed(() => materialize(previous, store, target, { reuse: upper })));
      await fs.rm(target, { recursive: true, force: true });
      hash.push(await timed(() => treeHashOfDir(upper)));
    }
    console.log(JSON.stringify({ files, dirs, reps, ms: { captureFull: median(full), captureHinted10: median(hinted), rollbackMaterializeLinked: median(rollback), treeHash: median(hash) } }, null, 2));
  } finally {
    await fs.rm(base, { recursive: true, force: true });
  }
}

await main();
