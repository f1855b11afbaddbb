/**
 * @module What a run's checkpoints would write to a store of their own. Runs share one
 * deduplicating store (as sandboxes on a host do), so the bytes a checkpoint actually wrote
 * depend on which run happened to store shared content first: a 5 MiB log two modes of one trace
 * both create is paid by whichever gets there first. To compare modes, each run is charged as if
 * it were alone: a chunk costs its stored (compressed) size the first time the run uses it, pro
 * rata of the pages it uses when it names only some (page extents, delta bases).
 */
import fs from 'node:fs';
import type { CheckpointRecord } from '../checkpoint/checkpoint.js';
import { loadManifest, manifestDigests } from '../fssnap/index.js';
import { PAGE_BYTES, type Digest, type DirRecipe } from '../store/content-store.js';
import type { LocalContentStore } from '../store/local-content-store.js';
import { planExtentReads } from '../store/page-extents.js';

/** The chunks one checkpoint uses: the whole chunk (null), or these of its pages. */
export type ChunkUses = Map<Digest, Set<number> | null>;

/** Adds a use of the whole chunk. */
export function useWhole(uses: ChunkUses, digest: Digest): void {
  uses.set(digest, null);
}

/** Adds a use of `count` pages from page `first` of the chunk. */
export function usePages(uses: ChunkUses, digest: Digest, first: number, count: number): void {
  const had = uses.get(digest);
  if (had === null) return;
  const pages = had ?? new Set<number>();
  for (let p = first; p < first + count; p++) pages.add(p);
  uses.set(digest, pages);
}

/**
 * Bytes charged to each checkpoint, in the order the run took them. `size` is a chunk's stored
 * size; `pagesOf` its length in pages (asked only for chunks used by pages).
 */
export function ownTraffic(checkpoints: readonly ChunkUses[], size: (d: Digest) => number, pagesOf: (d: Digest) => number): number[] {
  /** Pages of each chunk the run has paid for (null: all of it). */
  const paid = new Map<Digest, Set<number> | null>();
  return checkpoints.map((uses) => {
    let charge = 0;
    for (const [d, pages] of uses) {
      const had = paid.get(d);
      if (had === null) continue;
      if (pages === null) {
        // the rest of the chunk
        charge += had === undefined ? size(d) : size(d) * Math.max(0, 1 - had.size / pagesOf(d));
        paid.set(d, null);
        continue;
      }
      const set = had ?? new Set<number>();
      let added = 0;
      for (const p of pages) {
        if (set.has(p)) continue;
        set.add(p);
        added++;
      }
      paid.set(d, set);
      if (added) charge += (size(d) * added) / Math.max(pagesOf(d), set.size);
    }
    return Math.round(charge);
  });
}

/** Pages per chunk the page index did not know, remembered across runs (a chunk's content never changes). */
const chunkPages = new Map<Digest, number>();

/**
 * Charges a run's checkpoints (in the order taken) as `ownTraffic` says, reading their manifests
 * and process images from the store. A chunk gone from the store counts 0 (it cannot be sized).
 */
export async function runTraffic(store: LocalContentStore, checkpoints: ReadonlyArray<Pick<CheckpointRecord, 'fsManifest' | 'processImage'>>): Promise<number[]> {
  const all: ChunkUses[] = [];
  for (const ck of checkpoints) {
    const uses: ChunkUses = new Map();
    if (ck.fsManifest) {
      useWhole(uses, ck.fsManifest);
      for (const d of manifestDigests(await loadManifest(store, ck.fsManifest))) useWhole(uses, d);
    }
    if (ck.processImage) {
      useWhole(uses, ck.processImage);
      for (const e of (await store.getJson<DirRecipe>(ck.processImage)).entries) {
        if (e.type !== 'file') continue;
        const r = e.recipe;
        if (!r.extents) {
          for (const d of r.chunks) useWhole(uses, d);
          continue;
        }
        for (const read of planExtentReads({ ...r, extents: r.extents })) {
          usePages(uses, r.chunks[read.chunk], read.first, read.count);
          if (read.base) usePages(uses, r.chunks[read.base.chunk], read.base.first, read.count);
        }
      }
    }
    all.push(uses);
  }
  const counts = new Map<Digest, number>();
  for (const uses of all) {
    for (const [d, pages] of uses) {
      if (pages === null || counts.has(d)) continue;
      // the store's page index knows most chunks' lengths; only the others are read
      let n = store.pageIndex.pagesOf(d) ?? chunkPages.get(d);
      if (n === undefined) {
        if (chunkPages.size >= 1 << 20) chunkPages.clear();
        n = Math.ceil((await store.get(d)).length / PAGE_BYTES);
        chunkPages.set(d, n);
      }
      counts.set(d, n);
    }
  }
  const size = (d: Digest): number => {
    try {
      return fs.statSync(store.chunkPath(d)).size;
    } catch {
      return 0; // swept: cannot be sized
    }
  };
  return ownTraffic(all, size, (d) => counts.get(d) ?? 1);
}
