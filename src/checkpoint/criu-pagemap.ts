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
import { rootLogger } from '../core/log.js';
import { PAGE_BYTES, type ContentStore, type Digest, type DirRecipe, type PageAffinity } from '../store/content-store.js';

const log = rootLogger.child({ component: 'checkpoint' });

const IMG_COMMON_MAGIC = 0x54564319;
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

function unreadable(name: string, why: string): CrabError {
  return new CrabError('CRIU_IMAGE_UNREADABLE', 'internal', `CRIU image ${name}: ${why}`, 'This CRIU version writes pagemaps Crab does not understand; dumps are stored without page deltas.', { name });
}

/**
 * Parses a pagemap image. Throws CRIU_IMAGE_UNREADABLE on a bad magic, a truncated entry, or
 * pages kept in a parent dump (incremental dumps, which Crab does not take).
 */
export function parsePagemap(name: string, buf: Buffer): Pagemap {
  if (buf.length < 8 || buf.readUInt32LE(0) !== IMG_COMMON_MAGIC || buf.readUInt32LE(4) !== PAGEMAP_MAGIC) throw unreadable(name, 'not a pagemap image (bad magic)');
  let off = 8;
  const next = (): Buffer | null => {
    if (off === buf.length) return null;
    if (off + 4 > buf.length) throw unreadable(name, 'truncated entry length');
    const len = buf.readUInt32LE(off);
    if (off + 4 + len > buf.length) throw unreadable(name, 'truncated entry');
    const msg = buf.subarray(off + 4, off + 4 + len);
    off += 4 + len;
    return msg;
  };
  const decode = (type: protobuf.Type, msg: Buffer): Record<string, unknown> => {
    try {
      return type.toObject(type.decode(msg), { longs: Number });
    } catch (err) {
      throw unreadable(name, `bad ${type.name}: ${(err as Error).message}`);
    }
  };
  const head = next();
  if (!head) throw unreadable(name, 'no pagemap_head');
  const pagesId = decode(HeadType, head).pages_id as number;
  const runs: Array<[number, number]> = [];
  for (let msg = next(); msg; msg = next()) {
    const e = decode(EntryType, msg) as { vaddr: number; compat_nr_pages: number; nr_pages?: number; in_parent?: boolean; flags?: number };
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

/**
 * For each pages file of the new dump whose pagemap has a namesake in the parent dump (same
 * task, same pid: pids are kept across checkpoint and restore): the parent page at the same
 * virtual address as each of its pages. `newPages` gives a new pages file's length in pages:
 * a pagemap that disagrees with it is left out.
 */
export function pageAffinity(current: ReadonlyMap<string, Pagemap>, parent: ReadonlyMap<string, Pagemap>, newPages: (file: string) => number | undefined): Map<string, PageAffinity> {
  const out = new Map<string, PageAffinity>();
  for (const [name, map] of current) {
    const old = parent.get(name);
    if (!old) continue;
    const where = new Map<number, number>();
    let at = 0;
    for (const [first, count] of old.runs) for (let p = 0; p < count; p++) where.set(first + p, at++);
    const total = map.runs.reduce((a, [, count]) => a + count, 0);
    const file = `pages-${map.pagesId}.img`;
    if (newPages(file) !== total) continue;
    const pages = new Int32Array(total);
    let i = 0;
    for (const [first, count] of map.runs) for (let p = 0; p < count; p++) pages[i++] = where.get(first + p) ?? -1;
    out.set(file, { basisPath: `pages-${old.pagesId}.img`, pages });
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
    const parent = new Map<string, Pagemap>();
    for (const e of recipe.entries) {
      if (e.type !== 'file' || !isPagemapName(e.path) || e.recipe.extents) continue;
      const bytes = Buffer.concat(await Promise.all(e.recipe.chunks.map((d) => store.get(d))));
      parent.set(e.path, parsePagemap(e.path, bytes));
    }
    const current = new Map<string, Pagemap>();
    for (const name of await fsp.readdir(imageDir)) if (isPagemapName(name)) current.set(name, parsePagemap(name, await fsp.readFile(path.join(imageDir, name))));
    const sizes = new Map<string, number>();
    for (const m of current.values()) {
      const file = `pages-${m.pagesId}.img`;
      const st = await fsp.stat(path.join(imageDir, file)).catch(() => null); // no pages file: that pagemap is left out
      if (st) sizes.set(file, st.size / PAGE_BYTES);
    }
    return pageAffinity(current, parent, (file) => sizes.get(file));
  } catch (err) {
    if (!(err instanceof CrabError)) throw err;
    log.warn({ err, basis }, 'pagemaps unreadable: this dump is stored without page deltas');
    return undefined;
  }
}
