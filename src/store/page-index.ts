/**
 * @module Where a 4 KiB page's content is already stored: page fingerprint → (chunk, page in
 * chunk), for the `'pages'` chunks this process wrote or read. It lets a process image store only
 * the pages that changed since any earlier dump, not every 64 KiB chunk a dirty page falls in:
 * a Python server dirties ~150 scattered pages (600 KiB) per request, which touch most of its
 * 64 KiB chunks.
 *
 * In memory only and bounded: a miss costs bytes (the page is stored again), never correctness,
 * because chunks are immutable and named by their content. The store checks that a chunk still
 * exists (and refreshes it against a concurrent sweep) before a recipe may name it.
 */
import { hash } from 'node:crypto';
import { invalid } from '../core/errors.js';
import type { Digest } from './content-store.js';

/** sha256 of one page, first 16 bytes as a binary (latin1) string: a compact Map key (collisions 2^-64). */
export function pageFingerprint(page: Uint8Array): string {
  return hash('sha256', page, 'binary').slice(0, 16);
}

export interface PageLocation {
  chunk: Digest;
  /** Index of the page within the chunk. */
  page: number;
  /** For a page stored as an XOR delta: the (plain) page it is XORed with. */
  base?: PageLocation;
}

/** Default bound: fingerprints of 1 Mi pages (4 GiB of distinct pages, ~110 MiB of memory). */
export const DEFAULT_PAGE_INDEX_PAGES = 1 << 20;
/** The bound from `CRAB_PAGE_INDEX_PAGES` (unset or empty: the default); 0 turns page reuse off. */
export function pageIndexBound(value: string | undefined): number | undefined {
  if (value === undefined || value.trim() === '') return undefined;
  const n = Number(value);
  if (!Number.isSafeInteger(n) || n < 0) {
    throw invalid('CONFIG_INVALID', `CRAB_PAGE_INDEX_PAGES must be a whole number of pages, not '${value}'`, `Unset it for the default (${DEFAULT_PAGE_INDEX_PAGES}), or 0 to store every dump's pages without reuse.`);
  }
  return n;
}

/** Forgotten chunks remembered; beyond this the set starts over (a stale entry is found gone again). */
const GONE_KEPT = 1 << 16;

export class PageIndex {
  private readonly byPage = new Map<string, PageLocation>();
  /** Pages per indexed chunk (its whole length, the last page possibly short). */
  private readonly chunkPages = new Map<Digest, number>();
  private readonly gone = new Set<Digest>();

  constructor(private readonly maxPages = DEFAULT_PAGE_INDEX_PAGES) {}

  get size(): number {
    return this.byPage.size;
  }

  /** Where a page with this fingerprint is stored, if known. */
  lookup(fingerprint: string): PageLocation | undefined {
    const loc = this.byPage.get(fingerprint);
    if (loc && (this.gone.has(loc.chunk) || (loc.base && this.gone.has(loc.base.chunk)))) {
      this.byPage.delete(fingerprint);
      return undefined;
    }
    return loc;
  }

  /** Page count of an indexed chunk, or undefined. */
  pagesOf(chunk: Digest): number | undefined {
    return this.gone.has(chunk) ? undefined : this.chunkPages.get(chunk);
  }

  /** True when the chunk's pages are (still) indexed. */
  has(chunk: Digest): boolean {
    return this.pagesOf(chunk) !== undefined;
  }

  /**
   * Records that `chunk` (of `pages` pages) starts with pages of these fingerprints, in order
   * (a short last page has none). For a chunk of XOR deltas, `bases[i]` is the plain page that
   * page i is XORed with and the fingerprints are of the pages it gives. Re-adding refreshes
   * them; the oldest entries beyond the bound are evicted.
   */
  add(chunk: Digest, fingerprints: readonly string[], pages = fingerprints.length, bases?: readonly PageLocation[]): void {
    this.gone.delete(chunk);
    this.chunkPages.delete(chunk);
    this.chunkPages.set(chunk, pages);
    fingerprints.forEach((fp, page) => {
      this.byPage.delete(fp); // re-insert: the Map's order is the eviction order
      this.byPage.set(fp, bases ? { chunk, page, base: bases[page] } : { chunk, page });
    });
    for (const fp of this.byPage.keys()) {
      if (this.byPage.size <= this.maxPages) break;
      this.byPage.delete(fp);
    }
    for (const d of this.chunkPages.keys()) {
      if (this.chunkPages.size <= this.maxPages) break;
      this.chunkPages.delete(d);
    }
  }

  /** Forgets a chunk that is no longer in the store (its entries drop out lazily). */
  forget(chunk: Digest): void {
    this.chunkPages.delete(chunk);
    if (this.gone.size >= GONE_KEPT) this.gone.clear();
    this.gone.add(chunk);
  }
}
