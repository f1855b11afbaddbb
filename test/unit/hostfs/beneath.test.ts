import test from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { CrabError } from '../../../src/core/errors.js';
import { Beneath, relParts } from '../../../src/hostfs/beneath.js';

/** A tree as a sandbox could leave it, and a host directory outside it that must stay untouched. */
function fixture(): { base: string; root: string; host: string; secret: string } {
  const base = fs.mkdtempSync(path.join(os.tmpdir(), 'crab-beneath-'));
  const root = path.join(base, 'root');
  const host = path.join(base, 'host');
  fs.mkdirSync(path.join(root, 'run/crab/r'), { recursive: true });
  fs.mkdirSync(host);
  const secret = path.join(host, 'secret');
  fs.writeFileSync(secret, 'host secret\n');
  fs.symlinkSync(host, path.join(root, 'dirlink')); // absolute: the host would follow it
  fs.symlinkSync(secret, path.join(root, 'run/crab/r/x.out'));
  fs.symlinkSync('../../..', path.join(root, 'run/crab/up'));
  return { base, root, host, secret };
}

function errCode(err: unknown): string | undefined {
  return err instanceof CrabError ? err.code : (err as NodeJS.ErrnoException).code;
}

test('relParts: root, plain paths; .. and NUL refused before any I/O', () => {
  assert.deepEqual(relParts(''), []);
  assert.deepEqual(relParts('/run//crab/./r/'), ['run', 'crab', 'r']);
  for (const bad of ['..', 'a/../b', '/run/crab/..', 'a\0b']) assert.throws(() => relParts(bad), (e: unknown) => errCode(e) === 'HOSTFS_BAD_PATH', bad);
});

test('Beneath: a symlink on the way is never followed, for reads, writes, listings and mkdir', () => {
  const f = fixture();
  try {
    const b = new Beneath(f.root);
    try {
      assert.equal(b.lstatSync('dirlink/secret'), null, 'not in the tree');
      assert.equal(b.readFileSync('dirlink/secret', 100), null);
      assert.deepEqual(b.readdirSync('dirlink'), []);
      assert.throws(() => b.writeNewFileSync('dirlink/new', 'x'), (e: unknown) => errCode(e) === 'ENOTDIR');
      assert.throws(() => b.mkdirpSync('dirlink/sub'), (e: unknown) => errCode(e) === 'HOSTFS_NOT_A_DIRECTORY' || errCode(e) === 'ENOTDIR');
      assert.throws(() => b.unlinkSync('dirlink/secret'), (e: unknown) => errCode(e) === 'ENOTDIR');
      // the last component: a link is what is there, not a file to read or write through
      assert.throws(() => b.readFileSync('run/crab/r/x.out', 100), (e: unknown) => errCode(e) === 'HOSTFS_NOT_A_FILE');
      assert.throws(() => b.writeNewFileSync('run/crab/r/x.out', 'x'), (e: unknown) => errCode(e) === 'EEXIST');
      b.replaceFileSync('run/crab/r/x.out', 'mine');
      assert.equal(fs.readFileSync(path.join(f.root, 'run/crab/r/x.out'), 'utf8'), 'mine', 'the link itself was replaced');
      // a relative link climbing out: as a directory on the way it is refused
      assert.equal(b.lstatSync('run/crab/up/host/secret'), null);
    } finally {
      b.close();
    }
    assert.equal(fs.readFileSync(f.secret, 'utf8'), 'host secret\n');
    assert.deepEqual(fs.readdirSync(f.host), ['secret'], 'nothing created on the host');
  } finally {
    fs.rmSync(f.base, { recursive: true, force: true });
  }
});

test('Beneath: a FIFO or a device where a file was is refused without blocking; a FIFO writer needs a FIFO', () => {
  const f = fixture();
  try {
    execFileSync('mkfifo', [path.join(f.root, 'run/crab/r/y.out')]);
    fs.writeFileSync(path.join(f.root, 'run/crab/ctl'), 'not a fifo');
    Beneath.withSync(f.root, (b) => {
      assert.throws(() => b.readFileSync('run/crab/r/y.out', 100), (e: unknown) => errCode(e) === 'HOSTFS_NOT_A_FILE');
      assert.throws(() => b.openFifoWriterSync('run/crab/ctl'), (e: unknown) => errCode(e) === 'HOSTFS_NOT_A_FIFO');
      fs.unlinkSync(path.join(f.root, 'run/crab/ctl'));
      fs.symlinkSync(f.secret, path.join(f.root, 'run/crab/ctl'));
      assert.throws(() => b.openFifoWriterSync('run/crab/ctl'), (e: unknown) => errCode(e) === 'HOSTFS_NOT_A_FIFO');
    });
    assert.equal(fs.readFileSync(f.secret, 'utf8'), 'host secret\n');
  } finally {
    fs.rmSync(f.base, { recursive: true, force: true });
  }
});

test('Beneath: readFileSync caps what it reads and says so', () => {
  const f = fixture();
  try {
    fs.writeFileSync(path.join(f.root, 'big'), Buffer.alloc(10_000, 0x61));
    const r = Beneath.withSync(f.root, (b) => b.readFileSync('big', 100))!;
    assert.equal(r.data.length, 100);
    assert.equal(r.size, 10_000);
    assert.equal(r.truncated, true);
  } finally {
    fs.rmSync(f.base, { recursive: true, force: true });
  }
});

test('Beneath.statInRootSync: symlinks resolve inside the root, as a chrooted process sees them', () => {
  const f = fixture();
  try {
    fs.mkdirSync(path.join(f.root, 'work/src'), { recursive: true });
    fs.symlinkSync('/work', path.join(f.root, 'w')); // absolute: inside the sandbox
    fs.symlinkSync('../../../../..', path.join(f.root, 'work/src/esc'));
    fs.symlinkSync('loop2', path.join(f.root, 'loop1'));
    fs.symlinkSync('loop1', path.join(f.root, 'loop2'));
    Beneath.withSync(f.root, (b) => {
      assert.equal(b.statInRootSync('/w/src')?.isDirectory(), true);
      assert.equal(b.statInRootSync('/dirlink'), null, `${f.host} exists on the host, not in the root`);
      assert.equal(b.statInRootSync('/work/src/esc/work')?.isDirectory(), true, '.. stops at the root');
      assert.equal(b.statInRootSync('/loop1'), null);
      assert.equal(b.statInRootSync('/work/../../..')?.isDirectory(), true, 'the root itself');
    });
  } finally {
    fs.rmSync(f.base, { recursive: true, force: true });
  }
});

test('Beneath.close: a descriptor still in use is closed when its operation ends, not before', async () => {
  const f = fixture();
  try {
    fs.writeFileSync(path.join(f.root, 'run/crab/r/z'), 'z');
    const b = new Beneath(f.root);
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const op = b.at('run/crab/r/z', async (p) => {
      await gate;
      return fs.readFileSync(p, 'utf8');
    });
    b.close();
    release();
    assert.equal(await op, 'z', 'the path still named the same directory');
    assert.throws(() => b.lstatSync('run'), (e: unknown) => errCode(e) === 'HOSTFS_CLOSED');
  } finally {
    fs.rmSync(f.base, { recursive: true, force: true });
  }
});
