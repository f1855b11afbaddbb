/**
 * Integrity under faults (issue 19, part 9), with real processes killed by their pid:
 * - a Crab process killed -9 with the sandbox frozen (after the CRIU dump), mid-store (its
 *   store/tmp files) and mid-rollback (its restore staging): the next CLI call or daemon start
 *   thaws the sandbox and removes the scratch; a live owner's freeze is never undone;
 * - a stored chunk that went bad is not built on: the next checkpoint reads the file again and
 *   the put rewrites the chunk; a bad process image makes an fs checkpoint full;
 * - a corrupt catalog row: that checkpoint refuses clearly, the listing and the sandbox go on.
 */
import test, { after, before, describe } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { once } from 'node:events';
import { rootOnly, testPrefix } from '../../support/root.js';
import { manager, paths, removeByPrefix } from '../../support/sandboxes.js';
import { checkpointer } from '../../support/cr.js';
import { REPO_ROOT } from '../../../src/core/paths.js';
import { freezerState } from '../../../src/checkpoint/freezer.js';
import { readFreezeRecord } from '../../../src/checkpoint/freeze-owner.js';
import { loadManifest, manifestDigests } from '../../../src/fssnap/index.js';
import { dirRecipeDigests, type DirRecipe } from '../../../src/store/content-store.js';
import { startDaemon } from '../../../src/daemon/daemon.js';
import { rootLogger } from '../../../src/core/log.js';
import { ownerFromName } from '../../../src/core/owner.js';

const CHILD = path.join(REPO_ROOT, 'dist/test/support/ckpt-child.js');
const CLI = path.join(REPO_ROOT, 'dist/src/cli/main.js');

function startChild(...args: string[]): { child: ChildProcess; lines: AsyncIterator<string>; exited: Promise<unknown> } {
  const child = spawn(process.execPath, [CHILD, ...args], { stdio: ['ignore', 'pipe', 'inherit'] });
  const exited = once(child, 'exit');
  async function* lines(): AsyncGenerator<string> {
    let buf = '';
    for await (const c of child.stdout!) {
      buf += String(c);
      for (let i = buf.indexOf('\n'); i >= 0; i = buf.indexOf('\n')) {
        yield buf.slice(0, i);
        buf = buf.slice(i + 1);
      }
    }
  }
  return { child, lines: lines(), exited };
}

/** SIGKILL to a process this test started (its own pid, > 1), then its exit. */
async function kill9(c: { child: ChildProcess; exited: Promise<unknown> }): Promise<void> {
  assert.ok(c.child.pid && c.child.pid > 1);
  c.child.kill('SIGKILL');
  await c.exited;
}

/** The next CLI call (in-process, no daemon): the one that must undo what the dead process left. */
function cli(...args: string[]): { status: number | null; stdout: string; stderr: string; ms: number } {
  const t0 = performance.now();
  const r = spawnSync(process.execPath, [CLI, ...args], { env: { ...process.env, CRAB_NO_DAEMON: '1', CRAB_HOME: paths.home }, encoding: 'utf8' });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr, ms: performance.now() - t0 };
}

/** Resolves when a name matching `match` appears in `dir` (an fs.watch event, or already there). */
function appears(dir: string, match: (name: string) => boolean): { seen: Promise<string>; close: () => void } {
  const w = fs.watch(dir);
  const seen = new Promise<string>((resolve) => {
    w.on('change', (_e, name) => name && match(String(name)) && resolve(String(name)));
    const already = fs.readdirSync(dir).find(match);
    if (already) resolve(already);
  });
  return { seen, close: () => w.close() };
}

/** The store's temp files that process `pid` owns. */
const tmpOf = (pid: number) => fs.readdirSync(path.join(paths.store, 'tmp')).filter((n) => ownerFromName(n)?.pid === pid);

describe('integrity under faults (real kill -9 of a checkpointing process)', rootOnly(), () => {
  const prefix = testPrefix('faults');
  const m = manager();
  const id = `${prefix}-sb`;
  const d = m.dirs(id);
  before(async () => {
    await m.create({ name: id });
    await m.exec(id, 'mkdir -p /data && for i in $(seq 1 200); do head -c 20000 /dev/urandom > /data/f$i; done; sleep 10000 &', { session: 'main' });
  });
  after(() => removeByPrefix(m, prefix));

  test('killed while the sandbox is frozen: a live owner is left alone, the next CLI call thaws and cleans', async () => {
    const c = startChild('hang-after-dump', id);
    assert.equal((await c.lines.next()).value, 'frozen');
    assert.equal(freezerState(id), 'FROZEN');
    assert.equal(readFreezeRecord(d.root)?.pid, c.child.pid);
    const scratch = fs.readdirSync(d.ckpt).filter((n) => ownerFromName(n)?.pid === c.child.pid);
    assert.equal(scratch.length, 1, 'its CRIU image dir is there');
    // its owner lives: nothing undoes the freeze, and another checkpointer is told it is busy
    assert.equal(cli('sandbox', 'ls', '--json').status, 0);
    assert.equal(freezerState(id), 'FROZEN');
    const cr = await checkpointer();
    await assert.rejects(cr.take(id, { kind: 'fs' }), { code: 'CKPT_SANDBOX_BUSY' });
    assert.equal(freezerState(id), 'FROZEN');

    await kill9(c);
    assert.equal(freezerState(id), 'FROZEN', 'the kill left it frozen');
    const next = cli('sandbox', 'ls', '--json');
    assert.equal(next.status, 0, next.stderr);
    assert.equal(freezerState(id), 'THAWED');
    assert.equal(readFreezeRecord(d.root), null);
    assert.deepEqual(fs.readdirSync(d.ckpt).filter((n) => ownerFromName(n)?.pid === c.child.pid), [], 'its scratch is gone');
    assert.equal((await m.exec(id, 'jobs | wc -l', { session: 'main' })).stdout.trim(), '1', 'the sandbox runs on');
    console.log(`# next CLI call thawed and cleaned in ${Math.round(next.ms)} ms (whole command)`);
  });

  test('killed mid-store: its store/tmp files are removed at the next daemon start', async () => {
    let left: string[] = [];
    for (let attempt = 0; attempt < 3 && left.length === 0; attempt++) {
      await m.exec(id, `head -c ${(64 << attempt) * 2 ** 20} /dev/urandom > /data/big${attempt}`, { session: 'main', timeoutMs: 120_000 });
      const c = startChild('take', id, 'fs');
      const w = appears(path.join(paths.store, 'tmp'), (n) => ownerFromName(n)?.pid === c.child.pid);
      const first = await Promise.race([w.seen, c.exited.then(() => null)]);
      w.close();
      if (first) await kill9(c);
      else await c.exited;
      left = tmpOf(c.child.pid!);
    }
    assert.ok(left.length > 0, 'a kill landed while the store was writing');
    const daemon = await startDaemon({ paths, log: rootLogger, host: { inspector: false } });
    try {
      assert.deepEqual(left.filter((n) => fs.existsSync(path.join(paths.store, 'tmp', n))), [], 'removed at daemon start');
    } finally {
      await daemon.close();
    }
    console.log(`# ${left.length} temp files of the killed process removed`);
  });

  test('killed mid-rollback: the sandbox is thawed and the restore staging removed by the next CLI call', async () => {
    const cr = await checkpointer();
    const target = await cr.take(id, { kind: 'full' });
    await m.exec(id, 'for i in $(seq 1 200); do echo changed > /data/f$i; done', { session: 'main' });
    const c = startChild('rollback', id, target.checkpoint.id);
    const w = appears(d.root, (n) => n.startsWith('upper.restore.') && ownerFromName(n)?.pid === c.child.pid);
    const staged = await Promise.race([w.seen, c.exited.then(() => null)]);
    w.close();
    assert.ok(staged, 'the rollback started staging before it ended');
    await kill9(c);
    // a rollback freezes the sandbox (its files are linked into the staging) before staging
    assert.ok(fs.existsSync(path.join(d.root, staged)), 'the kill left the staging');
    assert.equal(freezerState(id), 'FROZEN', 'and the sandbox frozen');
    assert.equal(cli('checkpoints', id).status, 0);
    assert.equal(fs.existsSync(path.join(d.root, staged)), false, 'staging removed');
    assert.equal(readFreezeRecord(d.root), null);
    assert.equal(freezerState(id), 'THAWED');
    // whatever the kill left, a recovery brings the sandbox back
    await cr.rollback(id, target.checkpoint.id);
    assert.equal((await m.exec(id, 'cat /data/f1 | wc -c; jobs | wc -l', { session: 'main' })).stdout, '20000\n1\n');
  });

  test('a stored chunk that went bad is not built on: the file is read again and its chunk rewritten', async () => {
    const cr = await checkpointer();
    const base = await cr.take(id, { kind: 'full' });
    const manifest = await loadManifest(cr.store, base.checkpoint.fsManifest!);
    const entry = manifest.entries.find((e) => e.path === 'data/f7')!;
    const victim = entry.recipe!.chunks[0]!;
    fs.chmodSync(cr.store.chunkPath(victim), 0o644);
    fs.writeFileSync(cr.store.chunkPath(victim), 'bit rot');
    // within the trust period the parent's recorded check vouches for its chunks (verifiedAtMs);
    // past it (0 here) a new process checks them before building on them. Nothing changed since.
    const cold = await checkpointer({ verifiedTrustMs: 0 });
    const next = await cold.take(id, { kind: 'fs', hintPaths: [] });
    const all = manifestDigests(await loadManifest(cold.store, next.checkpoint.fsManifest!));
    assert.ok(all.includes(victim), 'the file is named by the same chunk…');
    assert.deepEqual(await cold.store.verify({ digests: all }), [], '…which is good again');
    assert.ok(next.checkpoint.verifiedAtMs! >= base.checkpoint.createdAtMs);
    // a bad chunk of the process image: an fs checkpoint cannot reuse it, so it dumps processes
    const image = await cold.store.getJson<DirRecipe>(next.checkpoint.processImage!);
    const pageChunk = dirRecipeDigests(image)[0]!;
    fs.chmodSync(cold.store.chunkPath(pageChunk), 0o644);
    fs.writeFileSync(cold.store.chunkPath(pageChunk), 'bit rot');
    const third = await (await checkpointer({ verifiedTrustMs: 0 })).take(id, { kind: 'fs', hintPaths: [] });
    assert.equal(third.kind, 'full');
    assert.equal((third.checkpoint.meta as { escalatedFrom?: string }).escalatedFrom, 'fs');
    await cold.rollback(id, third.checkpoint.id);
    assert.equal((await m.exec(id, 'jobs | wc -l', { session: 'main' })).stdout.trim(), '1');
  });

  test('a corrupt catalog row: the listing and the sandbox go on, that checkpoint refuses clearly', async () => {
    const cr = await checkpointer();
    const ok = await cr.take(id, { kind: 'fs' });
    const bad = await cr.take(id, { kind: 'fs' });
    (cr.catalog as unknown as { db: { prepare(s: string): { run(...a: unknown[]): void } } }).db.prepare('UPDATE checkpoints SET meta = ? WHERE id = ?').run('{"binds": [', bad.checkpoint.id);
    const list = cli('checkpoints', id, '--json');
    assert.equal(list.status, 0, list.stderr);
    const rows = JSON.parse(list.stdout) as Array<{ id: string; corrupt?: string }>;
    assert.match(rows.find((r) => r.id === bad.checkpoint.id)!.corrupt!, /meta is not JSON/);
    assert.equal(rows.find((r) => r.id === ok.checkpoint.id)!.corrupt, undefined);
    const restore = cli('restore', bad.checkpoint.id, '--json');
    assert.notEqual(restore.status, 0);
    assert.match(restore.stdout + restore.stderr, /CATALOG_CHECKPOINT_CORRUPT/);
    // the corrupt row is the head: the next checkpoint is a full one that names it as parent
    const next = await (await checkpointer()).take(id, { kind: 'fs' });
    assert.equal(next.kind, 'full');
    assert.equal(next.checkpoint.parentId, bad.checkpoint.id);
    await cr.rollback(id, ok.checkpoint.id);
  });
});
