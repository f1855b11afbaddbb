/** @module Mounting a sandbox rootfs: overlayfs with the image's read-only lowers and the sandbox's own upper. */
import fs from 'node:fs';
import { run } from '../core/run.js';

export interface OverlayDirs {
  lowerDirs: string[];
  upper: string;
  work: string;
  merged: string;
}

export function isMounted(target: string): boolean {
  const mounts = fs.readFileSync('/proc/self/mountinfo', 'utf8');
  return mounts.split('\n').some((l) => l.split(' ')[4] === target);
}

export async function mountOverlay(d: OverlayDirs): Promise<void> {
  for (const p of [d.upper, d.work, d.merged]) fs.mkdirSync(p, { recursive: true });
  if (isMounted(d.merged)) return;
  await run(
    'mount',
    ['-t', 'overlay', 'overlay', '-o', `lowerdir=${d.lowerDirs.join(':')},upperdir=${d.upper},workdir=${d.work},redirect_dir=on,index=off`, d.merged],
    { errorCode: 'SANDBOX_MOUNT_FAILED' },
  );
}

export async function unmount(target: string): Promise<void> {
  if (!isMounted(target)) return;
  await run('umount', [target], { errorCode: 'SANDBOX_UNMOUNT_FAILED' }).catch(async () => {
    // Busy (a process still holds it open): detach it so cleanup can go on; it frees when the holder exits.
    await run('umount', ['-l', target], { errorCode: 'SANDBOX_UNMOUNT_FAILED' });
  });
}
