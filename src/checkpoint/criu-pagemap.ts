/**
 * @module CRIU's `pagemap-*.img`: which virtual pages a `pages-<id>.img` holds, in order. From
 * two dumps of the same processes it tells, for each page of the new dump, the page of the
 * parent dump at the same virtual address: the page it most likely resembles (`PageAffinity`),
 * so the store can keep a changed page as a small XOR delta against it.
 *
 * Image layout (CRIU 4.2 `images/pagemap.proto`): a u32 common magic, the pagemap magic, then
 * entries as a u32 length and a protobuf message: one `pagemap_head {pages_id}`, then
 * `pagemap_entry {vaddr, compat_nr_pages, in_parent, flags, nr_pages}` runs in
 * `pages-<pages_id>.img` order.
 */
import fsp from 'node:fs/promises';
import path from 'node:path';
import protobuf from 'protobufjs';
import { CrabError } from '../core/errors.js';
import { decodeMessage, imageMessages, unreadable } from './criu-image.js';
import { isMmName, parseMm, relocation, type MemoryLayout } from './criu-mm.js';
import { rootLogger } from '../core/log.js';
import { PAGE_BYTES, type ContentStore, type Digest, type DirRecipe, type DirRecipeEntry, type PageAffinity } from '../store/content-store.js';

const log = rootLogger.child({ component: 'checkpoint' });

const PAGEMAP_MAGIC = 0x56084025;
/** `pagemap_entry.flags`: the pages are in a parent dump (incremental dumps, which Crab does not take). */
const PE_PARENT = 1 << 0;
/** `pagemap_entry.flags`: the pages are in this dump's pages file. */
const PE_PRESENT = 1 << 2;
const PAGE_SHIFT = 12;

const root = protobuf.Root.fromJSON({
  nested: {
    pagemap_head: { fields: { pages_id: { rule: 'required', type: 'uint32', id: 1 } } },
    pagemap_entry: {
      fields: {
        vaddr: { rule: 'required', type: 'uint64', id: 1 },
        compat_nr_pages: { rule: 'required', type: 'uint32', id: 2 },
        in_parent: { type: 'bool', id: 3 },
        flags: { type: 'uint32', id: 4 },
        nr_pages: { type: 'uint64', id: 5 },
      },
    },
  },
});
const HeadType = root.lookupType('pagemap_head');
const EntryType = root.lookupType('pagemap_entry');

/** A pagemap image: its pages file and the runs of virtual pages it holds, in file order. */
export interface Pagemap {
  pagesId: number;
  /** `[firstVirtualPage, count]` runs (virtual page = vaddr / 4096). */
  runs: Array<[number, number]>;
}

/** True for the name of a pagemap image (per task `pagemap-<pid>.img`, or shared memory's). */
export function isPagemapName(name: string): boolean {
  return /^pagemap-[\w-]+\.img$/.test(name);
}

/**
 * Parses a pagemap image. Throws CRIU_IMAGE_UNREADABLE on a bad magic, a truncated entry, or
 * pages kept in a parent dump (incremental dumps, which Crab does not take).
 */
export function parsePagemap(name: string, buf: Buffer): Pagemap {
  const [head, ...entries] = imageMessages(name, buf, PAGEMAP_MAGIC);
  if (!head) throw unreadable(name, 'no pagemap_head');
  const pagesId = decodeMessage(name, HeadType, head).pages_id as number;
  const runs: Array<[number, number]> = [];
  for (const msg of entries) {
    const e = decodeMessage(name, EntryType, msg) as { vaddr: number; compat_nr_pages: number; nr_pages?: number; in_parent?: boolean; flags?: number };
    const count = e.nr_pages ?? e.compat_nr_pages; // CRIU 4.2 writes the 64-bit nr_pages and 0 in compat_nr_pages
    const flags = e.flags ?? 0;
    // PE_LAZY only says the pages could be served lazily; without lazy-pages they are in the file
    if (e.in_parent || flags & PE_PARENT) throw unreadable(name, `entry at ${e.vaddr.toString(16)} has its pages in a parent dump (flags ${flags})`);
    if (!(flags & PE_PRESENT)) continue; // no pages in the file
    if (!Number.isSafeInteger(e.vaddr) || e.vaddr % (1 << PAGE_SHIFT) !== 0) throw unreadable(name, `entry vaddr ${e.vaddr} is not page-aligned`);
    if (!Number.isSafeInteger(count) || count < 0) throw unreadable(name, `entry at ${e.vaddr.toString(16)} has a bad page count`);
    runs.push([e.vaddr / (1 << PAGE_SHIFT), count]);
  }
  return { pagesId, runs };
}

/** The pid of a task's pagemap image, or null (shared memory's). */
function pidOf(pagemapName: string): number | null {
  const m = /^pagemap-(\d+)\.img$/.exec(pagemapName);
  return m ? Number(m[1]) : null;
}

/** Virtual page → its index in the pages file. */
function pageIndex(map: Pagemap): Map<number, number> {
  const where = new Map<number, number>();
  let at = 0;
  for (const [first, count] of map.runs) for (let p = 0; p < count; p++) where.set(first + p, at++);
  return where;
}

/** Per page of `map`, the index of the page `to` sends it to in `old` (or -1); and how many it found. */
function matchPages(map: Pagemap, old: Pagemap, to: (vpage: number) => number | null): { pages: Int32Array; found: number } {
  const where = pageIndex(old);
  const pages = new Int32Array(map.runs.reduce((a, [, count]) => a + count, 0));
  let i = 0;
  let found = 0;
  for (const [first, count] of map.runs) {
    for (let p = 0; p < count; p++) {
      const v = to(first + p);
      const at = v === null ? undefined : where.get(v);
      pages[i++] = at ?? -1;
      if (at !== undefined) found++;
    }
  }
  return { pages, found };
}

/** A new process whose pages line up with fewer of an old run's than this share is not matched to it. */
export const RELOCATED_MIN_SHARE = 0.25;

/**
 * For each pages file of the new dump:
 * - whose pagemap has a namesake in the parent dump (same task, same pid: pids are kept across
 *   checkpoint and restore): the parent page at the same virtual address as each of its pages;
 * - of a process new since the parent dump, given both dumps' memory `layouts` (by pid): the page
 *   at the same place in the layout of a process the parent dump has and this one has not (an
 *   earlier run of the same program), the one most pages line up with, if enough do.
 * `newPages` gives a new pages file's length in pages: a pagemap that disagrees with it is left out.
 */
export function pageAffinity(
  current: ReadonlyMap<string, Pagemap>,
  parent: ReadonlyMap<string, Pagemap>,
  newPages: (file: string) => number | undefined,
  layouts?: { current: ReadonlyMap<number, MemoryLayout>; parent: ReadonlyMap<number, MemoryLayout> },
): Map<string, PageAffinity> {
  const out = new Map<string, PageAffinity>();
  const gone = new Set([...parent.keys()].filter((n) => !current.has(n) && pidOf(n) !== null));
  for (const [name, map] of current) {
    const file = `pages-${map.pagesId}.img`;
    const total = map.runs.reduce((a, [, count]) => a + count, 0);
    if (newPages(file) !== total) continue;
    const old = parent.get(name);
    if (old) {
      out.set(file, { basisPath: `pages-${old.pagesId}.img`, pages: matchPages(map, old, (v) => v).pages });
      continue;
    }
    const layout = layouts?.current.get(pidOf(name) ?? -1);
    if (!layout || !total) continue;
    let best: { name: string; pages: Int32Array; found: number } | null = null;
    for (const g of gone) {
      const was = layouts!.parent.get(pidOf(g)!);
      if (!was) continue;
      const m = matchPages(map, parent.get(g)!, relocation(layout, was));
      if (m.found > (best?.found ?? 0)) best = { name: g, ...m };
    }
    if (!best || best.found < total * RELOCATED_MIN_SHARE) continue;
    gone.delete(best.name); // one old run for one new process
    out.set(file, { basisPath: `pages-${parent.get(best.name)!.pagesId}.img`, pages: best.pages });
  }
  return out;
}

/**
 * The affinity of the dump in `imageDir` against the stored dump `basis` (a directory recipe).
 * Undefined, with a warning, when a pagemap cannot be read: the dump is then stored without
 * deltas, which costs bytes, never correctness.
 */
export async function imageAffinity(store: ContentStore, imageDir: string, basis: Digest): Promise<Map<string, PageAffinity> | undefined> {
  try {
    const recipe = await store.getJson<DirRecipe>(basis);
    // small metadata images, stored whole
    const stored = (e: DirRecipeEntry & { type: 'file' }) => Promise.all(e.recipe.chunks.map((d) => store.get(d))).then((bufs) => Buffer.concat(bufs));
    const parent = new Map<string, Pagemap>();
    for (const e of recipe.entries) {
      if (e.type !== 'file' || !isPagemapName(e.path) || e.recipe.extents) continue;
      parent.set(e.path, parsePagemap(e.path, await stored(e)));
    }
    const names = await fsp.readdir(imageDir);
    const current = new Map<string, Pagemap>();
    for (const name of names) if (isPagemapName(name)) current.set(name, parsePagemap(name, await fsp.readFile(path.join(imageDir, name))));
    const sizes = new Map<string, number>();
    for (const m of current.values()) {
      const file = `pages-${m.pagesId}.img`;
      const st = await fsp.stat(path.join(imageDir, file)).catch(() => null); // no pages file: that pagemap is left out
      if (st) sizes.set(file, st.size / PAGE_BYTES);
    }
    // Layouts only when a process is new and one is gone: a restarted program may line up with its old run.
    const fresh = [...current.keys()].some((n) => !parent.has(n));
    const gone = [...parent.keys()].some((n) => !current.has(n));
    let layouts: { current: Map<number, MemoryLayout>; parent: Map<number, MemoryLayout> } | undefined;
    if (fresh && gone) {
      const pid = (mmName: string) => Number(/\d+/.exec(mmName)![0]);
      try {
        const cur = new Map<number, MemoryLayout>();
        const was = new Map<number, MemoryLayout>();
        for (const name of names) if (isMmName(name)) cur.set(pid(name), parseMm(name, await fsp.readFile(path.join(imageDir, name))));
        for (const e of recipe.entries) if (e.type === 'file' && isMmName(e.path) && !e.recipe.extents) was.set(pid(e.path), parseMm(e.path, await stored(e)));
        layouts = { current: cur, parent: was };
      } catch (err) {
        if (!(err instanceof CrabError)) throw err;
        log.warn({ err, basis }, 'memory layouts unreadable: new processes are stored without page deltas');
      }
    }
    return pageAffinity(current, parent, (file) => sizes.get(file), layouts);
  } catch (err) {
    if (!(err instanceof CrabError)) throw err;
    log.warn({ err, basis }, 'pagemaps unreadable: this dump is stored without page deltas');
    return undefined;
  }
}
