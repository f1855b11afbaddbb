/**
 * `crab sandbox create` latency on a cached image (goal < 300 ms), and remove latency.
 * Run: node dist/bench/sandbox-create.js [count]   (root; uses CRAB_HOME)
 */
import { crabPaths } from '../src/core/paths.js';
import { SandboxManager } from '../src/sandbox/sandbox-manager.js';
import { ensureImage } from '../src/image/image-builder.js';
import { BASE_IMAGE } from '../src/image/image-store.js';
import { percentile } from '../src/bench/replay.js';

const count = Number(process.argv[2] ?? 20);
const paths = crabPaths();
const m = new SandboxManager(paths);
await ensureImage(paths.images, BASE_IMAGE, []);
const create: number[] = [];
const remove: number[] = [];
for (let i = 0; i < count; i++) {
  const name = `bench-create-${process.pid}-${i}`;
  let t = performance.now();
  await m.create({ name, ephemeral: true });
  create.push(performance.now() - t);
  t = performance.now();
  await m.remove(name);
  remove.push(performance.now() - t);
}
const f = (xs: number[]) => `p50 ${percentile(xs, 50).toFixed(0)} ms, p90 ${percentile(xs, 90).toFixed(0)} ms, max ${Math.max(...xs).toFixed(0)} ms`;
console.log(`sandbox create on a cached image (${count}×, goal < 300 ms): ${f(create)}`);
console.log(`sandbox remove: ${f(remove)}`);
