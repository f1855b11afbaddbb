/**
 * @module What a run's checkpoints would write to a store of their own. Runs share one
 * deduplicating store (as sandboxes on a host do), so the bytes a checkpoint actually wrote
 * depend on which run happened to store shared content first: a 5 MiB log two modes of one trace
 * both create is paid by whichever gets there first. To compare modes, each run is charged as if
 * it were alone: a chunk costs its stored (compressed) size the first time the run uses it, pro
 * rata of the pages it uses when it names only some (page extents, delta bases).
 *
 * Three charges per checkpoint (README, "How traffic is counted"):
 * - `paperTraffic`, the paper's full-per-turn runtime: a CRIU dump of the processes, its images
 *   whole as CRIU writes them (uncompressed), plus a ZFS snapshot of the file system, which stores
 *   only what changed since the previous snapshot: here the files whose content changed, whole.
 * - `wholeTraffic`: everything the checkpoint holds, compressed like the store's chunks, nothing
 *   shared with the checkpoints before it (a self-contained full checkpoint).
 * - `ownTraffic`: into a deduplicating store of the run's own (Crab's store).
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

/**
 * Bytes charged to each checkpoint written whole: everything it uses, nothing shared with the
 * checkpoints before it (a full checkpoint, as `runc checkpoint` plus a copy of the upper layer
 * writes it, compressed like the store's chunks).
 */
export function wholeTraffic(checkpoints: readonly ChunkUses[], size: (d: Digest) => number, pagesOf: (d: Digest) => number): number[] {
  return checkpoints.map((uses) => ownTraffic([uses], size, pagesOf)[0]!);
}

/** A file of a checkpoint's file system, for `paperTraffic`: what its content is, and its size. */
export interface PaperFile {
  content: string;
  size: number;
  /** Entries of one hard-link group are one file (charged once). */
  linkGroup?: number;
}

/** What `paperTraffic` needs of a checkpoint: its own process image's bytes (0 when it reuses an earlier one), and its files. */
export interface PaperCheckpoint {
  imageBytes: number;
  files: ReadonlyMap<string, PaperFile>;
}

/**
 * Bytes charged to each checkpoint as the paper's full-per-turn runtime writes it: the CRIU
 * images it dumped, whole and uncompressed, plus every file whose content is new since the
 * run's previous checkpoint (a ZFS snapshot stores changed blocks; a changed file is charged
 * whole). The first checkpoint pays for every file it holds. Metadata (modes, times,
 * directories, whiteouts) is charged nothing.
 */
export function paperTraffic(checkpoints: readonly PaperCheckpoint[]): number[] {
  let prev: ReadonlyMap<string, PaperFile> = new Map();
  return checkpoints.map((ck) => {
    let files = 0;
    const groups = new Set<number>();
    for (const [p, f] of ck.files) {
      if (prev.get(p)?.content === f.content) continue;
      if (f.linkGroup !== undefined) {
        if (groups.has(f.linkGroup)) continue;
        groups.add(f.linkGroup);
      }
      files += f.size;
    }
    prev = ck.files;
    return ck.imageBytes + files;
  });
}

/** What a run's checkpoints cost: into a deduplicating store of the run's own, each written whole, and as the paper's runtime writes them. */
export interface RunTraffic {
  own: number[];
  whole: number[];
  paper: number[];
}

/**
 * What a mode's checkpoints write. `full` stands for a conventional full-per-turn C/R, whose full
 * checkpoints are written whole (the bench stores them in the shared deduplicating store, to save
 * disk and time, but charges them whole); Crab writes into its deduplicating store.
 */
export function writtenBytes(mode: string, own: number, whole: number): number {
  return mode === 'full' ? whole : own;
}

/** Pages per chunk the page index did not know, remembered across runs (a chunk's content never changes). */
const chunkPages = new Map<Digest, number>();

/**
 * Charges a run's checkpoints (in the order taken) as `ownTraffic` and `wholeTraffic` say, reading
 * their manifests and process images from the store. A chunk gone from the store counts 0 (it
 * cannot be sized).
 */
export async function runTraffic(store: LocalContentStore, checkpoints: ReadonlyArray<Pick<CheckpointRecord, 'id' | 'fsManifest' | 'processImage' | 'processImageFrom'>>): Promise<RunTraffic> {
  const all: ChunkUses[] = [];
  const allWhole: ChunkUses[] = [];
  const paper: PaperCheckpoint[] = [];
  for (const ck of checkpoints) {
    const files = new Map<string, PaperFile>();
    let imageBytes = 0;
    const uses: ChunkUses = new Map();
    // Written whole, a page stored as an XOR delta is a page like its base: charged as the base's page.
    const whole: ChunkUses = new Map();
    const both = (f: (m: ChunkUses) => void) => {
      f(uses);
      f(whole);
    };
    if (ck.fsManifest) {
      const manifest = ck.fsManifest;
      both((m) => useWhole(m, manifest));
      const loaded = await loadManifest(store, manifest);
      for (const d of manifestDigests(loaded)) both((m) => useWhole(m, d));
      for (const e of loaded.entries) {
        if (e.type !== 'file') continue;
        files.set(e.path, { content: e.sha256 ?? JSON.stringify(e.recipe?.chunks ?? []), size: e.size, linkGroup: e.linkGroup });
      }
    }
    if (ck.processImage) {
      const image = ck.processImage;
      both((m) => useWhole(m, image));
      const recipe = await store.getJson<DirRecipe>(image);
      // an fs checkpoint names the image an earlier one dumped: the paper's runtime dumps every time, but crab's fs checkpoints do not
      if (ck.processImageFrom === ck.id) imageBytes = recipe.logicalBytes;
      for (const e of recipe.entries) {
        if (e.type !== 'file') continue;
        const r = e.recipe;
        if (!r.extents) {
          for (const d of r.chunks) both((m) => useWhole(m, d));
          continue;
        }
        for (const read of planExtentReads({ ...r, extents: r.extents })) {
          if (read.base) {
            usePages(uses, r.chunks[read.chunk], read.first, read.count);
            both((m) => usePages(m, r.chunks[read.base!.chunk], read.base!.first, read.count));
          } else {
            both((m) => usePages(m, r.chunks[read.chunk], read.first, read.count));
          }
        }
      }
    }
    all.push(uses);
    allWhole.push(whole);
    paper.push({ imageBytes, files });
  }
  const counts = new Map<Digest, number>();
  for (const uses of [...all, ...allWhole]) {
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
  const pagesOf = (d: Digest) => counts.get(d) ?? 1;
  return { own: ownTraffic(all, size, pagesOf), whole: wholeTraffic(allWhole, size, pagesOf), paper: paperTraffic(paper) };
}
