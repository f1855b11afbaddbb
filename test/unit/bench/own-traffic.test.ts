import test from 'node:test';
import assert from 'node:assert/strict';
import { ownTraffic, paperTraffic, usePages, useWhole, wholeTraffic, type ChunkUses, type PaperCheckpoint } from '../../../src/bench/own-traffic.js';

const sizes: Record<string, number> = { a: 1000, b: 400, c: 800 };
const pages: Record<string, number> = { a: 1, b: 4, c: 8 };

function ck(...uses: Array<[string, number, number] | string>): ChunkUses {
  const m: ChunkUses = new Map();
  for (const u of uses) {
    if (typeof u === 'string') useWhole(m, u);
    else usePages(m, ...u);
  }
  return m;
}

test('ownTraffic: a chunk costs its size the first time the run uses it, pro rata of the pages it names', () => {
  const rows: Array<[string, ChunkUses[], number[]]> = [
    ['nothing', [], []],
    ['a chunk used again is free', [ck('a'), ck('a'), ck('a', 'b')], [1000, 0, 400]],
    ['one page of four, then two more, then the whole', [ck(['b', 0, 1]), ck(['b', 0, 3]), ck('b')], [100, 200, 100]],
    ['the whole, then pages of it: free', [ck('c'), ck(['c', 2, 4])], [800, 0]],
    ['pages and the whole in one checkpoint: the whole wins', [ck(['c', 0, 1], 'c')], [800]],
    ['overlapping page runs count each page once', [ck(['c', 0, 4], ['c', 2, 4])], [600]],
  ];
  for (const [why, cks, want] of rows) assert.deepEqual(ownTraffic(cks, (d) => sizes[d]!, (d) => pages[d]!), want, why);
});

test('wholeTraffic: each checkpoint pays for everything it uses, as if nothing were written before it', () => {
  const rows: Array<[string, ChunkUses[], number[]]> = [
    ['nothing', [], []],
    ['a chunk used again is paid again', [ck('a'), ck('a'), ck('a', 'b')], [1000, 1000, 1400]],
    ['pages are paid pro rata, each time', [ck(['b', 0, 1]), ck(['b', 0, 3]), ck('b')], [100, 300, 400]],
    ['overlapping page runs count each page once within a checkpoint', [ck(['c', 0, 4], ['c', 2, 4])], [600]],
  ];
  for (const [why, cks, want] of rows) assert.deepEqual(wholeTraffic(cks, (d) => sizes[d]!, (d) => pages[d]!), want, why);
});

test("paperTraffic: each checkpoint's own CRIU images whole, plus the files whose content changed since the run's previous checkpoint, whole", () => {
  const files = (...fs: Array<[string, string, number, number?]>) => new Map(fs.map(([p, content, size, linkGroup]) => [p, { content, size, linkGroup }]));
  const rows: Array<[string, PaperCheckpoint[], number[]]> = [
    ['nothing', [], []],
    ['the first checkpoint pays for every file and its image', [{ imageBytes: 5000, files: files(['a', 'x', 100], ['b', 'y', 30]) }], [5130]],
    [
      'unchanged files are free; a changed or new one is paid whole; an fs checkpoint dumps no image',
      [{ imageBytes: 5000, files: files(['a', 'x', 100], ['b', 'y', 30]) }, { imageBytes: 0, files: files(['a', 'x', 100], ['b', 'y2', 31], ['c', 'z', 7]) }, { imageBytes: 4000, files: files(['a', 'x', 100], ['b', 'y2', 31], ['c', 'z', 7]) }],
      [5130, 38, 4000],
    ],
    ['a file deleted and restored is new again', [{ imageBytes: 0, files: files(['a', 'x', 100]) }, { imageBytes: 0, files: files() }, { imageBytes: 0, files: files(['a', 'x', 100]) }], [100, 0, 100]],
    ['hard links to one file are one file', [{ imageBytes: 0, files: files(['a', 'x', 100, 1], ['b', 'x', 100, 1], ['c', 'x', 100]) }], [200]],
    ['a file moved is new under its new path', [{ imageBytes: 0, files: files(['a', 'x', 100]) }, { imageBytes: 0, files: files(['b', 'x', 100]) }], [100, 100]],
  ];
  for (const [why, cks, want] of rows) assert.deepEqual(paperTraffic(cks), want, why);
});
