/** @module `crab demo`: the README's main job, showing a sandbox and a persistent session at work. */
import type { CrabService } from '../api/service.js';

const STEPS = [
  'mkdir -p /work && cd /work',
  'export GREETING=hello; greet() { echo "$GREETING from $(pwd) in $(hostname)"; }',
  "printf 'print(6*7)\\n' > answer.sh && sleep 300 &",
  'greet; jobs; ls -la /work',
  'echo "pid 1 here is: $(cat /proc/1/comm)"; cat /sys/class/net/lo/operstate',
];

export async function runDemo(service: CrabService, opts: { keep?: boolean }): Promise<void> {
  const out = (s: string) => process.stdout.write(s);
  const t0 = performance.now();
  const sb = await service.createSandbox({ ephemeral: !opts.keep });
  out(`created sandbox ${sb.id} in ${Math.round(performance.now() - t0)} ms\n`);
  try {
    for (const cmd of STEPS) {
      const r = await service.exec(sb.id, cmd, { session: 'demo', timeoutMs: 30_000 });
      out(`\n$ ${cmd}\n${r.stdout}${r.stderr}[exit ${r.exitCode}, ${r.durationMs} ms]\n`);
    }
  } finally {
    if (!opts.keep) {
      await service.removeSandbox(sb.id);
      out(`\nremoved sandbox ${sb.id}\n`);
    }
  }
}
