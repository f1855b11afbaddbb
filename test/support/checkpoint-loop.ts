/**
 * A stand-in daemon for crash tests: takes checkpoints of one sandbox in a loop, printing
 * "start N" before and "commit N <id>" after each, until killed or `count` are done.
 * Usage: node checkpoint-loop.js SANDBOX COUNT
 */
import { checkpointer } from './cr.js';
import { manager } from './sandboxes.js';
import { recoverSandbox } from '../../src/checkpoint/crash-recovery.js';

const [sandboxId, countText] = process.argv.slice(2);
const cr = await checkpointer();
const m = manager();
// the sandbox a killed predecessor left frozen is thawed (its scratch removed); its store/tmp
// files are left, so the test sees what the kills add up to before a full recovery pass
await recoverSandbox(sandboxId!, m.dirs(sandboxId!).root);
const kinds = ['fs', 'process', 'fs', 'full'] as const;
for (let i = 0; i < Number(countText); i++) {
  process.stdout.write(`start ${i}\n`);
  await m.exec(sandboxId!, `echo ${process.pid}-${i} >> /root/log; head -c $((RANDOM * 8)) /dev/urandom > /root/blob${i % 5}`, { session: 'main' });
  const r = await cr.take(sandboxId!, { kind: kinds[i % kinds.length]!, turn: i });
  process.stdout.write(`commit ${i} ${r.checkpoint.id}\n`);
}
