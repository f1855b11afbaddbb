import test from 'node:test';
import assert from 'node:assert/strict';
import { PAGE_BYTES, type FileRecipe } from '../../../src/store/content-store.js';
import { CrabError } from '../../../src/core/errors.js';
import { ExtentBuilder, extentWindows, planExtentReads, sliceExtent, type ChunkRef } from '../../../src/store/page-extents.js';
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
