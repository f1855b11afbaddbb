/**
 * @module `crab demo`: the README's main job. A sandbox with a persistent shell, a background
 * job and files is checkpointed, killed with everything in it, and restored; then forked.
 */
import type { CrabService } from '../api/service.js';
import { formatBytes } from './output.js';

const TURN1 = [
  'mkdir -p /work && cd /work',
  'export GREETING=hello; greet() { echo "$GREETING from $(pwd) in $(hostname)"; }',
  '(n=0; while :; do n=$((n+1)); echo $n > /work/counter; sleep 0.1; done) &',
  "printf 'line 1\\n' > notes.txt; ln -s notes.txt latest; rm /etc/issue",
];
const TURN2 = ["printf 'line 2\\n' >> notes.txt"];
const CHECK = 'greet; jobs | head -1; cat notes.txt; readlink latest; test -e /etc/issue || echo "/etc/issue: deleted"; echo "counter=$(cat counter)"';

export async function runDemo(service: CrabService, opts: { keep?: boolean }): Promise<void> {
  const out = (s: string) => process.stdout.write(s);
  const run = async (id: string, cmd: string) => {
    const r = await service.exec(id, cmd, { session: 'demo', timeoutMs: 30_000 });
    out(`  $ ${cmd}\n${(r.stdout + r.stderr).replace(/^/gm, '    ').replace(/ +$/, '')}`);
    return r;
  };
  let t = performance.now();
  const sb = await service.createSandbox({ ephemeral: !opts.keep });
  out(`created sandbox ${sb.id} in ${Math.round(performance.now() - t)} ms\n\nturn 1:\n`);
  const cleanup: string[] = [sb.id];
  try {
    for (const cmd of TURN1) await run(sb.id, cmd);
    await run(sb.id, CHECK);
    const c1 = await service.checkpoint(sb.id, { kind: 'full', turn: 1 });
    out(`checkpoint ${c1.checkpoint.id}: full, ${formatBytes(c1.logicalBytes)} logical, ${formatBytes(c1.newBytes)} new, ${Math.round(c1.totalMs)} ms (sandbox frozen ${Math.round(c1.frozenMs)} ms)\n\nturn 2:\n`);
    for (const cmd of TURN2) await run(sb.id, cmd);
    const c2 = await service.checkpoint(sb.id, { kind: 'fs', turn: 2, hintPaths: ['/work/notes.txt'] });
    out(`checkpoint ${c2.checkpoint.id}: files only, ${formatBytes(c2.newBytes)} new, ${Math.round(c2.totalMs)} ms\n\n`);
    await service.stopSandbox(sb.id);
    out(`killed every process of ${sb.id} (crash)\n`);
    t = performance.now();
    const r = await service.restore(c2.checkpoint.id, {});
    out(`restored ${r.checkpointId} in ${Math.round(r.totalMs)} ms (files ${Math.round(r.fsMs)} ms, processes ${Math.round(r.processMs)} ms); the session goes on:\n`);
    await run(sb.id, CHECK);
    const forks = await service.fork(c1.checkpoint.id, 2);
    cleanup.push(...forks.map((f) => f.sandboxId));
    out(`\nforked ${forks.map((f) => `${f.sandboxId} (${Math.round(f.totalMs)} ms)`).join(', ')} from turn 1:\n`);
    for (const f of forks) {
      const r2 = await service.exec(f.sandboxId, 'echo "$(cat /work/notes.txt | wc -l) line(s) of notes, counter=$(cat /work/counter)"', { session: 'demo' });
      out(`  ${f.sandboxId}: ${r2.stdout}`);
    }
  } finally {
    if (!opts.keep) {
      for (const id of cleanup) await service.removeSandbox(id);
      out(`\nremoved ${cleanup.join(', ')}\n`);
    }
  }
}
