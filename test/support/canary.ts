/**
 * Host canaries for the escape suite: a host directory outside every sandbox holding a secret
 * file, and a check that nothing read through a sandbox changed it, linked it or added to it.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

export interface Canary {
  /** The host directory (absolute). */
  dir: string;
  /** A file in it, `secret`, holding `secret`. */
  file: string;
  secret: string;
  /** Asserts the directory holds only the secret file, with its bytes, mode, inode, link count and times unchanged. */
  assertUntouched(what: string): void;
  remove(): void;
}

export function makeCanary(prefix: string, content?: string): Canary {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `${prefix}-canary-`));
  const file = path.join(dir, 'secret');
  const secret = content ?? `crab canary ${randomBytes(16).toString('hex')}\n`;
  fs.writeFileSync(file, secret, { mode: 0o600 });
  const before = fs.statSync(file, { bigint: true });
  const dirBefore = fs.statSync(dir, { bigint: true });
  return {
    dir,
    file,
    secret,
    assertUntouched(what: string) {
      assert.deepEqual(fs.readdirSync(dir), ['secret'], `${what}: nothing created in or removed from ${dir}`);
      const st = fs.statSync(file, { bigint: true });
      assert.equal(fs.readFileSync(file, 'utf8'), secret, `${what}: the host file's bytes`);
      assert.equal(st.ino, before.ino, `${what}: the same inode`);
      assert.equal(st.nlink, 1n, `${what}: no hard link to the host file`);
      assert.equal(st.mode, before.mode, `${what}: its mode`);
      assert.equal(st.uid, before.uid, `${what}: its owner`);
      assert.equal(st.mtimeNs, before.mtimeNs, `${what}: its mtime`);
      assert.equal(st.ctimeNs, before.ctimeNs, `${what}: its ctime (no chmod, chown, link or write)`);
      assert.equal(fs.statSync(dir, { bigint: true }).mtimeNs, dirBefore.mtimeNs, `${what}: the directory's mtime`);
    },
    remove() {
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}
