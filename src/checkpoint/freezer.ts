/** @module Freezing a sandbox's cgroup (v1 freezer): the one frozen moment a checkpoint is taken from. */
import fs from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { CrabError } from '../core/errors.js';
import { freezerStateFile, thaw } from '../sandbox/cgroup.js';

export { thaw };

export function freezerState(sandboxId: string): string {
  return fs.readFileSync(freezerStateFile(sandboxId), 'utf8').trim();
}

/** Freezes every task of the sandbox and waits until the kernel reports FROZEN. */
export async function freeze(sandboxId: string, timeoutMs = 5000): Promise<void> {
  const file = freezerStateFile(sandboxId);
  const deadline = Date.now() + timeoutMs;
  fs.writeFileSync(file, 'FROZEN');
  for (let delay = 0.2; ; delay = Math.min(delay * 2, 10)) {
    if (fs.readFileSync(file, 'utf8').trim() === 'FROZEN') return;
    if (Date.now() > deadline) {
      thaw(sandboxId);
      throw new CrabError('CKPT_FREEZE_TIMEOUT', 'unavailable', `sandbox '${sandboxId}' did not freeze within ${timeoutMs} ms`, 'A task may be stuck in uninterruptible I/O; retry.');
    }
    fs.writeFileSync(file, 'FROZEN'); // v1 may stay FREEZING while new tasks race in: ask again
    await sleep(delay);
  }
}
