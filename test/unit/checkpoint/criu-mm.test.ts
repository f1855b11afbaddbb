import test from 'node:test';
import assert from 'node:assert/strict';
import { CrabError } from '../../../src/core/errors.js';
import { parseMm, relocation, type MemoryLayout, type Vma } from '../../../src/checkpoint/criu-mm.js';
import { pageAffinity, type Pagemap } from '../../../src/checkpoint/criu-pagemap.js';
import { bytesField, varintField } from '../../support/proto-wire.js';

// Written by hand (not with the module's schema), as CRIU 4.2 writes them.
const num = varintField;
const bytes = bytesField;
const P = 4096;
const HEAP = 1 << 5;
const STACK = 1 << 1;
const ANON = (1 << 9) | 1; // VMA_ANON_PRIVATE | VMA_AREA_REGULAR
const FILE = (1 << 6) | 1; // VMA_FILE_PRIVATE | VMA_AREA_REGULAR

function mmImage(startCode: number, startBrk: number, vmas: Vma[], magic = 0x57492820): Buffer {
  const vmaBytes = (v: Vma) => [...num(1, v.start), ...num(2, v.end), ...num(3, v.pgoff), ...num(4, 7), ...num(5, v.prot), ...num(6, v.flags), ...num(7, v.status), ...num(8, 1) /* fd -1, zigzag */];
  // the fields CRIU writes before the areas (code/data/stack/brk/args/env/exe), then the areas
  const msg = Buffer.from([...num(1, startCode), ...num(2, startCode + 10 * P), ...num(3, 0), ...num(4, 0), ...num(5, 0x7ffd0000), ...num(6, startBrk), ...num(7, startBrk + 33 * P), ...num(8, 0), ...num(9, 0), ...num(10, 0), ...num(11, 0), ...num(12, 9), ...vmas.flatMap((v) => bytes(14, vmaBytes(v)))]);
  const head = Buffer.alloc(12);
  head.writeUInt32LE(0x54564319, 0);
  head.writeUInt32LE(magic, 4);
  head.writeUInt32LE(msg.length, 8);
  return Buffer.concat([head, msg]);
}

/** A program's layout at base addresses: exe image, heap, two libraries and an arena in the mmap area, a stack. */
function layout(exe: number, brk: number, mmapTop: number, stack: number): { vmas: Vma[]; startCode: number; startBrk: number } {
  const vmas: Vma[] = [
    { start: exe, end: exe + P, pgoff: 0, prot: 1, flags: 2, status: FILE },
    { start: exe + P, end: exe + 11 * P, pgoff: P, prot: 5, flags: 2, status: FILE },
    { start: exe + 11 * P, end: exe + 14 * P, pgoff: 11 * P, prot: 3, flags: 2, status: FILE },
    { start: exe + 14 * P, end: exe + 16 * P, pgoff: 0, prot: 3, flags: 0x22, status: ANON }, // bss
    { start: brk, end: brk + 33 * P, pgoff: 0, prot: 3, flags: 0x22, status: ANON | HEAP },
    { start: mmapTop - 300 * P, end: mmapTop - 44 * P, pgoff: 0, prot: 3, flags: 0x22, status: ANON }, // an arena
    { start: mmapTop - 44 * P, end: mmapTop - 40 * P, pgoff: 0x1000, prot: 3, flags: 2, status: FILE }, // libfoo data
    { start: mmapTop - 10 * P, end: mmapTop - 8 * P, pgoff: 0x3000, prot: 3, flags: 2, status: FILE }, // libc data
    { start: stack - 33 * P, end: stack, pgoff: 0, prot: 3, flags: 0x122, status: ANON | STACK },
  ];
  return { vmas, startCode: exe + P, startBrk: brk };
}

test('parseMm: code and brk starts and the areas, sorted by address', () => {
  const l = layout(0x55550000_0000, 0x55550010_0000, 0x7f000000_0000, 0x7ffd0000_0000);
  const vsyscall = { start: 0xffffffffff600000, end: 0xffffffffff601000, pgoff: 0, prot: 4, flags: 0x22, status: (1 << 2) | 1 };
  const got = parseMm('mm-1.img', mmImage(l.startCode, l.startBrk, [...l.vmas, vsyscall].reverse()));
  assert.deepEqual(got, l, 'the vsyscall page (above 2^53) is left out');
});

test('parseMm: bad magic, truncation, unaligned areas are CRIU_IMAGE_UNREADABLE', () => {
  const l = layout(0x55550000_0000, 0x55550010_0000, 0x7f000000_0000, 0x7ffd0000_0000);
  const good = mmImage(l.startCode, l.startBrk, l.vmas);
  const rows: Array<[string, Buffer]> = [
    ['bad magic', mmImage(l.startCode, l.startBrk, l.vmas, 0x56084025)],
    ['truncated', good.subarray(0, good.length - 3)],
    ['no message', good.subarray(0, 8)],
    ['unaligned area', mmImage(l.startCode, l.startBrk, [{ ...l.vmas[0]!, start: l.vmas[0]!.start + 1 }])],
  ];
  for (const [why, buf] of rows) assert.throws(() => parseMm('mm-1.img', buf), (e: unknown) => e instanceof CrabError && e.code === 'CRIU_IMAGE_UNREADABLE', why);
});

test('relocation: each region by its own shift; the stack, gaps and regions that do not line up give null', () => {
  const old = layout(0x55550000_0000, 0x55550010_0000, 0x7f000000_0000, 0x7ffd0000_0000);
  // every region moved by a different number of pages; the stack by less than a page
  const cur = layout(0x56660000_0000, 0x56660020_0000, 0x7f100000_0000, 0x7ffe0000_0800);
  const to = relocation(cur as MemoryLayout, old as MemoryLayout);
  const page = (a: number) => a / P;
  const rows: Array<[string, number, number | null]> = [
    ['exe data', 0x56660000_0000 + 12 * P, 0x55550000_0000 + 12 * P],
    ['bss', 0x56660000_0000 + 15 * P, 0x55550000_0000 + 15 * P],
    ['heap', 0x56660020_0000 + 5 * P, 0x55550010_0000 + 5 * P],
    ['arena', 0x7f100000_0000 - 200 * P, 0x7f000000_0000 - 200 * P],
    ['libc data', 0x7f100000_0000 - 9 * P, 0x7f000000_0000 - 9 * P],
    ['stack', 0x7ffe0000_0000 - 5 * P, null],
    ['a gap', 0x7f100000_0000 - 20 * P, null],
  ];
  for (const [what, addr, want] of rows) assert.equal(to(page(addr)), want === null ? null : page(want), what);
  // a heap that grew: its new pages have no old page
  const grown = { ...cur, vmas: cur.vmas.map((v) => (v.status & HEAP ? { ...v, end: v.end + 10 * P } : v)) };
  assert.equal(relocation(grown, old)(page(0x56660020_0000 + 35 * P)), null);
  // one library alone is no evidence of how the mmap area moved
  const lone = { ...old, vmas: old.vmas.filter((v) => v.pgoff !== 0x1000 && !(v.status === ANON && v.start > old.startBrk + P * 33)) };
  const loneCur = { ...cur, vmas: cur.vmas.filter((v) => v.pgoff !== 0x1000 && !(v.status === ANON && v.start > cur.startBrk + P * 33)) };
  assert.equal(relocation(loneCur, lone)(page(0x7f100000_0000 - 9 * P)), null);
});

test('pageAffinity: a restarted process lines up with the old run the parent dump has, not with a live one', () => {
  const old = layout(0x55550000_0000, 0x55550010_0000, 0x7f000000_0000, 0x7ffd0000_0000);
  const cur = layout(0x56660000_0000, 0x56660020_0000, 0x7f100000_0000, 0x7ffe0000_0000);
  const other = layout(0x57770000_0000, 0x57770010_0000, 0x7f200000_0000, 0x7ffc0000_0000);
  const pg = (a: number) => a / P;
  // old server (pid 20): exe data 2 pages, heap 3, libc data 1; shell (pid 8) unchanged
  const parent = new Map<string, Pagemap>([
    ['pagemap-8.img', { pagesId: 1, runs: [[pg(0x57770000_0000 + 12 * P), 1]] }],
    ['pagemap-20.img', { pagesId: 2, runs: [[pg(0x55550000_0000 + 12 * P), 2], [pg(0x55550010_0000), 3], [pg(0x7f000000_0000 - 9 * P), 1]] }],
  ]);
  // the restarted server (pid 31): the same pages at its own addresses, and one heap page more
  const current = new Map<string, Pagemap>([
    ['pagemap-8.img', { pagesId: 1, runs: [[pg(0x57770000_0000 + 12 * P), 1]] }],
    ['pagemap-31.img', { pagesId: 2, runs: [[pg(0x56660000_0000 + 12 * P), 2], [pg(0x56660020_0000), 4], [pg(0x7f100000_0000 - 9 * P), 1]] }],
  ]);
  const sizes: Record<string, number> = { 'pages-1.img': 1, 'pages-2.img': 7 };
  const layouts = { current: new Map([[8, other], [31, cur]]), parent: new Map([[8, other], [20, old]]) };
  const out = pageAffinity(current, parent, (f) => sizes[f], layouts);
  assert.deepEqual(out.get('pages-1.img'), { basisPath: 'pages-1.img', pages: Int32Array.of(0) });
  assert.deepEqual(out.get('pages-2.img'), { basisPath: 'pages-2.img', pages: Int32Array.of(0, 1, 2, 3, 4, -1, 5) });
  // without layouts, or when too few pages line up, the new process gets no affinity
  assert.equal(pageAffinity(current, parent, (f) => sizes[f]).has('pages-2.img'), false);
  const unlike = { current: new Map([[31, other]]), parent: new Map([[20, old]]) };
  assert.equal(pageAffinity(current, parent, (f) => sizes[f], unlike).has('pages-2.img'), false);
});
