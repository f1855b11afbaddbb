/**
 * A stand-in Crab process for kill -9 tests: one C/R operation on one sandbox, then exit.
 * Usage: node ckpt-child.js hang-after-dump SANDBOX   (full checkpoint; prints "frozen" once the
 *          CRIU image is written with the sandbox still frozen, then waits forever)
 *        node ckpt-child.js take SANDBOX KIND          (prints "done ID")
 *        node ckpt-child.js rollback SANDBOX CKPT      (prints "done")
 */
import { checkpointer } from './cr.js';

const [mode, sandboxId, arg] = process.argv.slice(2) as [string, string, string | undefined];
const cr = await checkpointer();
if (mode === 'hang-after-dump') {
  await cr.take(sandboxId, {
    kind: 'full',
    afterDump: async () => {
      process.stdout.write('frozen\n');
      setInterval(() => undefined, 1 << 30); // keeps the process alive: it is killed here, by the test, with the sandbox frozen
      await new Promise(() => undefined);
    },
  });
} else if (mode === 'take') {
  const r = await cr.take(sandboxId, { kind: (arg ?? 'full') as 'full' | 'fs' | 'process' });
  process.stdout.write(`done ${r.checkpoint.id}\n`);
} else if (mode === 'rollback') {
  await cr.rollback(sandboxId, arg!);
  process.stdout.write('done\n');
} else {
  throw new Error(`unknown mode ${mode}`);
}
process.exit(0);
