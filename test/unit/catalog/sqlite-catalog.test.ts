import test from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import Database from 'better-sqlite3';
import { SqliteCatalog } from '../../../src/catalog/sqlite-catalog.js';
import type { CheckpointDraft, GcRoot } from '../../../src/catalog/catalog.js';
import { CrabError } from '../../../src/core/errors.js';
import { testPrefix } from '../../support/root.js';

const D = (c: string) => c.repeat(64).slice(0, 64);

async function withCatalog(fn: (c: SqliteCatalog, file: string) => Promise<void>): Promise<void> {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), testPrefix('catalog') + '-'));
  const file = path.join(dir, 'catalog.db');
  const c = SqliteCatalog.open(file);
  try {
    await c.putSandbox({ id: 'sb1', name: 'one', image: 'bookworm', config: { cpu: 1 }, createdAtMs: 1, state: 'running' });
    await fn(c, file);
  } finally {
    await c.close();
    await fs.rm(dir, { recursive: true, force: true });
  }
}

function draft(over: Partial<CheckpointDraft>): CheckpointDraft {
  return { sandboxId: 'sb1', parentId: null, kind: 'full', turn: 0, logicalBytes: 10, newBytes: 5, fsManifest: D('a'), processImage: { digest: D('b') }, ...over };
}

const isCode = (code: string) => (e: unknown) => e instanceof CrabError && e.code === code;

test('migrations set user_version; reopening is idempotent; a newer schema is refused', () =>
  withCatalog(async (c, file) => {
    assert.equal(c.db.pragma('user_version', { simple: true }), SqliteCatalog.schemaVersion);
    assert.equal(c.db.pragma('journal_mode', { simple: true }), 'wal');
    const again = SqliteCatalog.open(file);
    assert.equal((await again.listSandboxes()).length, 1);
    await again.close();
    const raw = new Database(file);
    raw.pragma(`user_version = ${SqliteCatalog.schemaVersion + 1}`);
    raw.close();
    assert.throws(() => SqliteCatalog.open(file), isCode('CATALOG_SCHEMA_TOO_NEW'));
  }));

test('sandboxes: put, get, state, delete with and without cascade', () =>
  withCatalog(async (c) => {
    assert.deepEqual((await c.getSandbox('sb1')).config, { cpu: 1 });
    await c.setSandboxState('sb1', 'stopped');
    assert.equal((await c.getSandbox('sb1')).state, 'stopped');
    await assert.rejects(c.getSandbox('nope'), isCode('CATALOG_SANDBOX_NOT_FOUND'));
    const ck = await c.commitCheckpoint(draft({}), { refs: ['head/sb1'] });
    await assert.rejects(c.deleteSandbox('sb1'), isCode('CATALOG_SANDBOX_HAS_CHECKPOINTS'));
    await c.commitCheckpoint(draft({ parentId: ck.id, kind: 'fs', processImage: { reuseOf: ck.id } }));
    await c.deleteSandbox('sb1', { cascade: true });
    assert.deepEqual(await c.listSandboxes(), []);
    assert.deepEqual(await c.listRefs(), []);
  }));

test('lineage: ancestors nearest first, children, list, newest process image, reuse resolved', () =>
  withCatalog(async (c) => {
    const full = await c.commitCheckpoint(draft({ turn: 0 }));
    const fs1 = await c.commitCheckpoint(draft({ parentId: full.id, kind: 'fs', turn: 1, fsManifest: D('c'), processImage: { reuseOf: full.id } }));
    const proc = await c.commitCheckpoint(draft({ parentId: fs1.id, kind: 'process', turn: 2, fsManifest: null, processImage: { digest: D('d') } }));
    const fs2 = await c.commitCheckpoint(draft({ parentId: proc.id, kind: 'fs', turn: 3, fsManifest: D('e'), processImage: { reuseOf: proc.id } }));
    assert.deepEqual((await c.ancestors(fs2.id)).map((x) => x.id), [proc.id, fs1.id, full.id]);
    assert.deepEqual((await c.ancestors(full.id)).map((x) => x.id), []);
    assert.deepEqual((await c.children(full.id)).map((x) => x.id), [fs1.id]);
    assert.deepEqual((await c.listCheckpoints('sb1')).map((x) => x.turn), [0, 1, 2, 3]);
    assert.equal(fs1.processImage, D('b'));
    assert.equal(fs1.processImageFrom, full.id);
    assert.equal(proc.fsManifest, D('c'), 'process-only checkpoint records the parent manifest');
    assert.equal((await c.newestProcessImage(fs2.id))?.id, proc.id);
    assert.equal((await c.newestProcessImage(fs1.id))?.id, full.id);
    await assert.rejects(c.ancestors('nope'), isCode('CATALOG_CHECKPOINT_NOT_FOUND'));
  }));

test('commit validates and is all-or-nothing (row + refs)', () =>
  withCatalog(async (c, file) => {
    const full = await c.commitCheckpoint(draft({}), { refs: ['head/sb1'] });
    await c.putSandbox({ id: 'sb2', name: 'two', image: 'x', config: {}, createdAtMs: 2, state: 'running' });
    await assert.rejects(c.commitCheckpoint(draft({ sandboxId: 'sb2', parentId: full.id })), isCode('CATALOG_BAD_LINEAGE'));
    await assert.rejects(c.commitCheckpoint(draft({ parentId: 'nope' })), isCode('CATALOG_CHECKPOINT_NOT_FOUND'));
    await assert.rejects(c.commitCheckpoint(draft({ kind: 'fs', processImage: { reuseOf: 'nope' } })), isCode('CATALOG_CHECKPOINT_NOT_FOUND'));
    await assert.rejects(c.commitCheckpoint(draft({ kind: 'full', processImage: null })), isCode('CATALOG_BAD_LINEAGE'));
    // a bad ref name fails after the row was inserted inside the transaction: the row must not stay
    await assert.rejects(c.commitCheckpoint(draft({ id: 'ck-half', parentId: full.id }), { refs: ['head/sb1', ' bad name'] }), isCode('CATALOG_BAD_REF_NAME'));
    await assert.rejects(c.getCheckpoint('ck-half'), isCode('CATALOG_CHECKPOINT_NOT_FOUND'));
    assert.equal(await c.getRef('head/sb1'), full.id, 'ref not moved by the failed commit');
    // another connection sees a commit whole (row and ref together) once it returns
    const reader = SqliteCatalog.open(file);
    try {
      const readerTx = reader.db.transaction(() => [reader.db.prepare('SELECT count(*) AS n FROM checkpoints').get(), reader.db.prepare("SELECT checkpoint_id FROM refs WHERE name='head/sb1'").get()]);
      reader.db.exec('BEGIN'); // a read snapshot opened before the commit does not see it
      const before = reader.db.prepare('SELECT count(*) AS n FROM checkpoints').get() as { n: number };
      const next = await c.commitCheckpoint(draft({ parentId: full.id, kind: 'fs', processImage: { reuseOf: full.id } }), { refs: ['head/sb1'] });
      const during = reader.db.prepare('SELECT count(*) AS n FROM checkpoints').get() as { n: number };
      assert.equal(during.n, before.n);
      reader.db.exec('COMMIT');
      const [count, ref] = readerTx() as [{ n: number }, { checkpoint_id: string }];
      assert.equal(count.n, before.n + 1);
      assert.equal(ref.checkpoint_id, next.id);
    } finally {
      await reader.close();
    }
  }));

test('deleting a parent keeps children restorable (reparented, digests resolved); refs protect', () =>
  withCatalog(async (c) => {
    const full = await c.commitCheckpoint(draft({}));
    const child = await c.commitCheckpoint(draft({ parentId: full.id, kind: 'fs', fsManifest: D('c'), processImage: { reuseOf: full.id } }), { refs: ['head/sb1'] });
    const grandchild = await c.commitCheckpoint(draft({ parentId: child.id, kind: 'fs', fsManifest: D('e'), processImage: { reuseOf: child.id } }));
    await assert.rejects(c.deleteCheckpoint(child.id), isCode('CATALOG_CHECKPOINT_REFERENCED'));
    await c.deleteCheckpoint(full.id);
    const after = await c.getCheckpoint(child.id);
    assert.equal(after.parentId, null);
    assert.equal(after.fsManifest, D('c'));
    assert.equal(after.processImage, D('b'), 'process image digest survives deletion of the checkpoint that took it');
    await c.setRef('head/sb1', grandchild.id);
    await c.deleteCheckpoint(child.id);
    const g = await c.getCheckpoint(grandchild.id);
    assert.equal(g.parentId, null);
    assert.equal(g.processImage, D('b'));
    assert.equal(g.fsManifest, D('e'));
    const roots = await c.gcRoots();
    assert.deepEqual(new Set(roots.map((r) => r.digest)), new Set([D('e'), D('b')]));
  }));

test('liveDigests walks each distinct root once through the expander', () =>
  withCatalog(async (c) => {
    const full = await c.commitCheckpoint(draft({}));
    await c.commitCheckpoint(draft({ parentId: full.id, kind: 'fs', fsManifest: D('c'), processImage: { reuseOf: full.id } }));
    const seen: GcRoot[] = [];
    const live = await c.liveDigests(async (root) => {
      seen.push(root);
      return [`${root.digest.slice(0, 1)}-chunk`];
    });
    assert.equal(seen.length, 3);
    assert.deepEqual(live, new Set([D('a'), D('b'), D('c'), 'a-chunk', 'b-chunk', 'c-chunk']));
  }));

test('a corrupt row costs that one checkpoint: listings go on, get refuses it with a clear error, GC skips a root that is no digest', () =>
  withCatalog(async (c) => {
    const a = await c.commitCheckpoint(draft({}));
    const b = await c.commitCheckpoint(draft({ parentId: a.id, fsManifest: D('c') }));
    const d = await c.commitCheckpoint(draft({ parentId: b.id, fsManifest: D('d') }));
    c.db.prepare('UPDATE checkpoints SET meta = ? WHERE id = ?').run('{"binds": [', b.id);
    c.db.prepare("UPDATE checkpoints SET created_at = 'yesterday', fs_manifest = '../../etc/passwd' WHERE id = ?").run(d.id);
    const list = await c.listCheckpoints('sb1');
    assert.deepEqual(list.map((x) => x.id).sort(), [a.id, b.id, d.id].sort());
    assert.equal(list.find((x) => x.id === a.id)!.corrupt, undefined);
    assert.match(list.find((x) => x.id === b.id)!.corrupt!, /meta is not JSON/);
    assert.match(list.find((x) => x.id === d.id)!.corrupt!, /created_at is not an integer; fs_manifest is not a digest/);
    assert.equal(list.find((x) => x.id === d.id)!.fsManifest, null);
    await assert.rejects(c.getCheckpoint(b.id), (e: unknown) => isCode('CATALOG_CHECKPOINT_CORRUPT')(e) && /meta is not JSON/.test((e as Error).message));
    await assert.rejects(c.getCheckpoint(d.id), isCode('CATALOG_CHECKPOINT_CORRUPT'));
    assert.equal((await c.getCheckpoint(a.id)).id, a.id);
    assert.deepEqual((await c.ancestors(d.id)).map((x) => [x.id, !!x.corrupt]), [[b.id, true], [a.id, false]]);
    const roots = (await c.gcRoots()).map((r) => r.digest).sort();
    assert.deepEqual(roots, [D('a'), D('b'), D('c')], 'the garbled root is left out; the others stay live');
    // the sandbox row too
    c.db.prepare('UPDATE sandboxes SET config = ? WHERE id = ?').run('not json', 'sb1');
    const sbs = await c.listSandboxes();
    assert.equal(sbs.length, 1);
    assert.match(sbs[0]!.corrupt!, /config is not JSON/);
    await assert.rejects(c.getSandbox('sb1'), isCode('CATALOG_SANDBOX_CORRUPT'));
  }));

test('verified_at: recorded at commit, moved only forward by markVerified, null for rows from before it existed', () =>
  withCatalog(async (c) => {
    const a = await c.commitCheckpoint(draft({ verifiedAtMs: 500 }));
    assert.equal(a.verifiedAtMs, 500);
    await c.markVerified(a.id, 400);
    assert.equal((await c.getCheckpoint(a.id)).verifiedAtMs, 500, 'an older check does not replace a younger one');
    await c.markVerified(a.id, 900);
    assert.equal((await c.getCheckpoint(a.id)).verifiedAtMs, 900);
    const b = await c.commitCheckpoint(draft({ parentId: a.id }));
    assert.equal(b.verifiedAtMs, null);
    await assert.rejects(c.markVerified('ck-nope', 1), isCode('CATALOG_CHECKPOINT_NOT_FOUND'));
  }));
