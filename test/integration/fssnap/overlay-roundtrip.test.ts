import test from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { run } from '../../../src/core/run.js';
import { LocalContentStore } from '../../../src/store/local-content-store.js';
import { SqliteCatalog } from '../../../src/catalog/sqlite-catalog.js';
import { capture, gcRootExpander, materialize, snapshot, treeHash, treeHashOfDir } from '../../../src/fssnap/index.js';
import type { Manifest } from '../../../src/fssnap/index.js';
import { applyMetadata } from '../../../src/fssnap/host-helper.js';
import { rootOnly, testPrefix } from '../../support/root.js';

interface Env {
  base: string;
  lower: string;
  store: LocalContentStore;
  mounts: string[];
  mount(upper: string, name: string): Promise<string>;
}

async function withEnv(fn: (env: Env) => Promise<void>): Promise<void> {
  const base = await fs.mkdtemp(path.join(os.tmpdir(), testPrefix('fssnap') + '-'));
  const mounts: string[] = [];
  try {
    const lower = path.join(base, 'lower');
    await populateLower(lower);
    const env: Env = {
      base,
      lower,
      store: await LocalContentStore.open(path.join(base, 'store')),
      mounts,
      async mount(upper, name) {
        const work = path.join(base, `${name}-work`);
        const merged = path.join(base, `${name}-merged`);
        await fs.mkdir(upper, { recursive: true });
        await fs.mkdir(work, { recursive: true });
        await fs.mkdir(merged, { recursive: true });
        await run('mount', ['-t', 'overlay', 'overlay', '-o', `lowerdir=${lower},upperdir=${upper},workdir=${work},redirect_dir=on`, merged]);
        mounts.push(merged);
        return merged;
      },
    };
    await fn(env);
  } finally {
    // unmount exactly what this test mounted, newest first, then remove its own directory
    for (const m of mounts.reverse()) await run('umount', [m]).catch(() => run('umount', ['-l', m]).catch(() => undefined));
    await fs.rm(base, { recursive: true, force: true });
  }
}

async function populateLower(lower: string): Promise<void> {
  await fs.mkdir(path.join(lower, 'etc'), { recursive: true });
  await fs.writeFile(path.join(lower, 'etc', 'config'), 'original\n');
  await fs.writeFile(path.join(lower, 'del.txt'), 'delete me\n');
  await fs.writeFile(path.join(lower, 'mode.txt'), 'mode\n');
  await fs.mkdir(path.join(lower, 'opaque', 'deep'), { recursive: true });
  await fs.writeFile(path.join(lower, 'opaque', 'old1'), '1');
  await fs.writeFile(path.join(lower, 'opaque', 'deep', 'old2'), '2');
  await fs.mkdir(path.join(lower, 'olddir', 'sub'), { recursive: true });
  await fs.writeFile(path.join(lower, 'olddir', 'a'), 'a');
  await fs.writeFile(path.join(lower, 'olddir', 'sub', 'b'), 'b');
  await fs.writeFile(path.join(lower, 'lowerfile'), randomBytes(10_000));
}

/** A turn's worth of changes, done through the merged view like a sandbox would. */
async function mutate(m: string): Promise<void> {
  await fs.writeFile(path.join(m, 'new.txt'), 'new\n');
  await fs.appendFile(path.join(m, 'etc', 'config'), 'edited\n'); // copy-up
  await fs.rename(path.join(m, 'olddir'), path.join(m, 'newdir')); // dir rename: redirect xattr
  await fs.rm(path.join(m, 'del.txt')); // whiteout
  await fs.rm(path.join(m, 'opaque'), { recursive: true });
  await fs.mkdir(path.join(m, 'opaque')); // opaque dir
  await fs.writeFile(path.join(m, 'opaque', 'fresh'), 'fresh');
  await fs.chmod(path.join(m, 'mode.txt'), 0o4750);
  await fs.writeFile(path.join(m, 'h1'), 'hard');
  await fs.link(path.join(m, 'h1'), path.join(m, 'h2'));
  await fs.link(path.join(m, 'lowerfile'), path.join(m, 'lowerlink')); // copy-up, then link
  await fs.symlink('etc/config', path.join(m, 'sym'));
  await fs.symlink('/nonexistent/target', path.join(m, 'dangling'));
  await run('mkfifo', [path.join(m, 'fifo')]);
  await fs.writeFile(path.join(m, 'owned'), 'x');
  await fs.chown(path.join(m, 'owned'), 1234, 5678);
  await fs.lchown(path.join(m, 'sym'), 42, 43);
  await fs.mkdir(path.join(m, 'run', 'crab'), { recursive: true });
  await fs.writeFile(path.join(m, 'run', 'crab', 'volatile'), randomBytes(16));
  await fs.writeFile(path.join(m, 'big.bin'), randomBytes(6 * 1024 * 1024));
  await fs.writeFile(path.join(m, 'empty'), '');
}

const byPath = (m: Manifest, p: string) => m.entries.find((e) => e.path === p);

test('overlay upper: capture → materialize → mount gives the same merged tree', rootOnly(), () =>
  withEnv(async (env) => {
    const upper = path.join(env.base, 'upper');
    const merged = await env.mount(upper, 'a');
    await mutate(merged);

    const c1 = await capture(upper, env.store);
    const m = c1.manifest;
    assert.equal(m.format, 'crab-manifest/1');
    assert.equal(byPath(m, 'del.txt')?.type, 'whiteout');
    assert.ok(byPath(m, 'opaque')?.xattrs?.['trusted.overlay.opaque'], 'opaque xattr captured');
    assert.ok(byPath(m, 'newdir')?.xattrs?.['trusted.overlay.redirect'], 'redirect xattr captured');
    assert.equal(byPath(m, 'olddir')?.type, 'whiteout');
    assert.equal(byPath(m, 'fifo')?.type, 'fifo');
    assert.equal(byPath(m, 'h1')?.linkGroup, byPath(m, 'h2')?.linkGroup);
    assert.ok(byPath(m, 'h1')?.linkGroup !== undefined);
    assert.equal(byPath(m, 'mode.txt')?.mode, 0o4750);
    assert.ok(c1.newBytes > 0 && c1.logicalBytes >= 6 * 1024 * 1024);

    const upper2 = path.join(env.base, 'upper2');
    await materialize(m, env.store, upper2);
    const merged2 = await env.mount(upper2, 'b');

    const hMerged = await treeHashOfDir(merged);
    assert.equal(await treeHashOfDir(merged2), hMerged, 'merged views match');
    assert.equal(await treeHashOfDir(upper2), treeHash(m), 'materialized upper matches the manifest');
    const again = await capture(upper2, env.store);
    assert.equal(treeHash(again.manifest), treeHash(m));
    assert.equal(again.contentNewBytes, 0, 'everything deduplicated');
    // times are restored to the ns
    for (const p of ['new.txt', 'newdir', 'opaque', 'sym', 'fifo']) assert.equal(byPath(again.manifest, p)?.mtimeNs, byPath(m, p)?.mtimeNs, p);
    // merged view semantics survived
    await assert.rejects(fs.access(path.join(merged2, 'del.txt')));
    assert.deepEqual((await fs.readdir(path.join(merged2, 'opaque'))).sort(), ['fresh']);
    assert.equal(await fs.readFile(path.join(merged2, 'newdir', 'sub', 'b'), 'utf8'), 'b');
    await assert.rejects(fs.access(path.join(merged2, 'olddir')));
    assert.equal((await fs.stat(path.join(merged2, 'h1'))).ino, (await fs.stat(path.join(merged2, 'h2'))).ino);
    assert.equal(await fs.readFile(path.join(merged2, 'etc', 'config'), 'utf8'), 'original\nedited\n');

    // excluded prefixes: a change under run/crab does not change the hash
    await fs.writeFile(path.join(merged2, 'run', 'crab', 'volatile'), 'other');
    assert.notEqual(await treeHashOfDir(merged2), hMerged);
    assert.equal(await treeHashOfDir(merged2, { excludePrefixes: ['run/crab'] }), await treeHashOfDir(merged, { excludePrefixes: ['/run/crab/'] }));
  }));

test('incremental capture: unchanged files are not re-read; hinted capture equals a full rescan', rootOnly(), () =>
  withEnv(async (env) => {
    const upper = path.join(env.base, 'upper');
    const merged = await env.mount(upper, 'a');
    await mutate(merged);
    const c1 = await capture(upper, env.store);

    const c2 = await capture(upper, env.store, { previous: c1.manifest });
    assert.equal(c2.filesRead, 0);
    assert.equal(c2.contentNewBytes, 0);
    assert.equal(treeHash(c2.manifest), treeHash(c1.manifest));

    // the next turn: edit, create, delete a lower file, rename an upper dir, chmod
    await fs.appendFile(path.join(merged, 'new.txt'), 'more\n');
    await fs.writeFile(path.join(merged, 'etc', 'added'), 'added');
    await fs.rm(path.join(merged, 'lowerfile'));
    await fs.rename(path.join(merged, 'newdir'), path.join(merged, 'movedagain'));
    await fs.chmod(path.join(merged, 'owned'), 0o640);
    const full = await capture(upper, env.store, { previous: c1.manifest });
    assert.equal(full.mode, 'full');
    // new.txt and etc/added changed; owned (chmod) and lowerlink (its other name was deleted, so
    // its link count changed) moved ctime, which conservatively means a re-read; nothing else is read
    assert.equal(full.filesRead, 4);
    assert.equal(full.contentNewBytes > 0, true);
    const hinted = await capture(upper, env.store, {
      previous: c1.manifest,
      hintPaths: ['/new.txt', '/etc/added', '/lowerfile', '/newdir', '/movedagain', '/owned'],
    });
    assert.equal(hinted.mode, 'hinted');
    assert.equal(treeHash(hinted.manifest), treeHash(full.manifest));
    assert.equal(await treeHashOfDir(upper), treeHash(full.manifest));
    assert.equal(byPath(hinted.manifest, 'lowerfile')?.type, 'whiteout');
    assert.ok(!byPath(hinted.manifest, 'newdir'));

    // restore of the hinted manifest reproduces the merged view
    const upper2 = path.join(env.base, 'upper2');
    await materialize(hinted.manifest, env.store, upper2);
    const merged2 = await env.mount(upper2, 'b');
    assert.equal(await treeHashOfDir(merged2), await treeHashOfDir(merged));

    // a previous manifest of another directory is not trusted for reuse
    const other = await capture(upper2, env.store, { previous: hinted.manifest, hintPaths: ['/x'] });
    assert.equal(other.mode, 'full');
  }));

test('snapshot reads what it stores while frozen: changes after it, before finish, are not in the manifest', rootOnly(), () =>
  withEnv(async (env) => {
    const upper = path.join(env.base, 'upper');
    const merged = await env.mount(upper, 'a');
    await mutate(merged);
    await fs.writeFile(path.join(merged, 'small'), 'before');
    await fs.writeFile(path.join(merged, 'big'), randomBytes(64 * 1024));
    const frozenHash = await treeHashOfDir(upper);
    // a budget that holds the small files, not `big`: that one is stored at once, the rest later
    const pending = await snapshot(upper, env.store, { readBudgetBytes: 32 * 1024 });
    await fs.writeFile(path.join(merged, 'small'), 'after, and longer');
    await fs.writeFile(path.join(merged, 'big'), 'replaced');
    await fs.writeFile(path.join(merged, 'late'), 'created after the snapshot');
    const snap = await pending.finish();
    assert.equal(treeHash(snap.manifest), frozenHash);
    const upper2 = path.join(env.base, 'upper2');
    await materialize(snap.manifest, env.store, upper2);
    assert.equal(await treeHashOfDir(upper2), frozenHash);
    assert.equal(await fs.readFile(path.join(upper2, 'small'), 'utf8'), 'before');
    assert.equal(snap.filesRead, new Set(snap.manifest.entries.filter((e) => e.type === 'file').map((e) => e.ino)).size, 'every file read once');
  }));

test('materialize with reuse links unchanged files; without trusting inodes (after a crash) only files with the recorded bytes', rootOnly(), () =>
  withEnv(async (env) => {
    const upper = path.join(env.base, 'upper');
    const merged = await env.mount(upper, 'a');
    for (const name of ['same', 'torn', 'xattr']) await fs.writeFile(path.join(merged, name), `${name} contents\n`);
    const snap = await capture(upper, env.store);
    // A crash left `torn` with other bytes under the same inode, and its new ctime on disk: the
    // manifest's inode times are made to match, as they would after such a crash.
    await fs.writeFile(path.join(upper, 'torn'), 'TORN contents\n');
    const tornSt = await fs.stat(path.join(upper, 'torn'), { bigint: true });
    const lying: Manifest = { ...snap.manifest, entries: snap.manifest.entries.map((e) => (e.path === 'torn' ? { ...e, ctimeNs: tornSt.ctimeNs.toString(), mtimeNs: tornSt.mtimeNs.toString() } : e)) };
    await applyMetadata(upper, { nodes: [], owners: [], times: [], xattrs: [{ path: 'xattr', xattrs: { 'user.added': '31' } }] });
    const ino = async (dir: string, name: string) => (await fs.stat(path.join(dir, name))).ino;

    const trusting = path.join(env.base, 'trusting');
    const t = await materialize(lying, env.store, trusting, { reuse: upper });
    assert.equal(await fs.readFile(path.join(trusting, 'torn'), 'utf8'), 'TORN contents\n', 'trusting the inode links what the ctime vouches for');
    assert.equal(await ino(trusting, 'same'), await ino(upper, 'same'));
    assert.notEqual(await ino(trusting, 'xattr'), await ino(upper, 'xattr'), 'an xattr added since: written anew, not linked with it');
    assert.equal(t.filesLinked, 2);

    const byContent = path.join(env.base, 'by-content');
    const c = await materialize(lying, env.store, byContent, { reuse: upper, trustInodes: false });
    assert.equal(treeHash(lying), await treeHashOfDir(byContent));
    assert.equal(await fs.readFile(path.join(byContent, 'torn'), 'utf8'), 'torn contents\n');
    assert.equal(await ino(byContent, 'same'), await ino(upper, 'same'), 'the recorded bytes: linked');
    assert.equal(c.filesLinked, 1);
  }));

test('GC with the catalog never deletes chunks of live checkpoints; deleted parents keep children restorable', rootOnly(), () =>
  withEnv(async (env) => {
    const catalog = SqliteCatalog.open(path.join(env.base, 'catalog.db'));
    try {
      const upper = path.join(env.base, 'upper');
      const merged = await env.mount(upper, 'a');
      await catalog.putSandbox({ id: 'sb', name: 'sb', image: 'test', config: {}, createdAtMs: Date.now(), state: 'running' });
      await fs.writeFile(path.join(merged, 'turn0'), randomBytes(100_000));
      const img = path.join(env.base, 'img');
      await fs.mkdir(img);
      await fs.writeFile(path.join(img, 'pages-1.img'), randomBytes(64 * 4096));
      const proc = await env.store.putDir(img);
      const c0 = await capture(upper, env.store);
      const k0 = await catalog.commitCheckpoint({ sandboxId: 'sb', parentId: null, kind: 'full', turn: 0, logicalBytes: c0.logicalBytes + proc.logicalBytes, newBytes: c0.newBytes + proc.newBytes, fsManifest: c0.digest, processImage: { digest: proc.recipeDigest } });
      await fs.writeFile(path.join(merged, 'turn1'), randomBytes(100_000));
      await fs.rm(path.join(merged, 'turn0'));
      const c1 = await capture(upper, env.store, { previous: c0.manifest });
      const k1 = await catalog.commitCheckpoint({ sandboxId: 'sb', parentId: k0.id, kind: 'fs', turn: 1, logicalBytes: c1.logicalBytes, newBytes: c1.newBytes, fsManifest: c1.digest, processImage: { reuseOf: k0.id } }, { refs: ['head/sb'] });
      // garbage: an orphan chunk nobody references
      const orphan = await env.store.put(randomBytes(1000));

      await catalog.deleteCheckpoint(k0.id);
      const live = await catalog.liveDigests(gcRootExpander(env.store));
      const swept = await env.store.sweep(live, { graceMs: 0 });
      assert.ok(swept.deletedChunks >= 2, 'turn0 contents and the orphan are gone');
      assert.ok(!(await env.store.has(orphan.digest)));
      assert.deepEqual(await env.store.verify(), []);

      const rec = await catalog.getCheckpoint(k1.id);
      const upper2 = path.join(env.base, 'upper2');
      const { loadManifest } = await import('../../../src/fssnap/index.js');
      await materialize(await loadManifest(env.store, rec.fsManifest!), env.store, upper2);
      assert.equal(await treeHashOfDir(upper2), treeHash(c1.manifest));
      const procOut = path.join(env.base, 'img-restored');
      await env.store.materializeDir(await env.store.getJson(rec.processImage!), procOut);
      assert.deepEqual(await fs.readFile(path.join(procOut, 'pages-1.img')), await fs.readFile(path.join(img, 'pages-1.img')));
    } finally {
      await catalog.close();
    }
  }));
