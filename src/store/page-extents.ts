/**
 * @module Page extents of a `'pages'` file recipe: the file as runs of pages taken from chunks,
 * so a dump can name the unchanged pages of earlier chunks and store only its new pages.
 *
 * Encoding (`FileRecipe.extents`): flat triplets `[chunkIndex, firstPage, pageCount, …]` in file
 * order, `chunkIndex` into `recipe.chunks` (each chunk listed once, in first-use order, so GC and
 * verify see every chunk a recipe needs). Every page is 4 KiB except possibly the file's very
 * last one. A recipe whose extents would each take a whole chunk is written without `extents`
 * (the plain form: the chunks in file order): the same file then always gets the same recipe.
 */
import { PAGE_BYTES, type Digest, type FileRecipe } from './content-store.js';
import { badRecipe } from './errors.js';

/** A chunk an extent reads from; `digest` is null while the chunk is still being filled. */
export interface ChunkRef {
  digest: Digest | null;
  /** Pages in the whole chunk, when known (needed only to recognise the plain form). */
  pages: number | null;
}

interface Extent {
  chunk: ChunkRef;
  first: number;
  count: number;
}

/** Collects a file's pages in order, merging neighbours that are neighbours in one chunk too. */
export class ExtentBuilder {
  private readonly extents: Extent[] = [];

  /** The file's next page is page `page` of `chunk`. */
  push(chunk: ChunkRef, page: number): void {
    const last = this.extents[this.extents.length - 1];
    if (last && last.chunk === chunk && last.first + last.count === page) last.count++;
    else this.extents.push({ chunk, first: page, count: 1 });
  }

  /** The recipe; every chunk's digest must be known by now. */
  recipe(size: number): FileRecipe {
    const digests = this.extents.map((e) => {
      if (e.chunk.digest === null) throw new Error('page extent names a chunk that was never finished'); // a bug, not input
      return e.chunk.digest;
    });
    if (this.extents.every((e) => e.first === 0 && e.count === e.chunk.pages)) return { size, chunks: digests };
    const chunks: Digest[] = [];
    const index = new Map<Digest, number>();
    const flat: number[] = [];
    this.extents.forEach((e, k) => {
      let i = index.get(digests[k]);
      if (i === undefined) {
        index.set(digests[k], (i = chunks.length));
        chunks.push(digests[k]);
      }
      flat.push(i, e.first, e.count);
    });
    return { size, chunks, extents: flat };
  }
}

/** One run of pages to copy: `count` pages from page `first` of chunk `chunk` (index into `recipe.chunks`), to byte `offset` of the file. */
export interface ExtentRead {
  chunk: number;
  offset: number;
  first: number;
  count: number;
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
  if (used.size !== recipe.chunks.length) throw badRecipe('file recipe lists chunks that no extent uses');
  return reads;
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
      const newChunk = !chunks.has(r.chunk);
      if (chunks.size > 0 && (bytes + len > maxBytes || (newChunk && chunks.size >= maxChunks))) break;
      chunks.add(r.chunk);
      bytes += len;
      i++;
    }
  }
  starts.push(reads.length);
  return starts;
}

/** The bytes of `read` within `chunk`; checks the chunk is long enough (the file's end may be short). */
export function sliceExtent(chunk: Buffer, read: ExtentRead, fileSize: number): Buffer {
  const want = Math.min(read.count * PAGE_BYTES, fileSize - read.offset);
  const start = read.first * PAGE_BYTES;
  if (start + want > chunk.length) {
    throw badRecipe(`file recipe extent wants pages ${read.first}..${read.first + read.count - 1} of a ${chunk.length}-byte chunk`, { read });
  }
  return chunk.subarray(start, start + want);
}
