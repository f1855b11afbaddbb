import test from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { LocalContentStore, sha256 } from '../../../src/store/local-content-store.js';
import { PAGE_BYTES, type PageAffinity } from '../../../src/store/content-store.js';
import { CrabError } from '../../../src/core/errors.js';
import { testPrefix } from '../../support/root.js';
import { pseudoRandom } from '../../support/bytes.js';

async function withStore(fn: (s: LocalContentStore, dir: string) => Promise<void>): Promise<void> {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), testPrefix('store') + '-'));
  try {
    await fn(await LocalContentStore.open(path.join(dir, 'store')), dir);
  } finally {
    await fs.rm(dir, { recursive: true, force: true });
  }
}

test('put dedups: the second put of the same bytes writes 0 new bytes', () =>
  withStore(async (s) => {
    const buf = randomBytes(100_000);
    const a = await s.put(buf);
    assert.equal(a.digest, sha256(buf));
    assert.ok(a.newBytes > 0);
    const b = await s.put(Buffer.from(buf));
    assert.equal(b.digest, a.digest);
    assert.equal(b.newBytes, 0);
    assert.ok(await s.has(a.digest));
    assert.deepEqual(await s.get(a.digest), buf);
    assert.deepEqual(await s.stats(), { chunkCount: 1, storedBytes: a.newBytes });
  }));

test('get of an absent chunk throws STORE_CHUNK_MISSING', () =>
  withStore(async (s) => {
    await assert.rejects(s.get(sha256(Buffer.from('nope'))), (e: unknown) => e instanceof CrabError && e.code === 'STORE_CHUNK_MISSING');
    await assert.rejects(s.get('xyz'), (e: unknown) => e instanceof CrabError && e.code === 'STORE_BAD_DIGEST');
  }));

test('a flipped byte is detected as STORE_CHUNK_CORRUPT by get and verify', () =>
  withStore(async (s) => {
    const good = await s.put(Buffer.from('hello '.repeat(1000)));
    const victim = await s.put(randomBytes(50_000));
    const p = s.chunkPath(victim.digest);
    await fs.chmod(p, 0o644);
    const raw = await fs.readFile(p);
    raw[raw.length >> 1] ^= 0x40;
    await fs.writeFile(p, raw);
    await assert.rejects(s.get(victim.digest), (e: unknown) => {
      assert.ok(e instanceof CrabError);
      assert.equal(e.code, 'STORE_CHUNK_CORRUPT');
      assert.ok(e.hint && e.hint.length > 10, 'says what to do');
      return true;
    });
    const bad = await s.verify();
    assert.deepEqual(bad.map((b) => b.digest), [victim.digest]);
    assert.ok(await s.get(good.digest));
    // Only some chunks: the corrupt one among them, and a digest that is not stored at all.
    const absent = 'f'.repeat(64);
    const some = await s.verify({ digests: [good.digest, victim.digest, absent] });
    assert.deepEqual(some.map((b) => [b.digest, b.why === 'missing']), [[victim.digest, false], [absent, true]]);
    assert.deepEqual(await s.verify({ digests: [good.digest] }), []);
  }));

test('truncated zstd frame is corrupt too', () =>
  withStore(async (s) => {
    const r = await s.put(randomBytes(10_000));
    await fs.truncate(s.chunkPath(r.digest), 100);
    await assert.rejects(s.get(r.digest), (e: unknown) => e instanceof CrabError && e.code === 'STORE_CHUNK_CORRUPT');
  }));

test('putFile/materializeFile round-trip, whole and pages, incl. empty and unaligned sizes', () =>
  withStore(async (s, dir) => {
    for (const size of [0, 1, 4095, 4096, 5 * 1024 * 1024 + 17]) {
      for (const chunking of ['whole', 'pages'] as const) {
        const src = path.join(dir, `f-${size}-${chunking}`);
        const data = randomBytes(size);
        await fs.writeFile(src, data);
        const r = await s.putFile(src, { chunking });
        assert.equal(r.recipe.size, size);
        assert.equal(r.sha256, sha256(data));
        const out = src + '.out';
        await s.materializeFile(r.recipe, out, { mode: 0o600 });
        assert.deepEqual(await fs.readFile(out), data);
        assert.equal((await fs.stat(out)).mode & 0o777, 0o600);
      }
    }
  }));

test('page chunking: two files differing in one 4 KiB page store about one chunk new', () =>
  withStore(async (s, dir) => {
    const pages = 2048; // 8 MiB
    const a = randomBytes(pages * PAGE_BYTES);
    const b = Buffer.from(a);
    randomBytes(PAGE_BYTES).copy(b, 1000 * PAGE_BYTES);
    await fs.writeFile(path.join(dir, 'a'), a);
    await fs.writeFile(path.join(dir, 'b'), b);
    const ra = await s.putFile(path.join(dir, 'a'), { chunking: 'pages' });
    const before = await s.stats();
    const rb = await s.putFile(path.join(dir, 'b'), { chunking: 'pages' });
    const after = await s.stats();
    const newChunks = after.chunkCount - before.chunkCount;
    assert.ok(newChunks >= 1 && newChunks <= 2, `new chunks: ${newChunks}`);
    // At most the two chunks around the change are new; a chunk is at most 64 pages (random data: no compression).
    const twoMaxChunks = 2 * 64 * PAGE_BYTES * 1.01;
    assert.ok(rb.newBytes < twoMaxChunks, `new bytes ${rb.newBytes} vs first ${ra.newBytes}`);
    // an inserted page shifts the rest of the file: content-defined boundaries resync
    const c = Buffer.concat([a.subarray(0, 10 * PAGE_BYTES), randomBytes(PAGE_BYTES), a.subarray(10 * PAGE_BYTES)]);
    await fs.writeFile(path.join(dir, 'c'), c);
    const rc = await s.putFile(path.join(dir, 'c'), { chunking: 'pages' });
    assert.ok(rc.newBytes < twoMaxChunks, `insert: new bytes ${rc.newBytes}`);
    const avgChunk = a.length / ra.recipe.chunks.length;
    assert.ok(avgChunk > 32 * 1024 && avgChunk < 128 * 1024, `mean chunk ${avgChunk}`);
  }));

test('putDir/materializeDir round-trip a CRIU-like image directory', () =>
  withStore(async (s, dir) => {
    const img = path.join(dir, 'img');
    await fs.mkdir(path.join(img, 'sub'), { recursive: true });
    await fs.writeFile(path.join(img, 'pages-1.img'), randomBytes(300 * PAGE_BYTES));
    await fs.writeFile(path.join(img, 'pagemap-1.img'), randomBytes(1234));
    await fs.writeFile(path.join(img, 'sub', 'x'), 'x');
    await fs.chmod(path.join(img, 'pagemap-1.img'), 0o600);
    const r = await s.putDir(img);
    assert.equal(r.logicalBytes, 300 * PAGE_BYTES + 1234 + 1);
    const pagesEntry = r.recipe.entries.find((e) => e.path === 'pages-1.img');
    assert.equal(pagesEntry?.type === 'file' && pagesEntry.chunking, 'pages');
    assert.deepEqual(await s.getJson(r.recipeDigest), r.recipe);
    const again = await s.putDir(img);
    assert.equal(again.newBytes, 0);
    const out = path.join(dir, 'out');
    await s.materializeDir(r.recipe, out);
    for (const f of ['pages-1.img', 'pagemap-1.img', 'sub/x']) {
      assert.deepEqual(await fs.readFile(path.join(out, f)), await fs.readFile(path.join(img, f)));
    }
    assert.equal((await fs.stat(path.join(out, 'pagemap-1.img'))).mode & 0o777, 0o600);
    await fs.symlink('x', path.join(img, 'link'));
    await assert.rejects(s.putDir(img), (e: unknown) => e instanceof CrabError && e.code === 'STORE_UNSUPPORTED_ENTRY');
  }));

test('sweep never deletes a live chunk, keeps young ones, deletes old unreferenced ones', () =>
  withStore(async (s) => {
    const live = await s.put(Buffer.from('live'));
    const dead = await s.put(Buffer.from('dead'));
    const young = await s.put(Buffer.from('young'));
    const old = new Date(Date.now() - 2 * 3600_000);
    await fs.utimes(s.chunkPath(live.digest), old, old);
    await fs.utimes(s.chunkPath(dead.digest), old, old);
    await fs.writeFile(path.join(s.tmpDir, 'abandoned'), 'x');
    await fs.utimes(path.join(s.tmpDir, 'abandoned'), old, old);
    const dry = await s.sweep(new Set([live.digest]), { dryRun: true });
    assert.equal(dry.deletedChunks, 1);
    assert.ok(await s.has(dead.digest));
    const r = await s.sweep(new Set([live.digest]));
    assert.deepEqual({ ...r, freedBytes: r.freedBytes > 0 }, { deletedChunks: 1, freedBytes: true, keptYoung: 1, keptLive: 1 });
    assert.ok(await s.has(live.digest));
    assert.ok(!(await s.has(dead.digest)));
    assert.ok(await s.has(young.digest));
    assert.deepEqual(await fs.readdir(s.tmpDir), []);
    // a dedup hit refreshes the mtime, so a chunk being re-referenced survives a sweep with a grace period
    const again = await s.put(Buffer.from('live'));
    assert.equal(again.newBytes, 0);
    const r2 = await s.sweep(new Set(), { graceMs: 60_000 });
    assert.equal(r2.deletedChunks, 0);
    // graceMs 0 deletes everything unreferenced, a put afterwards writes it again
    await s.sweep(new Set(), { graceMs: 0 });
    assert.equal((await s.stats()).chunkCount, 0);
    assert.ok((await s.put(Buffer.from('live'))).newBytes > 0);
  }));

test('concurrent puts and a sweep: every put digest remains readable', () =>
  withStore(async (s) => {
    const bufs = Array.from({ length: 50 }, (_, i) => Buffer.from(`chunk-${i % 10}`));
    const puts = Promise.all(bufs.map((b) => s.put(b)));
    const sweeps = Promise.all([s.sweep(new Set()), s.sweep(new Set())]);
    const [res] = await Promise.all([puts, sweeps]);
    for (const r of res) assert.ok(await s.get(r.digest));
  }));

/** 2048 random pages, then the same with `dirty` scattered pages rewritten. */
async function dumps(dir: string, dirty: number): Promise<{ a: string; b: string; bBytes: Buffer }> {
  const a = randomBytes(2048 * PAGE_BYTES);
  const b = Buffer.from(a);
  for (let i = 0; i < dirty; i++) randomBytes(PAGE_BYTES).copy(b, (7 + i * 97) * PAGE_BYTES);
  await fs.mkdir(path.join(dir, 'a'), { recursive: true });
  await fs.mkdir(path.join(dir, 'b'), { recursive: true });
  await fs.writeFile(path.join(dir, 'a', 'pages-1.img'), a);
  await fs.writeFile(path.join(dir, 'b', 'pages-1.img'), b);
  return { a: path.join(dir, 'a'), b: path.join(dir, 'b'), bBytes: b };
}

test('page reuse: a dump with 20 scattered dirty pages stores those pages, not the 20 chunks around them', () =>
  withStore(async (s, dir) => {
    const { a, b, bBytes } = await dumps(dir, 20);
    const ra = await s.putDir(a);
    const rb = await s.putDir(b, { basis: ra.recipeDigest });
    // 20 random (incompressible) pages plus the recipe; 64 KiB chunks would have cost ~1.3 MiB
    assert.ok(rb.newBytes < 24 * PAGE_BYTES + 64 * 1024, `new bytes ${rb.newBytes}`);
    const e = rb.recipe.entries.find((x) => x.path === 'pages-1.img');
    assert.ok(e?.type === 'file' && e.recipe.extents, 'an extents recipe');
    await s.materializeDir(rb.recipe, path.join(dir, 'out'));
    assert.deepEqual(await fs.readFile(path.join(dir, 'out', 'pages-1.img')), bBytes);
    // with the index off, the same dump costs the chunks around each dirty page
    const plain = await LocalContentStore.open(path.join(dir, 'plain'), { pageIndexPages: 0 });
    await plain.putDir(a);
    const rp = await plain.putDir(b);
    assert.ok(rp.newBytes > 10 * rb.newBytes, `plain ${rp.newBytes} vs extents ${rb.newBytes}`);
  }));

test('page reuse in a new process: the basis recipe warms the page index', () =>
  withStore(async (s, dir) => {
    const { a, b, bBytes } = await dumps(dir, 5);
    const ra = await s.putDir(a);
    const fresh = await LocalContentStore.open(s.root); // a restarted daemon: empty index
    const rb = await fresh.putDir(b, { basis: ra.recipeDigest });
    assert.ok(rb.newBytes < 8 * PAGE_BYTES + 64 * 1024, `new bytes ${rb.newBytes}`);
    await fresh.materializeDir(rb.recipe, path.join(dir, 'out'));
    assert.deepEqual(await fs.readFile(path.join(dir, 'out', 'pages-1.img')), bBytes);
  }));

test('page reuse never names a chunk the disk lost: a swept chunk, a corrupt basis chunk, a missing basis', () =>
  withStore(async (s, dir) => {
    const { a, b, bBytes } = await dumps(dir, 5);
    const ra = await s.putDir(a);
    const e = ra.recipe.entries.find((x) => x.path === 'pages-1.img');
    assert.ok(e?.type === 'file');
    const names = (r: { recipe: { entries: Array<{ type: string; recipe?: { chunks: string[] } }> } }): string[] =>
      r.recipe.entries.flatMap((x) => x.recipe?.chunks ?? []);
    let firstPage = 0;
    let victim = '';
    for (const d of e.recipe.chunks) {
      const pages = (await s.get(d)).length / PAGE_BYTES;
      if (firstPage <= 395 && 395 < firstPage + pages) victim = d;
      firstPage += pages;
    }
    const swept = e.recipe.chunks[3];
    assert.ok(victim && victim !== swept);
    // a sweep removed a chunk the index knows: its pages are stored again (chunk 3 starts after
    // page 7, b's first new page, so b's new chunks cannot be byte-equal to it)
    await fs.rm(s.chunkPath(swept));
    const rb = await s.putDir(b, { basis: ra.recipeDigest });
    assert.ok(!names(rb).includes(swept));
    await s.materializeDir(rb.recipe, path.join(dir, 'out'));
    assert.deepEqual(await fs.readFile(path.join(dir, 'out', 'pages-1.img')), bBytes);
    // a new process warms from a basis with a corrupt chunk: skipped (a warning), the put succeeds.
    // The victim holds a page b changed (page 395, past chunk 3's reach of 4 × 64 pages), so b's
    // new chunks cannot be byte-equal to it (a put of equal bytes would rewrite it).
    await fs.chmod(s.chunkPath(victim), 0o644);
    await fs.writeFile(s.chunkPath(victim), 'garbage');
    const fresh = await LocalContentStore.open(s.root);
    const rc = await fresh.putDir(b, { basis: ra.recipeDigest });
    assert.ok(!names(rc).includes(victim));
    await fresh.materializeDir(rc.recipe, path.join(dir, 'out2'));
    assert.deepEqual(await fs.readFile(path.join(dir, 'out2', 'pages-1.img')), bBytes);
    // the basis recipe itself is gone: no warm-up, the put still succeeds (with a cold index its
    // content-defined chunks are a's again, the corrupt one among them: the put rewrites it)
    await fs.rm(s.chunkPath(ra.recipeDigest));
    const rd = await (await LocalContentStore.open(s.root)).putDir(b, { basis: ra.recipeDigest });
    await s.materializeDir(rd.recipe, path.join(dir, 'out3'));
    assert.deepEqual(await fs.readFile(path.join(dir, 'out3', 'pages-1.img')), bBytes);
  }));

/**
 * A dump `a` of 512 random pages at pages-1.img, and `b`: pages-2.img, the same process a turn
 * later, with two pages inserted at the front (heap growth: its pages moved in the file), 30
 * pages with a few words changed, and 3 pages rewritten whole. `affinity` maps b's pages to a's.
 */
async function movedDumps(dir: string): Promise<{ a: string; b: string; bBytes: Buffer; affinity: Map<string, PageAffinity> }> {
  const aBytes = randomBytes(512 * PAGE_BYTES);
  const grown = Buffer.concat([randomBytes(2 * PAGE_BYTES), aBytes]);
  for (let i = 0; i < 30; i++) for (let w = 0; w < 4; w++) randomBytes(8).copy(grown, (2 + 5 + i * 13) * PAGE_BYTES + w * 512);
  for (const p of [101, 201, 301]) randomBytes(PAGE_BYTES).copy(grown, (2 + p) * PAGE_BYTES);
  const pages = Int32Array.from({ length: 514 }, (_, i) => i - 2); // the two new pages have none (-1, -2 is out of range too)
  pages[0] = -1;
  await fs.mkdir(path.join(dir, 'a'), { recursive: true });
  await fs.mkdir(path.join(dir, 'b'), { recursive: true });
  await fs.writeFile(path.join(dir, 'a', 'pages-1.img'), aBytes);
  await fs.writeFile(path.join(dir, 'b', 'pages-2.img'), grown);
  return { a: path.join(dir, 'a'), b: path.join(dir, 'b'), bBytes: grown, affinity: new Map([['pages-2.img', { basisPath: 'pages-1.img', pages }]]) };
}

test('XOR deltas: pages with a few changed words cost a few bytes each, restore exactly, and chains stay one link long', () =>
  withStore(async (s, dir) => {
    const { a, b, bBytes, affinity } = await movedDumps(dir);
    const ra = await s.putDir(a);
    const rb = await s.putDir(b, { basis: ra.recipeDigest, affinity });
    const e = rb.recipe.entries.find((x) => x.path === 'pages-2.img');
    assert.ok(e?.type === 'file' && e.recipe.deltas, 'a recipe with deltas');
    assert.equal(rb.recipe.format, 'crab-dir/2');
    assert.equal(e.recipe.deltas.length / 3, 30, 'one delta extent per changed page');
    // 2 new + 3 rewritten random pages, 30 deltas of 32 changed bytes, the recipe
    assert.ok(rb.newBytes < 5 * PAGE_BYTES + 16 * 1024, `new bytes ${rb.newBytes}`);
    await s.materializeDir(rb.recipe, path.join(dir, 'out'));
    assert.deepEqual(await fs.readFile(path.join(dir, 'out', 'pages-2.img')), bBytes);
    // without the hint, the same dump stores the 30 changed pages whole
    const plain = await LocalContentStore.open(path.join(dir, 'plain'));
    const pa = await plain.putDir(a);
    const pb = await plain.putDir(b, { basis: pa.recipeDigest });
    assert.ok(pb.newBytes > 30 * PAGE_BYTES, `plain ${pb.newBytes}`);
    // a third dump against b: an unchanged delta page is named as it is, a changed one is cut
    // against its plain base (not against b's delta), and GC sees every chunk a restore needs
    const c = Buffer.from(bBytes);
    randomBytes(8).copy(c, (2 + 5) * PAGE_BYTES + 1024);
    await fs.mkdir(path.join(dir, 'c'), { recursive: true });
    await fs.writeFile(path.join(dir, 'c', 'pages-3.img'), c);
    const same = Int32Array.from({ length: 514 }, (_, i) => i);
    const rc = await s.putDir(path.join(dir, 'c'), { basis: rb.recipeDigest, affinity: new Map([['pages-3.img', { basisPath: 'pages-2.img', pages: same }]]) });
    const ec = rc.recipe.entries.find((x) => x.path === 'pages-3.img');
    assert.ok(ec?.type === 'file' && ec.recipe.deltas);
    const aChunks = new Set(ra.recipe.entries.flatMap((x) => (x.type === 'file' ? x.recipe.chunks : [])));
    for (let k = 0; k < ec.recipe.deltas.length; k += 3) assert.ok(aChunks.has(ec.recipe.chunks[ec.recipe.deltas[k + 1]]), 'every base is a page of the plain dump a');
    await fs.rm(path.join(dir, 'out'), { recursive: true });
    await s.materializeDir(rc.recipe, path.join(dir, 'out'));
    assert.deepEqual(await fs.readFile(path.join(dir, 'out', 'pages-3.img')), c);
  }));

test('XOR deltas are only a hint: wrong, out-of-range or unreadable basis pages still restore exactly', () =>
  withStore(async (s, dir) => {
    const { a, b, bBytes } = await movedDumps(dir);
    const ra = await s.putDir(a);
    const wrong = Int32Array.from({ length: 514 }, (_, i) => (i * 7919) % 600); // shuffled, some past a's end
    const cases: Array<[string, ReadonlyMap<string, PageAffinity>]> = [
      ['wrong pages', new Map([['pages-2.img', { basisPath: 'pages-1.img', pages: wrong }]])],
      ['a basis file that does not exist', new Map([['pages-2.img', { basisPath: 'pages-9.img', pages: wrong }]])],
      ['a hint shorter than the file', new Map([['pages-2.img', { basisPath: 'pages-1.img', pages: new Int32Array(3) }]])],
    ];
    for (const [why, affinity] of cases) {
      const fresh = await LocalContentStore.open(s.root); // cold index: every changed page looks for a base
      const rb = await fresh.putDir(b, { basis: ra.recipeDigest, affinity });
      const out = path.join(dir, `out-${why.replaceAll(' ', '-')}`);
      await fresh.materializeDir(rb.recipe, out);
      assert.deepEqual(await fs.readFile(path.join(out, 'pages-2.img')), bBytes, why);
    }
    // a base chunk lost since: skipped with a warning, the page is stored plainly
    const e = ra.recipe.entries.find((x) => x.path === 'pages-1.img');
    assert.ok(e?.type === 'file');
    for (const d of e.recipe.chunks) await fs.rm(s.chunkPath(d));
    const pages = Int32Array.from({ length: 514 }, (_, i) => i - 2);
    const fresh = await LocalContentStore.open(s.root);
    const rb = await fresh.putDir(b, { basis: ra.recipeDigest, affinity: new Map([['pages-2.img', { basisPath: 'pages-1.img', pages }]]) });
    const eb = rb.recipe.entries.find((x) => x.path === 'pages-2.img');
    assert.ok(eb?.type === 'file' && !eb.recipe.deltas);
    await fresh.materializeDir(rb.recipe, path.join(dir, 'out-lost'));
    assert.deepEqual(await fs.readFile(path.join(dir, 'out-lost', 'pages-2.img')), bBytes);
  }));

test("whole chunking: a line inserted in a big file, or appended to it, stores about one chunk (not the rest of the file); putBuffers cuts as putFile", () =>
  withStore(async (s, dir) => {
    const a = pseudoRandom(20 * 1024 * 1024, 5);
    const b = Buffer.concat([a.subarray(0, 9 * 1024 * 1024), Buffer.from('one more line\n'), a.subarray(9 * 1024 * 1024)]);
    await fs.writeFile(path.join(dir, 'a'), a);
    await fs.writeFile(path.join(dir, 'b'), b);
    const ra = await s.putFile(path.join(dir, 'a'), { chunking: 'whole' });
    const rb = await s.putFile(path.join(dir, 'b'), { chunking: 'whole' });
    assert.ok(rb.newBytes < 8 * 1024 * 1024, `insert: ${rb.newBytes} new of ${ra.newBytes}`);
    const { results } = await s.putBuffers([b], { chunking: 'whole' });
    assert.deepEqual(results[0]!.recipe, rb.recipe);
    const out = path.join(dir, 'b.out');
    await s.materializeFile(rb.recipe, out);
    assert.deepEqual(await fs.readFile(out), b);
  }));

test('a put of bytes whose stored chunk went bad rewrites it; a check is trusted only for the trust period', () =>
  withStore(async (s, dir) => {
    const buf = randomBytes(200_000);
    const a = await s.put(buf);
    const corrupt = async () => {
      await fs.chmod(s.chunkPath(a.digest), 0o644);
      await fs.writeFile(s.chunkPath(a.digest), 'garbage');
    };
    await corrupt();
    // this process wrote it a moment ago: within the trust period it is not read again
    assert.equal((await s.put(buf)).newBytes, 0);
    // a process that has not checked it (or whose check is too old) reads it first, and rewrites it
    const cold = await LocalContentStore.open(s.root);
    const b = await cold.put(buf);
    assert.ok(b.newBytes > 0, 'rewritten');
    assert.equal(cold.repairedChunks, 1);
    assert.deepEqual(await cold.get(a.digest), buf);
    assert.deepEqual(await s.verify(), []);
    // trust period 0: every put of an existing chunk checks it
    const strict = await LocalContentStore.open(s.root, { verifiedTrustMs: 0 });
    assert.equal((await strict.put(buf)).newBytes, 0, 'good: nothing written');
    await corrupt();
    assert.ok((await strict.put(buf)).newBytes > 0);
    assert.deepEqual(await strict.get(a.digest), buf);
    // putFile of a file with those bytes goes the same way
    await corrupt();
    await fs.writeFile(path.join(dir, 'f'), buf);
    const r = await strict.putFile(path.join(dir, 'f'), { chunking: 'whole' });
    assert.ok(r.newBytes > 0);
    assert.deepEqual(await strict.get(a.digest), buf);
  }));

test('checkUnverified reads only chunks not checked lately, and finds the bad ones', () =>
  withStore(async (s) => {
    const good = await s.put(randomBytes(10_000));
    const bad = await s.put(randomBytes(10_000));
    await fs.chmod(s.chunkPath(bad.digest), 0o644);
    await fs.writeFile(s.chunkPath(bad.digest), 'garbage');
    const gone = sha256(Buffer.from('never stored'));
    assert.deepEqual(await s.checkUnverified([good.digest, bad.digest]), [], 'both were written by this process just now');
    const cold = await LocalContentStore.open(s.root);
    const found = await cold.checkUnverified([good.digest, bad.digest, gone, good.digest]);
    assert.deepEqual(found.map((c) => [c.digest, c.why]).sort(), [[bad.digest, 'not a valid zstd frame'], [gone, 'missing']].sort());
    assert.ok(cold.verified.fresh(good.digest) && !cold.verified.fresh(bad.digest));
  }));

test('page reuse reads a stored page chunk not checked lately before naming it, and never names a bad one', () =>
  withStore(async (s, dir) => {
    const { a, b, bBytes } = await dumps(dir, 5);
    const strict = await LocalContentStore.open(s.root, { verifiedTrustMs: 0 });
    const ra = await strict.putDir(a);
    const e = ra.recipe.entries.find((x) => x.path === 'pages-1.img');
    assert.ok(e?.type === 'file');
    const victim = e.recipe.chunks[0]!;
    await fs.chmod(strict.chunkPath(victim), 0o644);
    await fs.writeFile(strict.chunkPath(victim), 'garbage');
    // the page index of this very process knows the victim's pages; it is read before being named
    const rb = await strict.putDir(b, { basis: ra.recipeDigest });
    const named = rb.recipe.entries.flatMap((x) => (x.type === 'file' ? x.recipe.chunks : []));
    assert.deepEqual(await strict.verify({ digests: named }), [], 'every chunk the recipe names is good (the victim was not named, or was rewritten)');
    await strict.materializeDir(rb.recipe, path.join(dir, 'out'));
    assert.deepEqual(await fs.readFile(path.join(dir, 'out', 'pages-1.img')), bBytes);
  }));
