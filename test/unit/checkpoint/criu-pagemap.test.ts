import test from 'node:test';
import assert from 'node:assert/strict';
import { CrabError } from '../../../src/core/errors.js';
import { isPagemapName, pageAffinity, parsePagemap, type Pagemap } from '../../../src/checkpoint/criu-pagemap.js';
import { varintField } from '../../support/proto-wire.js';

// Written by hand (not with the module's schema), as CRIU 4.2 writes them.
const field = varintField;
function image(pagesId: number, entries: Array<{ vaddr: number; pages: number; flags: number; compat?: boolean }>, magic = 0x56084025): Buffer {
  const msgs = [Buffer.from(field(1, pagesId))];
  for (const e of entries) {
    // CRIU 4.2: the count in field 5, 0 in the old field 2; older CRIU: only field 2
    msgs.push(Buffer.from([...field(1, e.vaddr), ...field(2, e.compat ? e.pages : 0), ...field(4, e.flags), ...(e.compat ? [] : field(5, e.pages))]));
  }
  const head = Buffer.alloc(8);
  head.writeUInt32LE(0x54564319, 0);
  head.writeUInt32LE(magic, 4);
  return Buffer.concat([head, ...msgs.flatMap((m) => [Buffer.from(Uint32Array.of(m.length).buffer), m])]);
}

test('parsePagemap: runs of present pages in file order, both page-count fields, PE_LAZY allowed', () => {
  const buf = image(3, [
    { vaddr: 0x7f0000001000, pages: 2, flags: 6 }, // PE_PRESENT | PE_LAZY: CRIU's usual anonymous memory
    { vaddr: 0x7f0000010000, pages: 1, flags: 4, compat: true },
    { vaddr: 0x7f0000020000, pages: 5, flags: 0 }, // no pages in the file
  ]);
  assert.deepEqual(parsePagemap('pagemap-1.img', buf), { pagesId: 3, runs: [[0x7f0000001, 2], [0x7f0000010, 1]] });
});

test('parsePagemap: a bad magic, a truncated entry, or pages in a parent dump are CRIU_IMAGE_UNREADABLE', () => {
  const good = image(1, [{ vaddr: 0x1000, pages: 1, flags: 4 }]);
  const rows: Array<[string, Buffer]> = [
    ['bad magic', image(1, [], 0x12345678)],
    ['too short', Buffer.alloc(4)],
    ['truncated entry', good.subarray(0, good.length - 2)],
    ['no head', good.subarray(0, 8)],
    ['in a parent dump', image(1, [{ vaddr: 0x1000, pages: 1, flags: 5 }])],
    ['unaligned', image(1, [{ vaddr: 0x1001, pages: 1, flags: 4 }])],
  ];
  for (const [why, buf] of rows) {
    assert.throws(() => parsePagemap('pagemap-1.img', buf), (e: unknown) => e instanceof CrabError && e.code === 'CRIU_IMAGE_UNREADABLE' && !!e.hint, why);
  }
});

test('pageAffinity: each new page to the parent page at its virtual address', () => {
  const parent = new Map<string, Pagemap>([
    ['pagemap-7.img', { pagesId: 2, runs: [[100, 3], [200, 2]] }],
    ['pagemap-9.img', { pagesId: 1, runs: [[50, 1]] }],
  ]);
  const current = new Map<string, Pagemap>([
    ['pagemap-7.img', { pagesId: 1, runs: [[99, 2], [201, 2]] }], // a page before 100, 100, then 201 and 202 (new)
    ['pagemap-9.img', { pagesId: 2, runs: [[50, 1]] }],
    ['pagemap-12.img', { pagesId: 3, runs: [[50, 1]] }], // a new process: no parent
  ]);
  const sizes: Record<string, number> = { 'pages-1.img': 4, 'pages-2.img': 7, 'pages-3.img': 1 };
  const out = pageAffinity(current, parent, (f) => sizes[f]);
  assert.deepEqual([...out.keys()], ['pages-1.img']); // pages-2.img's size disagrees with its pagemap: left out
  assert.deepEqual(out.get('pages-1.img'), { basisPath: 'pages-2.img', pages: Int32Array.of(-1, 0, 4, -1) });
});

test('isPagemapName: task and shared-memory pagemaps, nothing else', () => {
  const rows: Array<[string, boolean]> = [
    ['pagemap-1.img', true],
    ['pagemap-shmem-12345.img', true],
    ['pages-1.img', false],
    ['pagemap-1.img.tmp', false],
  ];
  for (const [name, want] of rows) assert.equal(isPagemapName(name), want, name);
});
