import test, { after, before, describe } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { rootOnly, testPrefix } from '../../support/root.js';
import { manager, paths, removeByPrefix } from '../../support/sandboxes.js';
import { checkpointer, PROCESS_LIST_CMD } from '../../support/cr.js';
import { gcRootExpander, loadManifest, treeHash, treeHashOfDir } from '../../../src/fssnap/index.js';
import { applyMetadata } from '../../../src/fssnap/host-helper.js';
import type { Checkpointer } from '../../../src/checkpoint/checkpointer.js';
import { dirRecipeDigests, type DirRecipe } from '../../../src/store/content-store.js';

const HASH_OPTS = { excludePrefixes: ['run/crab', 'tmp/cnt', 'tmp/http.log'] };

/** Waits until /tmp/state (which a test's Python job writes, then renames into place) starts with `n `; returns it. */
async function stateOf(s: (cmd: string) => Promise<{ stdout: string }>, n: number): Promise<string> {
  for (let i = 0; i < 100; i++) {
    const text = (await s('cat /tmp/state 2>/dev/null')).stdout.trim();
    if (text.startsWith(`${n} `)) return text;
    await sleep(20);
  }
  throw new Error(`/tmp/state never reached ${n}`);
}

describe('checkpoint / restore / rollback / fork (real runc + CRIU)', rootOnly(), () => {
  const prefix = testPrefix('cr');
  const m = manager();
  let cr: Checkpointer;
  before(async () => {
    cr = await checkpointer();
  });
  after(() => removeByPrefix(m, prefix));

  test('full checkpoint → kill everything → restore brings back session, server, counter and files', async () => {
    const id = `${prefix}-main`;
    await m.create({ name: id, packages: ['python3'] });
    const s = (cmd: string) => m.exec(id, cmd, { session: 'main' });
    /** The counter file; `echo $i > f` truncates before it writes, so a read may find it empty. */
    const counter = async (): Promise<number> => {
      for (let i = 0; i < 50; i++) {
        const text = (await s('cat /tmp/cnt')).stdout.trim();
        if (text) return Number(text);
        await sleep(5);
      }
      throw new Error('/tmp/cnt stayed empty');
    };
    await s('mkdir -p /work/sub && cd /work && export PROJECT=crab && greet() { echo "hello $1"; }');
    await s('python3 -m http.server 8000 --bind 127.0.0.1 >/tmp/http.log 2>&1 &');
    await s('(i=0; while :; do i=$((i+1)); echo $i > /tmp/cnt; sleep 0.05; done) &');
    // Files: create, modify, rename (file and dir), hard link, symlink, chmod, delete (also from the lower layer).
    await s('echo one > a.txt; echo two > b.txt; echo mod >> a.txt; mv b.txt c.txt; ln a.txt hard.txt; ln -s c.txt sym; chmod 600 c.txt');
    await s('mkdir -p d1/x && echo in > d1/x/f && mv d1 d2; rm /etc/issue; echo changed >> /etc/motd; mv /usr/share/doc/bash /usr/share/doc/bash-moved; rm -rf /usr/share/doc/tar; mkdir /usr/share/doc/tar; echo opaque > /usr/share/doc/tar/new');
    await sleep(500);
    const ck = await cr.take(id, { kind: 'full', turn: 1 });
    const manifest = await loadManifest(cr.store, ck.checkpoint.fsManifest!);
    const ckHash = treeHash(manifest, HASH_OPTS);
    // The counter's value at the frozen moment, as the checkpoint's own files recorded it.
    const cntEntry = manifest.entries.find((e) => e.path === 'tmp/cnt')!;
    const counterAtCkpt = Number(Buffer.concat(await Promise.all(cntEntry.recipe!.chunks.map((c) => cr.store.get(c)))).toString());
    await sleep(1000); // the counter runs on past the checkpoint…
    const ran = await counter();
    assert.ok(ran > counterAtCkpt + 5, `the counter ran on past the checkpoint: ${counterAtCkpt} → ${ran}`);
    await m.remove(id); // …then the sandbox dies with everything in it, writable layer included

    const r = await cr.restore(ck.checkpoint.id);
    assert.equal(r.sandboxId, id);
    const out = await s('pwd; echo $PROJECT; greet you; jobs -r | grep -c Running');
    assert.deepEqual(out.stdout.trim().split('\n'), ['/work', 'crab', 'hello you', '2']);
    const cnt = await counter();
    assert.ok(cnt >= counterAtCkpt && cnt < counterAtCkpt + 15, `counter continues from ${counterAtCkpt}, got ${cnt}`);
    await sleep(200);
    assert.ok((await counter()) > cnt, 'counter still counting');
    const http = await s('python3 -c "import urllib.request;print(urllib.request.urlopen(\'http://127.0.0.1:8000/\').status)"');
    assert.equal(http.stdout.trim(), '200', http.stderr);
    assert.equal(await treeHashOfDir(m.dirs(id).upper, HASH_OPTS), ckHash, 'filesystem tree equals the checkpoint');
    const files = await s('cat a.txt; readlink sym; stat -c %a c.txt; stat -c %h a.txt; cat d2/x/f; test -e /etc/issue || echo gone; tail -1 /etc/motd; ls /usr/share/doc/bash-moved | head -1; ls /usr/share/doc/tar');
    assert.deepEqual(files.stdout.trim().split('\n'), ['one', 'mod', 'c.txt', '600', '2', 'in', 'gone', 'changed', 'CHANGES.gz', 'new']);
  });

  test('rollback to turn 1 after five later checkpoints gives turn 1 files and processes; fork 8 children', async () => {
    const id = `${prefix}-rb`;
    await m.create({ name: id });
    const s = (cmd: string) => m.exec(id, cmd, { session: 'main' });
    const kinds = ['full', 'fs', 'process', 'fs', 'process', 'full'] as const;
    const cks = [];
    for (let turn = 1; turn <= 6; turn++) {
      await s(`echo turn${turn} > /root/t${turn}; echo ${turn} > /root/last; sleep ${1000 + turn} &`);
      if (turn === 3) await s('rm /root/t1');
      cks.push((await cr.take(id, { kind: kinds[turn - 1]!, turn })).checkpoint);
    }
    assert.deepEqual(cks.map((c) => c.kind), [...kinds]);
    const turn1Procs = ['bash --noprofile --norc -O expand_aliases ', 'sleep 1001 '];
    await cr.rollback(id, cks[0]!.id);
    assert.equal((await s('ls /root | tr "\\n" " "')).stdout, 'last t1 ');
    assert.equal((await s('cat /root/last')).stdout, '1\n');
    const procs = (await m.exec(id, PROCESS_LIST_CMD)).stdout.trim().split('\n');
    for (const p of turn1Procs) assert.ok(procs.includes(p), `${p} in ${JSON.stringify(procs)}`);
    assert.ok(!procs.some((p) => /sleep 100[2-6]/.test(p)), `no later processes: ${JSON.stringify(procs)}`);
    // After the rollback, new checkpoints branch from turn 1.
    const branch = await cr.take(id, { kind: 'fs', turn: 2 });
    assert.equal(branch.checkpoint.parentId, cks[0]!.id);

    // Roll forward to turn 5 (a process checkpoint) works too.
    await cr.rollback(id, cks[4]!.id);
    assert.equal((await s('cat /root/last; ls /root | wc -l')).stdout, '5\n5\n');

    const forks = await cr.fork(cks[2]!.id, 8, { prefix: `${prefix}-fk` });
    assert.equal(new Set(forks.map((f) => f.sandboxId)).size, 8);
    await Promise.all(forks.map((f, i) => m.exec(f.sandboxId, `echo child${i} > /root/me; X=${i}`, { session: 'main' })));
    const seen = await Promise.all(forks.map((f) => m.exec(f.sandboxId, 'cat /root/me /root/last; echo $X; jobs | wc -l', { session: 'main' })));
    seen.forEach((r, i) => assert.deepEqual(r.stdout.trim().split('\n'), [`child${i}`, '3', String(i), '3']));
    const cgroups = forks.map((f) => fs.existsSync(`/sys/fs/cgroup/pids/crab/${f.sandboxId}`));
    assert.ok(cgroups.every(Boolean), 'each fork has its own cgroup');
    assert.equal((await s('test -e /root/me || echo parent-untouched')).stdout, 'parent-untouched\n');
    await Promise.all(forks.map((f) => m.remove(f.sandboxId)));
  });

  test('a rollback links the files that did not change since the checkpoint and writes the rest; a writer in the sandbox cannot reach the links', async () => {
    const id = `${prefix}-rbl`;
    await m.create({ name: id });
    const s = (cmd: string) => m.exec(id, cmd, { session: 'main' });
    await s('mkdir -p /w && cd /w && for i in $(seq 1 300); do echo "file $i" > f$i; done; echo keep > kept; echo old > edited; echo old > chmodded; echo old > deleted; echo same > twin1; echo same > twin2');
    const ck = (await cr.take(id, { kind: 'full', turn: 1 })).checkpoint;
    const want = treeHash(await loadManifest(cr.store, ck.fsManifest!), HASH_OPTS);
    const inoOf = (rel: string) => fs.statSync(path.join(m.dirs(id).upper, rel)).ino;
    const keptIno = inoOf('w/kept');
    // after the checkpoint: an edit in place, a chmod, a delete, a new file, and a writer that
    // keeps appending to a file the checkpoint has (unchanged until it started)
    await s('echo new >> edited; chmod 600 chmodded; rm deleted; echo later > added; ln -f twin1 twin2; (while :; do echo x >> /w/f1; done) & sleep 0.2');
    const editedIno = inoOf('w/edited');
    await cr.rollback(id, ck.id);
    assert.equal(await treeHashOfDir(m.dirs(id).upper, HASH_OPTS), want, 'the tree is the checkpoint\'s');
    assert.equal(inoOf('w/kept'), keptIno, 'an unchanged file is the same inode, linked');
    assert.notEqual(inoOf('w/edited'), editedIno, 'a changed file is written anew');
    const out = await s('cat /w/edited; stat -c %a /w/chmodded; cat /w/deleted; test -e /w/added || echo no-added; cat /w/f1; jobs | wc -l; stat -c %h /w/twin1 /w/twin2');
    assert.deepEqual(out.stdout.trim().split('\n'), ['old', '644', 'old', 'no-added', 'file 1', '0', '1', '1']);
    assert.notEqual(inoOf('w/twin1'), inoOf('w/twin2'), 'two files made one by ln since are two again');
    // again, after a change: the files a rollback linked have a new ctime, so they are matched by content
    await s('echo again >> /w/f2');
    await cr.rollback(id, ck.id);
    assert.equal(await treeHashOfDir(m.dirs(id).upper, HASH_OPTS), want);
    assert.equal(inoOf('w/kept'), keptIno, 'still the same inode');
    assert.equal((await s('cat /w/f2')).stdout, 'file 2\n');
    // an xattr added since (setfattr, setcap, setfacl) to a file whose bytes are unchanged: not linked, or it would stay
    await applyMetadata(m.dirs(id).upper, { nodes: [], owners: [], times: [], xattrs: [{ path: 'w/kept', xattrs: { 'user.crab_test': '01' } }] });
    assert.notEqual(await treeHashOfDir(m.dirs(id).upper, HASH_OPTS), want);
    await cr.rollback(id, ck.id);
    assert.equal(await treeHashOfDir(m.dirs(id).upper, HASH_OPTS), want, 'the added xattr is gone');
    assert.notEqual(inoOf('w/kept'), keptIno, 'written anew');
    // a recovery after the sandbox died: files with the checkpoint's bytes are linked too, the rest written
    const keptNow = inoOf('w/kept');
    await s('echo lost >> /w/f3; rm /w/f4');
    await m.stop(id);
    await cr.restore(ck.id);
    assert.equal(await treeHashOfDir(m.dirs(id).upper, HASH_OPTS), want, 'the recovered tree is the checkpoint\'s');
    assert.equal(inoOf('w/kept'), keptNow, 'an unchanged file is linked');
    assert.deepEqual((await s('cat /w/f3 /w/f4')).stdout.trim().split('\n'), ['file 3', 'file 4']);
  });

  test('a process whose memory changes a few bytes a turn is stored as XOR deltas, and rolls back to exactly that memory', async () => {
    const id = `${prefix}-delta`;
    await m.create({ name: id, packages: ['python3'] });
    const s = (cmd: string) => m.exec(id, cmd, { session: 'main' });
    // 4 MiB of random bytes; each SIGUSR1 bumps one byte in each of 64 pages and records the digest
    const script = [
      'import hashlib, os, signal, time',
      'buf = bytearray(os.urandom(4 << 20))',
      'n = 0',
      'def bump(*_):',
      '    global n',
      '    n += 1',
      '    for i in range(0, len(buf), 65536): buf[i] = (buf[i] + 1) % 256',
      '    open("/tmp/state.tmp", "w").write(f"{n} {hashlib.sha256(buf).hexdigest()}\\n"); os.rename("/tmp/state.tmp", "/tmp/state")',
      'signal.signal(signal.SIGUSR1, bump)',
      'bump()',
      'while True: time.sleep(3600)',
    ].join('\n');
    await s(`printf '%s\\n' '${script}' > /tmp/mem.py`);
    await s('python3 /tmp/mem.py &'); // job %1 is python itself
    const state = (n: number) => stateOf(s, n);
    await state(1);
    const first = await cr.take(id, { kind: 'full', turn: 1 });
    const states: string[] = [];
    const cks = [];
    for (let turn = 2; turn <= 3; turn++) {
      await s('kill -USR1 %1');
      states.push(await state(turn));
      cks.push(await cr.take(id, { kind: 'process', turn }));
    }
    for (const ck of cks) {
      const recipe = await cr.store.getJson<DirRecipe>(ck.checkpoint.processImage!);
      assert.equal(recipe.format, 'crab-dir/2', 'the image holds deltas');
      assert.ok(recipe.entries.some((e) => e.type === 'file' && (e.recipe.deltas?.length ?? 0) > 0));
      // 64 changed random pages would be 256 KiB stored whole; as deltas they are a few bytes each
      assert.ok(ck.newBytes < 160 * 1024, `turn ${ck.checkpoint.turn} wrote ${ck.newBytes} bytes (first: ${first.newBytes})`);
    }
    // back to turn 2: the memory is turn 2's, so one more bump gives exactly turn 3's digest
    await cr.rollback(id, cks[0]!.checkpoint.id);
    assert.equal(await state(2), states[0]);
    await s('kill -USR1 %1');
    assert.equal(await state(3), states[1]);
    // Bases are plain pages of earlier dumps, never deltas (chains one link long), and once the
    // checkpoint that first stored them is deleted, GC still keeps them
    const images = await Promise.all(cks.map((c) => cr.store.getJson<DirRecipe>(c.checkpoint.processImage!)));
    const deltaParts = (r: DirRecipe, at: 0 | 1) =>
      r.entries.flatMap((e) => (e.type === 'file' && e.recipe.deltas && e.recipe.extents ? e.recipe.deltas.filter((_, k) => k % 3 === at).map((i) => e.recipe.chunks[at ? i : e.recipe.extents![i * 3]!]!) : []));
    const deltaChunks = new Set(images.flatMap((r) => deltaParts(r, 0)));
    const bases = images.flatMap((r) => deltaParts(r, 1));
    assert.ok(bases.length > 0 && bases.every((d) => !deltaChunks.has(d)), 'every base is a plain page');
    const latest = images[1]!;
    await cr.catalog.deleteCheckpoint(first.checkpoint.id);
    const live = await cr.catalog.liveDigests(gcRootExpander(cr.store));
    for (const d of dirRecipeDigests(latest)) assert.ok(live.has(d), `chunk ${d} of the delta image is live`);
  });

  test('a restarted process (a new pid) is stored as deltas of its earlier run, found by its memory layout, and restores exactly', async () => {
    const id = `${prefix}-restart`;
    await m.create({ name: id, packages: ['python3'] });
    const s = (cmd: string) => m.exec(id, cmd, { session: 'main' });
    // The same 4 MiB in every run (of this test: the seed is new each time, so the store has none
    // of it), but one byte of each page says which run it is: no page of a second run equals one
    // of the first (no dedup), each differs from its like in one byte.
    const script = [
      'import hashlib, os, random, signal, sys, time',
      'seed, run = int(sys.argv[1]), int(sys.argv[2])',
      'buf = bytearray(random.Random(seed).randbytes(4 << 20))',
      'for i in range(0, len(buf), 4096): buf[i] = run',
      'def report(*_):',
      '    open("/tmp/state.tmp", "w").write(f"{run} {hashlib.sha256(buf).hexdigest()}\\n"); os.rename("/tmp/state.tmp", "/tmp/state")',
      'signal.signal(signal.SIGUSR1, report)',
      'report()',
      'while True: time.sleep(3600)',
    ].join('\n');
    await s(`printf '%s\\n' '${script}' > /tmp/mem.py`);
    const state = (run: number) => stateOf(s, run);
    const seed = Date.now();
    await s(`python3 /tmp/mem.py ${seed} 1 &`);
    await state(1);
    const first = await cr.take(id, { kind: 'full', turn: 1 });
    await s(`kill %1; wait %1 2>/dev/null; python3 /tmp/mem.py ${seed} 2 &`);
    const second = await state(2);
    const ck = await cr.take(id, { kind: 'process', turn: 2 });
    // 1024 pages that differ from the first run's would be 4 MiB; as deltas a few bytes each (the
    // rest is the interpreter's own new heap: another hash seed, other pointers)
    assert.ok(first.newBytes > 4 << 20, `the first run's dump is stored whole (${first.newBytes} bytes)`);
    assert.ok(ck.newBytes < 1 << 20, `the restarted process wrote ${ck.newBytes} bytes (the first run: ${first.newBytes})`);
    await m.remove(id);
    await cr.restore(ck.checkpoint.id);
    // the restored process digests its memory afresh: exactly the second run's
    await s('rm /tmp/state; kill -USR1 %1');
    assert.equal(await state(2), second);
  });

  test('gc keeps a shared fork layer while a fork or a checkpoint of a fork names it, then removes it; a later fork rebuilds it', async () => {
    const id = `${prefix}-layer`;
    await m.create({ name: id });
    await m.exec(id, `echo ${id}-${Date.now()} > /root/unique`, { session: 'main' }); // a layer of its own
    const ck = (await cr.take(id, { kind: 'full' })).checkpoint;
    const layer = path.join(paths.home, 'layers', ck.fsManifest!);
    const forks = await cr.fork(ck.id, 2, { prefix: `${prefix}-lf` });
    assert.ok(fs.existsSync(layer), 'forks share a materialized layer');
    assert.ok(!(await cr.gcLayers(0)).removed.includes(ck.fsManifest!), 'kept: forks use it');

    const forkCk = (await cr.take(forks[0]!.sandboxId, { kind: 'fs' })).checkpoint;
    await Promise.all(forks.map((f) => m.remove(f.sandboxId)));
    assert.ok(!(await cr.gcLayers(0)).removed.includes(ck.fsManifest!), "kept: a fork's checkpoint restores onto it");
    assert.ok(fs.existsSync(layer));
    // The grace period covers a layer nothing names yet (a fork in progress).
    await cr.catalog.deleteSandbox(forks[0]!.sandboxId, { cascade: true });
    assert.ok(!(await cr.gcLayers()).removed.includes(ck.fsManifest!), 'kept: younger than the grace period');
    assert.ok((await cr.gcLayers(0)).removed.includes(ck.fsManifest!), 'removed once nothing names it');
    assert.ok(!fs.existsSync(layer));
    assert.equal(forkCk.sandboxId, forks[0]!.sandboxId);

    const [again] = await cr.fork(ck.id, 1, { prefix: `${prefix}-lf2` });
    assert.ok(fs.existsSync(layer), 'a new fork materializes the layer again');
    assert.equal((await m.exec(again!.sandboxId, 'cat /root/unique', { session: 'main' })).stdout.trim().startsWith(`${id}-`), true);
    await m.remove(again!.sandboxId);
  });

  test('a flipped byte in a stored chunk is detected and restore refuses, leaving the sandbox intact', async () => {
    const id = `${prefix}-bad`;
    await m.create({ name: id });
    await m.exec(id, 'echo precious > /root/p; sleep 999 &', { session: 'main' });
    const ck = await cr.take(id, { kind: 'full' });
    const recipe = await cr.store.getJson<DirRecipe>(ck.checkpoint.processImage!);
    const pages = recipe.entries.find((e) => e.type === 'file' && e.path.startsWith('pages-'));
    assert.ok(pages && pages.type === 'file');
    // Pick a chunk used only by this image, so other tests' checkpoints stay intact.
    const chunk = cr.store.chunkPath(pages.recipe.chunks[0]!);
    const buf = fs.readFileSync(chunk);
    buf[buf.length >> 1] ^= 0xff;
    fs.writeFileSync(chunk, buf);
    try {
      await assert.rejects(cr.rollback(id, ck.checkpoint.id), (err: Error & { code?: string }) => {
        assert.equal(err.code, 'STORE_CHUNK_CORRUPT');
        return true;
      });
      assert.equal((await m.status(id)).status, 'running');
      assert.equal((await m.exec(id, 'cat /root/p', { session: 'main' })).stdout, 'precious\n');
      // Only this image's chunks: the whole store grows with every bench run on the host.
      const bad = await cr.store.verify({ digests: pages.recipe.chunks });
      assert.ok(bad.some((b) => b.path === chunk));
    } finally {
      buf[buf.length >> 1] ^= 0xff;
      fs.writeFileSync(chunk, buf);
    }
  });

  test('restore refuses when host bind mounts changed, unless forced', async () => {
    const id = `${prefix}-bind`;
    const src = fs.mkdtempSync(`/tmp/${prefix}-bind-`);
    try {
      await m.create({ name: id, binds: [{ source: src, target: '/mnt/host' }] });
      await m.exec(id, 'ls /mnt/host >/dev/null; echo x > /root/x', { session: 'main' });
      const ck = await cr.take(id, { kind: 'full' });
      fs.rmSync(src, { recursive: true });
      fs.mkdirSync(src); // same path, different directory
      await assert.rejects(cr.rollback(id, ck.checkpoint.id), { code: 'CKPT_BINDS_CHANGED' });
      await cr.rollback(id, ck.checkpoint.id, { force: true });
      assert.equal((await m.exec(id, 'cat /root/x', { session: 'main' })).stdout, 'x\n');
    } finally {
      await m.destroy(id).catch(() => undefined);
      fs.rmSync(src, { recursive: true, force: true });
    }
  });
});
