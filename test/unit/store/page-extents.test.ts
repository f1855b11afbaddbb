import test from 'node:test';
import assert from 'node:assert/strict';
import { PAGE_BYTES, type FileRecipe } from '../../../src/store/content-store.js';
import { CrabError } from '../../../src/core/errors.js';
import { ExtentBuilder, copyExtent, extentWindows, nonZeroBytes, planExtentReads, sliceExtent, xorInto, type ChunkRef } from '../../../src/store/page-extents.js';
import { basisPageLocations } from '../../../src/store/page-basis.js';
import { PageIndex, pageIndexBound } from '../../../src/store/page-index.js';

const A = 'a'.repeat(64);
const B = 'b'.repeat(64);
const C = 'c'.repeat(64);
const ref = (digest: string, pages: number | null): ChunkRef => ({ digest, pages });

test('ExtentBuilder: whole chunks in order give the plain form, anything else extents', () => {
  const a = ref(A, 2);
  const b = ref(B, 3);
  const rows: Array<[string, Array<[ChunkRef, number]>, FileRecipe]> = [
    ['nothing: an empty plain recipe', [], { size: 0, chunks: [] }],
    ['two whole chunks', [[a, 0], [a, 1], [b, 0], [b, 1], [b, 2]], { size: 5 * PAGE_BYTES, chunks: [A, B] }],
    ['a whole chunk twice stays plain (the chunks repeat)', [[a, 0], [a, 1], [a, 0], [a, 1]], { size: 4 * PAGE_BYTES, chunks: [A, A] }],
    ['part of a chunk', [[b, 1], [b, 2]], { size: 2 * PAGE_BYTES, chunks: [B], extents: [0, 1, 2] }],
    ['pages out of order split extents; each chunk listed once', [[b, 2], [a, 0], [b, 0]], { size: 3 * PAGE_BYTES, chunks: [B, A], extents: [0, 2, 1, 1, 0, 1, 0, 0, 1] }],
    ['unknown chunk length: never plain', [[ref(C, null), 0]], { size: PAGE_BYTES, chunks: [C], extents: [0, 0, 1] }],
  ];
  for (const [why, pushes, want] of rows) {
    const x = new ExtentBuilder();
    for (const [r, p] of pushes) x.push(r, p);
    assert.deepEqual(x.recipe(want.size), want, why);
  }
});

test('ExtentBuilder: a chunk still being filled is resolved when it is cut', () => {
  const pending: ChunkRef = { digest: null, pages: null };
  const x = new ExtentBuilder();
  x.push(pending, 0);
  assert.throws(() => x.recipe(PAGE_BYTES));
  pending.digest = A;
  pending.pages = 1;
  assert.deepEqual(x.recipe(PAGE_BYTES), { size: PAGE_BYTES, chunks: [A] });
});

test('planExtentReads: reads in file order, and malformed extents are STORE_BAD_RECIPE', () => {
  const plan = planExtentReads({ size: 3 * PAGE_BYTES - 100, chunks: [A, B], extents: [0, 4, 1, 1, 0, 1, 0, 5, 1] });
  assert.deepEqual(plan, [
    { chunk: 0, offset: 0, first: 4, count: 1 },
    { chunk: 1, offset: PAGE_BYTES, first: 0, count: 1 },
    { chunk: 0, offset: 2 * PAGE_BYTES, first: 5, count: 1 },
  ]);
  const bad: Array<[string, FileRecipe & { extents: number[] }]> = [
    ['empty', { size: 0, chunks: [], extents: [] }],
    ['not triplets', { size: PAGE_BYTES, chunks: [A], extents: [0, 0] }],
    ['chunk index out of range', { size: PAGE_BYTES, chunks: [A], extents: [1, 0, 1] }],
    ['zero pages', { size: PAGE_BYTES, chunks: [A], extents: [0, 0, 0] }],
    ['negative', { size: PAGE_BYTES, chunks: [A], extents: [0, -1, 1] }],
    ['fraction', { size: PAGE_BYTES, chunks: [A], extents: [0, 0.5, 1] }],
    ['size beyond the pages', { size: PAGE_BYTES + 1, chunks: [A], extents: [0, 0, 1] }],
    ['a whole page more than the size', { size: PAGE_BYTES, chunks: [A], extents: [0, 0, 2] }],
    ['a chunk no extent uses', { size: PAGE_BYTES, chunks: [A, B], extents: [0, 0, 1] }],
  ];
  for (const [why, r] of bad) {
    assert.throws(() => planExtentReads(r), (e: unknown) => e instanceof CrabError && e.code === 'STORE_BAD_RECIPE', why);
  }
});

test('sliceExtent: the pages asked for, a short end of file, and a chunk too short', () => {
  const chunk = Buffer.alloc(3 * PAGE_BYTES - 10, 7);
  assert.equal(sliceExtent(chunk, { chunk: 0, offset: 0, first: 1, count: 1 }, 10 * PAGE_BYTES).length, PAGE_BYTES);
  assert.equal(sliceExtent(chunk, { chunk: 0, offset: PAGE_BYTES, first: 2, count: 1 }, 2 * PAGE_BYTES - 10).length, PAGE_BYTES - 10);
  assert.throws(() => sliceExtent(chunk, { chunk: 0, offset: 0, first: 2, count: 1 }, 10 * PAGE_BYTES), (e: unknown) => e instanceof CrabError && e.code === 'STORE_BAD_RECIPE');
});

test('extentWindows: bounded by bytes and by distinct chunks; a read bigger than the bound gets its own window', () => {
  const r = (chunk: number, count: number, offsetPages: number) => ({ chunk, offset: offsetPages * PAGE_BYTES, first: 0, count });
  const reads = [r(0, 1, 0), r(0, 1, 1), r(1, 1, 2), r(2, 1, 3), r(0, 1, 4), r(3, 10, 5), r(4, 1, 15)];
  const rows: Array<[string, number, number, number[]]> = [
    ['everything fits', 100 * PAGE_BYTES, 10, [0, 7]],
    ['two chunks per window (a chunk seen again is free)', 100 * PAGE_BYTES, 2, [0, 3, 5, 7]],
    ['four pages per window; the 10-page read alone', 4 * PAGE_BYTES, 10, [0, 4, 5, 6, 7]],
  ];
  for (const [why, bytes, chunks, want] of rows) assert.deepEqual(extentWindows(reads, bytes, chunks), want, why);
  assert.deepEqual(extentWindows([], PAGE_BYTES, 1), [0]);
});

test('PageIndex: lookup, refresh, forget and the bound', () => {
  const ix = new PageIndex(3);
  ix.add(A, ['p0', 'p1']);
  ix.add(B, ['p2'], 2); // a short second page has no fingerprint
  assert.deepEqual(ix.lookup('p1'), { chunk: A, page: 1 });
  assert.equal(ix.pagesOf(B), 2);
  ix.add(C, ['p3']); // over the bound: the oldest page (p0) goes
  assert.equal(ix.lookup('p0'), undefined);
  assert.deepEqual(ix.lookup('p3'), { chunk: C, page: 0 });
  ix.forget(C);
  assert.equal(ix.lookup('p3'), undefined);
  assert.equal(ix.has(C), false);
  ix.add(C, ['p3']); // written again: usable again
  assert.deepEqual(ix.lookup('p3'), { chunk: C, page: 0 });
  ix.add(B, ['p1']); // the same content now also in B: the newest place wins
  assert.deepEqual(ix.lookup('p1'), { chunk: B, page: 0 });
});

test('pageIndexBound: CRAB_PAGE_INDEX_PAGES unset, a count, 0, or rejected with CONFIG_INVALID', () => {
  const rows: Array<[string | undefined, number | undefined | 'invalid']> = [
    [undefined, undefined],
    ['', undefined],
    ['0', 0],
    ['4096', 4096],
    ['-1', 'invalid'],
    ['1.5', 'invalid'],
    ['lots', 'invalid'],
  ];
  for (const [value, want] of rows) {
    if (want === 'invalid') assert.throws(() => pageIndexBound(value), (e: unknown) => e instanceof CrabError && e.code === 'CONFIG_INVALID' && !!e.hint, String(value));
    else assert.equal(pageIndexBound(value), want, String(value));
  }
});

test('ExtentBuilder with bases: delta extents merge only when both runs continue, and are never the plain form', () => {
  const a = ref(A, 2);
  const b = ref(B, 4);
  const x = new ExtentBuilder();
  x.push(a, 0, { chunk: b, page: 1 });
  x.push(a, 1, { chunk: b, page: 2 }); // both continue: one extent
  x.push(b, 3); // a plain page
  x.push(b, 0, { chunk: a, page: 0 }); // base elsewhere
  x.push(b, 1, { chunk: a, page: 0 }); // base does not continue: a new extent
  assert.deepEqual(x.recipe(5 * PAGE_BYTES), { size: 5 * PAGE_BYTES, chunks: [A, B], extents: [0, 0, 2, 1, 3, 1, 1, 0, 1, 1, 1, 1], deltas: [0, 1, 1, 2, 0, 0, 3, 0, 0] });
  const whole = new ExtentBuilder();
  whole.push(a, 0, { chunk: b, page: 0 });
  whole.push(a, 1, { chunk: b, page: 1 });
  assert.deepEqual(whole.recipe(2 * PAGE_BYTES), { size: 2 * PAGE_BYTES, chunks: [A, B], extents: [0, 0, 2], deltas: [0, 1, 0] });
});

test('planExtentReads with deltas: bases attached to their extents; malformed deltas are STORE_BAD_RECIPE', () => {
  const plan = planExtentReads({ size: 2 * PAGE_BYTES, chunks: [A, B], extents: [0, 0, 1, 0, 1, 1], deltas: [1, 1, 5] });
  assert.deepEqual(plan[1], { chunk: 0, offset: PAGE_BYTES, first: 1, count: 1, base: { chunk: 1, first: 5 } });
  assert.equal(plan[0].base, undefined);
  const bad: Array<[string, number[]]> = [
    ['not triplets', [0, 1]],
    ['extent out of range', [2, 1, 0]],
    ['base chunk out of range', [0, 2, 0]],
    ['extents not increasing', [1, 1, 0, 0, 1, 0]],
    ['negative page', [0, 1, -1]],
  ];
  for (const [why, deltas] of bad) {
    assert.throws(() => planExtentReads({ size: 2 * PAGE_BYTES, chunks: [A, B], extents: [0, 0, 1, 0, 1, 1], deltas }), (e: unknown) => e instanceof CrabError && e.code === 'STORE_BAD_RECIPE', why);
  }
  assert.throws(() => planExtentReads({ size: PAGE_BYTES, chunks: [A, B], extents: [0, 0, 1] }), (e: unknown) => e instanceof CrabError && e.code === 'STORE_BAD_RECIPE', 'a base chunk no delta uses');
});

test('copyExtent: a delta extent gives its pages XORed with the base pages; a short end of file too', () => {
  const page = (fill: number) => Buffer.alloc(PAGE_BYTES, fill);
  const plainChunk = Buffer.concat([page(0x0f), page(0xf0)]);
  const deltaChunk = Buffer.concat([page(0x01), page(0x02)]);
  const chunkOf = (i: number) => [deltaChunk, plainChunk][i];
  const out = Buffer.alloc(2 * PAGE_BYTES - 7);
  const n = copyExtent({ chunk: 0, offset: 0, first: 0, count: 2, base: { chunk: 1, first: 0 } }, chunkOf, out.length, out, 0);
  assert.equal(n, out.length);
  assert.equal(out[0], 0x0e);
  assert.equal(out[PAGE_BYTES], 0xf2);
  assert.equal(out[out.length - 1], 0xf2);
  assert.throws(() => copyExtent({ chunk: 0, offset: 0, first: 0, count: 1, base: { chunk: 1, first: 2 } }, chunkOf, PAGE_BYTES, Buffer.alloc(PAGE_BYTES), 0), (e: unknown) => e instanceof CrabError && e.code === 'STORE_BAD_RECIPE', 'a base past its chunk');
});

test('basisPageLocations: plain form through the chunk page counts, extents with and without bases', () => {
  const pagesOf = (d: string) => ({ [A]: 2, [B]: 1 })[d];
  assert.deepEqual(basisPageLocations({ size: 3 * PAGE_BYTES, chunks: [A, B] }, pagesOf), [
    { chunk: A, page: 0 },
    { chunk: A, page: 1 },
    { chunk: B, page: 0 },
  ]);
  assert.deepEqual(basisPageLocations({ size: 3 * PAGE_BYTES, chunks: [C, A] }, pagesOf), [undefined, undefined, undefined], 'an unknown chunk length: nothing after it is known');
  assert.deepEqual(basisPageLocations({ size: 2 * PAGE_BYTES, chunks: [A, B], extents: [0, 1, 1, 1, 0, 1], deltas: [1, 0, 0] }, pagesOf), [
    { chunk: A, page: 1 },
    { chunk: B, page: 0, base: { chunk: A, page: 0 } },
  ]);
});

test('PageIndex: a delta location is gone when its base chunk is', () => {
  const ix = new PageIndex();
  ix.add(B, ['d0'], 1, [{ chunk: A, page: 3 }]);
  assert.deepEqual(ix.lookup('d0'), { chunk: B, page: 0, base: { chunk: A, page: 3 } });
  ix.forget(A);
  assert.equal(ix.lookup('d0'), undefined);
});

test('xorInto and nonZeroBytes: aligned and unaligned views give the same answer as a byte loop', () => {
  const a = Buffer.alloc(4096 + 8);
  const b = Buffer.alloc(4096 + 8);
  for (let i = 0; i < a.length; i++) a[i] = (i * 7) & 0xff;
  b.set(a);
  for (const i of [0, 5, 6, 7, 1000, 4095, 4101]) b[i] ^= 0x5a;
  for (const off of [0, 1, 4]) {
    const t = Buffer.from(a.subarray(off, off + 4096 + 3));
    const o = b.subarray(off, off + 4096 + 3);
    xorInto(t, o);
    const want = [0, 5, 6, 7, 1000, 4095, 4101].filter((i) => i >= off && i < off + 4096 + 3).length;
    assert.equal(nonZeroBytes(t, 100), want, `offset ${off}`);
    assert.ok(nonZeroBytes(t, 1) > 1, 'past the limit');
  }
});
