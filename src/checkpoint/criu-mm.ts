/**
 * @module CRIU's `mm-<pid>.img`: a task's memory areas. A process that is new in a dump (a server
 * restarted under another pid) often has an earlier run of the same program in the parent dump:
 * the same areas in the same order, but each region moved by address-space randomisation.
 * `relocation` finds those moves, so a new page can be compared with the old run's page at the
 * same place in the program's layout.
 *
 * Regions move independently and by whole pages: the executable's image (code, data, bss), the
 * heap (brk) and the mmap area (libraries, arenas, anonymous maps). The stack moves by less than a
 * page, so its pages never line up: it is left out, like vdso and vvar.
 *
 * Image layout (CRIU 4.2 `images/mm.proto`, `images/vma.proto`): one `mm_entry` message.
 */
import protobuf from 'protobufjs';
import { decodeMessage, imageMessages, unreadable } from './criu-image.js';

const MM_MAGIC = 0x57492820;
const PAGE_BYTES = 4096;

/** `vma_entry.status` bits (CRIU `criu/include/image.h`). */
const VMA_AREA_STACK = 1 << 1;
const VMA_AREA_VSYSCALL = 1 << 2;
const VMA_AREA_VDSO = 1 << 3;
const VMA_AREA_HEAP = 1 << 5;
const VMA_AREA_VVAR = 1 << 12;

const root = protobuf.Root.fromJSON({
  nested: {
    vma_entry: {
      fields: {
        start: { rule: 'required', type: 'uint64', id: 1 },
        end: { rule: 'required', type: 'uint64', id: 2 },
        pgoff: { rule: 'required', type: 'uint64', id: 3 },
        shmid: { rule: 'required', type: 'uint64', id: 4 },
        prot: { rule: 'required', type: 'uint32', id: 5 },
        flags: { rule: 'required', type: 'uint32', id: 6 },
        status: { rule: 'required', type: 'uint32', id: 7 },
        fd: { rule: 'required', type: 'sint64', id: 8 },
      },
    },
    mm_entry: {
      fields: {
        mm_start_code: { rule: 'required', type: 'uint64', id: 1 },
        mm_start_brk: { rule: 'required', type: 'uint64', id: 6 },
        vmas: { rule: 'repeated', type: 'vma_entry', id: 14 },
      },
    },
  },
});
const MmType = root.lookupType('mm_entry');

export interface Vma {
  start: number;
  end: number;
  pgoff: number;
  prot: number;
  flags: number;
  status: number;
}

/** What `relocation` needs of a task's memory: where code and brk start, and the areas by address. */
export interface MemoryLayout {
  startCode: number;
  startBrk: number;
  vmas: Vma[];
}

/** True for the name of a task's mm image. */
export function isMmName(name: string): boolean {
  return /^mm-\d+\.img$/.test(name);
}

/** Parses an mm image. Throws CRIU_IMAGE_UNREADABLE on a bad magic, framing or message. */
export function parseMm(name: string, buf: Buffer): MemoryLayout {
  const [msg] = imageMessages(name, buf, MM_MAGIC);
  if (!msg) throw unreadable(name, 'no mm_entry');
  const m = decodeMessage(name, MmType, msg) as { mm_start_code: number; mm_start_brk: number; vmas?: Vma[] };
  const vmas = (m.vmas ?? [])
    .filter((v) => !(v.status & VMA_AREA_VSYSCALL)) // above 2^53 (no JS number holds it exactly), and never has pages in a dump
    .map(({ start, end, pgoff, prot, flags, status }) => ({ start, end, pgoff, prot, flags, status }));
  for (const v of vmas) if (!Number.isSafeInteger(v.start) || !Number.isSafeInteger(v.end) || v.start % PAGE_BYTES || v.end % PAGE_BYTES || v.end <= v.start) throw unreadable(name, `bad area ${v.start}-${v.end}`);
  vmas.sort((a, b) => a.start - b.start);
  return { startCode: m.mm_start_code, startBrk: m.mm_start_brk, vmas };
}

type Region = 'exe' | 'heap' | 'mmap' | null;

function regionOf(v: Vma, mm: MemoryLayout): Region {
  if (v.status & (VMA_AREA_STACK | VMA_AREA_VDSO | VMA_AREA_VVAR)) return null;
  if (v.status & VMA_AREA_HEAP) return 'heap';
  return v.start < mm.startBrk ? 'exe' : 'mmap';
}

/** The shift (in pages) most pairs of like areas of the mmap region agree on, or null. */
function mmapShift(cur: MemoryLayout, old: MemoryLayout): number | null {
  const bySignature = (mm: MemoryLayout) => {
    const out = new Map<string, number[]>();
    for (const v of mm.vmas) {
      if (regionOf(v, mm) !== 'mmap') continue;
      const key = `${v.end - v.start}/${v.pgoff}/${v.prot}/${v.flags}/${v.status}`;
      out.set(key, [...(out.get(key) ?? []), v.start]);
    }
    return out;
  };
  const before = bySignature(old);
  const votes = new Map<number, number>();
  for (const [key, starts] of bySignature(cur)) {
    const was = before.get(key);
    if (!was || was.length !== starts.length) continue; // pair areas only where the count agrees
    starts.forEach((s, i) => {
      const shift = (s - was[i]!) / PAGE_BYTES;
      votes.set(shift, (votes.get(shift) ?? 0) + 1);
    });
  }
  let best: number | null = null;
  let most = 1; // one pair alone is no evidence
  for (const [shift, n] of votes) if (n > most) [best, most] = [shift, n];
  return best;
}

/** The area of `mm` holding virtual page `vpage`, or undefined. */
function areaAt(mm: MemoryLayout, vpage: number): Vma | undefined {
  const addr = vpage * PAGE_BYTES;
  let lo = 0;
  let hi = mm.vmas.length - 1;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    const v = mm.vmas[mid]!;
    if (addr < v.start) hi = mid - 1;
    else if (addr >= v.end) lo = mid + 1;
    else return v;
  }
  return undefined;
}

/**
 * For a virtual page of `cur`, the virtual page of `old` at the same place in the program's
 * layout (same region, shifted as that region moved), or null.
 */
export function relocation(cur: MemoryLayout, old: MemoryLayout): (vpage: number) => number | null {
  const shifts: Record<'exe' | 'heap' | 'mmap', number | null> = {
    exe: (cur.startCode - old.startCode) / PAGE_BYTES,
    heap: (cur.startBrk - old.startBrk) / PAGE_BYTES,
    mmap: mmapShift(cur, old),
  };
  for (const k of ['exe', 'heap'] as const) if (!Number.isInteger(shifts[k])) shifts[k] = null; // moved within a page: nothing lines up
  return (vpage) => {
    const v = areaAt(cur, vpage);
    const region = v && regionOf(v, cur);
    const shift = region ? shifts[region] : null;
    if (shift === null || shift === undefined) return null;
    const was = vpage - shift;
    const w = areaAt(old, was);
    return w && regionOf(w, old) === region ? was : null;
  };
}
