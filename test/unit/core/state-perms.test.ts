import test from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { privateMode, secureStateDir } from '../../../src/core/state-perms.js';

test('privateMode keeps the owner bits and drops group, other, setuid and setgid', () => {
  const rows: Array<[number, number]> = [
    [0o755, 0o700],
    [0o644, 0o600],
    [0o444, 0o400],
    [0o700, 0o700],
    [0o4755, 0o700],
    [0o1777, 0o1700],
  ];
  for (const [from, to] of rows) assert.equal(privateMode(from), to, from.toString(8));
});

test('secureStateDir makes CRAB_HOME and its top-level entries private, and leaves deeper ones and symlink targets alone', (t) => {
  const base = fs.mkdtempSync(path.join(os.tmpdir(), 'crab-perms-'));
  t.after(() => fs.rmSync(base, { recursive: true, force: true }));
  const home = path.join(base, 'home');
  const outside = path.join(base, 'outside');
  fs.mkdirSync(outside, { mode: 0o755 });
  fs.chmodSync(outside, 0o755);
  fs.mkdirSync(path.join(home, 'store', 'chunks'), { recursive: true, mode: 0o755 });
  fs.chmodSync(home, 0o755);
  fs.chmodSync(path.join(home, 'store'), 0o755);
  fs.writeFileSync(path.join(home, 'catalog.db'), '', { mode: 0o644 });
  fs.chmodSync(path.join(home, 'catalog.db'), 0o644);
  fs.writeFileSync(path.join(home, 'store', 'chunks', 'c'), '', { mode: 0o444 });
  fs.symlinkSync(outside, path.join(home, 'link'));
  const fixes = secureStateDir(home);
  const mode = (p: string) => fs.statSync(p).mode & 0o7777;
  assert.equal(mode(home), 0o700);
  assert.equal(mode(path.join(home, 'store')), 0o700);
  assert.equal(mode(path.join(home, 'catalog.db')), 0o600);
  assert.equal(mode(path.join(home, 'store', 'chunks', 'c')), 0o444, 'deeper entries keep their modes (reachable only through 0700 dirs)');
  assert.equal(mode(outside), 0o755, 'a symlink target outside is not changed');
  assert.equal(fixes.length, 3);
  assert.deepEqual(secureStateDir(home), [], 'idempotent');
  const fresh = path.join(base, 'fresh', 'home');
  secureStateDir(fresh);
  assert.equal(mode(fresh), 0o700, 'created 0700');
});
