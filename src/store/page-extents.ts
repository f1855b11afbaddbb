/**
 * @module Page extents of a `'pages'` file recipe: the file as runs of pages taken from chunks,
 * so a dump can name the unchanged pages of earlier chunks and store only its new pages.
 *
 * Encoding (`FileRecipe.extents`): flat triplets `[chunkIndex, firstPage, pageCount, …]` in file
 * order, `chunkIndex` into `recipe.chunks` (each chunk listed once, in first-use order, so GC and
 * verify see every chunk a recipe needs). Every page is 4 KiB except possibly the file's very
 * last one. A recipe whose extents would each take a whole chunk is written without `extents`
 * (the plain form: the chunks in file order): the same file then always gets the same recipe.
 *
 * XOR deltas (`FileRecipe.deltas`, optional): flat triplets `[extentIndex, baseChunkIndex,
 * basePage, …]`, extent indexes increasing. The pages of such an extent are stored as the XOR of
 * the real page with the page at the same position of a base run (`count` pages from `basePage`
 * of the base chunk, itself always a plain extent's chunk: chains are one link long). A page
 * that changed a few bytes since the previous dump is then a mostly-zero page, which zstd
 * stores in a few dozen bytes.
 */
import { PAGE_BYTES, type Digest, type FileRecipe } from './content-store.js';
import { badRecipe } from './errors.js';

/** A chunk an extent reads from; `digest` is null while the chunk is still being filled. */
export interface ChunkRef {
  digest: Digest | null;
  /** Pages in the whole chunk, when known (needed only to recognise the plain form). */
  pages: number | null;
}

/** Where a delta extent's base pages are: `page` of `chunk`, then the pages after it. */
export interface BaseRef {
  chunk: ChunkRef;
  page: number;
}

interface Extent {
  chunk: ChunkRef;
  first: number;
  count: number;
  base?: BaseRef;
}

/** Collects a file's pages in order, merging neighbours that are neighbours in one chunk too. */
export class ExtentBuilder {
  private readonly extents: Extent[] = [];

  /** The file's next page is page `page` of `chunk` (XORed with the base page, when given). */
  push(chunk: ChunkRef, page: number, base?: BaseRef): void {
    const last = this.extents[this.extents.length - 1];
    const follows =
      last &&
      last.chunk === chunk &&
      last.first + last.count === page &&
      (base ? last.base?.chunk === base.chunk && last.base.page + last.count === base.page : !last.base);
    if (follows) last.count++;
    else this.extents.push({ chunk, first: page, count: 1, base: base ? { ...base } : undefined });
  }

  /** The recipe; every chunk's digest must be known by now. */
  recipe(size: number): FileRecipe {
    const digestOf = (c: ChunkRef): Digest => {
      if (c.digest === null) throw new Error('page extent names a chunk that was never finished'); // a bug, not input
      return c.digest;
    };
    if (this.extents.every((e) => !e.base && e.first === 0 && e.count === e.chunk.pages)) return { size, chunks: this.extents.map((e) => digestOf(e.chunk)) };
    const chunks: Digest[] = [];
    const index = new Map<Digest, number>();
    const indexOf = (c: ChunkRef): number => {
      const d = digestOf(c);
      let i = index.get(d);
      if (i === undefined) {
        index.set(d, (i = chunks.length));
        chunks.push(d);
      }
      return i;
    };
    const flat: number[] = [];
    const deltas: number[] = [];
    this.extents.forEach((e, k) => {
      flat.push(indexOf(e.chunk), e.first, e.count);
      if (e.base) deltas.push(k, indexOf(e.base.chunk), e.base.page);
    });
    return deltas.length ? { size, chunks, extents: flat, deltas } : { size, chunks, extents: flat };
  }
}

/**
 * One run of pages to copy: `count` pages from page `first` of chunk `chunk` (index into
 * `recipe.chunks`), to byte `offset` of the file; XORed with as many pages from page `base.first`
 * of chunk `base.chunk`, for a delta extent.
 */
export interface ExtentRead {
  chunk: number;
  offset: number;
  first: number;
  count: number;
  base?: { chunk: number; first: number };
}

/**
 * The extents of a recipe as reads in file order. Throws STORE_BAD_RECIPE on malformed extents;
 * the byte lengths are checked against the chunks when they are read (`sliceExtent`).
 */
export function planExtentReads(recipe: FileRecipe & { extents: number[] }): ExtentRead[] {
  const x = recipe.extents;
  if (!Array.isArray(x) || x.length % 3 !== 0 || x.length === 0) throw badRecipe('file recipe extents must be non-empty [chunk, first, count] triplets');
  const reads: ExtentRead[] = [];
  const used = new Set<number>();
  let offset = 0;
  for (let k = 0; k < x.length; k += 3) {
    const [chunk, first, count] = [x[k], x[k + 1], x[k + 2]];
    if (![chunk, first, count].every((n) => Number.isSafeInteger(n) && n >= 0) || count === 0 || chunk >= recipe.chunks.length) {
      throw badRecipe(`file recipe extent ${k / 3} is not a valid [chunk, first, count] triplet`, { extent: [chunk, first, count] });
    }
    used.add(chunk);
    reads.push({ chunk, offset, first, count });
    offset += count * PAGE_BYTES;
  }
  // only the file's last page may be short
  if (recipe.size > offset || recipe.size <= offset - PAGE_BYTES) {
    throw badRecipe(`recipe says ${recipe.size} bytes but its extents hold ${offset / PAGE_BYTES} pages`, { size: recipe.size });
  }
  const d = recipe.deltas ?? [];
  if (!Array.isArray(d) || d.length % 3 !== 0) throw badRecipe('file recipe deltas must be [extent, baseChunk, basePage] triplets');
  for (let k = 0; k < d.length; k += 3) {
    const [extent, chunk, first] = [d[k], d[k + 1], d[k + 2]];
    const valid = [extent, chunk, first].every((n) => Number.isSafeInteger(n) && n >= 0) && extent < reads.length && chunk < recipe.chunks.length;
    if (!valid || (k > 0 && extent <= d[k - 3])) {
      throw badRecipe(`file recipe delta ${k / 3} is not a valid [extent, baseChunk, basePage] triplet in extent order`, { delta: [extent, chunk, first] });
    }
    used.add(chunk);
    reads[extent].base = { chunk, first };
  }
  if (used.size !== recipe.chunks.length) throw badRecipe('file recipe lists chunks that no extent uses');
  return reads;
}

/** The chunks a read needs in memory: its own, and its base's. */
export function readChunks(r: ExtentRead): number[] {
  return r.base ? [r.chunk, r.base.chunk] : [r.chunk];
}

/**
 * Cuts file-order reads into windows of at most `maxBytes` of file and `maxChunks` distinct
 * chunks (a window's chunks are held in memory at once; one write per window). Returns the
 * index of each window's first read, and reads.length at the end.
 */
export function extentWindows(reads: readonly ExtentRead[], maxBytes: number, maxChunks: number): number[] {
  const starts: number[] = [];
  let i = 0;
  while (i < reads.length) {
    starts.push(i);
    const chunks = new Set<number>();
    let bytes = 0;
    while (i < reads.length) {
      const r = reads[i];
      const len = r.count * PAGE_BYTES;
      const added = readChunks(r).filter((c) => !chunks.has(c)).length;
      if (chunks.size > 0 && (bytes + len > maxBytes || (added > 0 && chunks.size + added > maxChunks))) break;
      for (const c of readChunks(r)) chunks.add(c);
      bytes += len;
      i++;
    }
  }
  starts.push(reads.length);
  return starts;
}

/** The bytes of `read` within `chunk`; checks the chunk is long enough (the file's end may be short). */
export function sliceExtent(chunk: Buffer, read: ExtentRead, fileSize: number): Buffer {
  return slicePages(chunk, read.first, Math.min(read.count * PAGE_BYTES, fileSize - read.offset), read);
}

/**
 * Copies the file bytes of `read` to `out` at `at`: its chunk's pages, XORed with its base's
 * for a delta extent. `chunkOf` gives a chunk (by index into `recipe.chunks`) already in memory.
 * Returns the bytes copied.
 */
export function copyExtent(read: ExtentRead, chunkOf: (index: number) => Buffer, fileSize: number, out: Buffer, at: number): number {
  const own = sliceExtent(chunkOf(read.chunk), read, fileSize);
  own.copy(out, at);
  if (read.base) xorInto(out.subarray(at, at + own.length), slicePages(chunkOf(read.base.chunk), read.base.first, own.length, read));
  return own.length;
}

function slicePages(chunk: Buffer, first: number, want: number, read: ExtentRead): Buffer {
  const start = first * PAGE_BYTES;
  if (start + want > chunk.length) {
    throw badRecipe(`file recipe extent wants pages ${first}..${first + Math.ceil(want / PAGE_BYTES) - 1} of a ${chunk.length}-byte chunk`, { read });
  }
  return chunk.subarray(start, start + want);
}

/** `target ^= other`, byte for byte (`other` at least as long). */
export function xorInto(target: Uint8Array, other: Uint8Array): void {
  let i = 0;
  if (target.byteOffset % 4 === 0 && other.byteOffset % 4 === 0) {
    // a word at a time where both are aligned (pages are): 4× fewer steps
    const words = target.length >>> 2;
    const t = new Uint32Array(target.buffer, target.byteOffset, words);
    const o = new Uint32Array(other.buffer, other.byteOffset, words);
    for (let w = 0; w < words; w++) t[w] ^= o[w];
    i = words << 2;
  }
  for (; i < target.length; i++) target[i] ^= other[i];
}

/** Bytes of `buf` that are not zero; counting stops once past `limit`. */
export function nonZeroBytes(buf: Uint8Array, limit: number): number {
  let n = 0;
  let i = 0;
  if (buf.byteOffset % 4 === 0) {
    // a delta is mostly zero words: skip them whole
    const words = new Uint32Array(buf.buffer, buf.byteOffset, buf.length >>> 2);
    for (let w = 0; w < words.length && n <= limit; w++) {
      const x = words[w];
      if (x !== 0) n += (x & 0xff ? 1 : 0) + (x & 0xff00 ? 1 : 0) + (x & 0xff0000 ? 1 : 0) + (x >>> 24 ? 1 : 0);
    }
    i = words.length << 2;
  }
  for (; i < buf.length && n <= limit; i++) if (buf[i] !== 0) n++;
  return n;
}
