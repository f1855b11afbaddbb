/**
 * @module The content store: immutable chunks named by the sha256 of their (uncompressed) bytes,
 * plus recipes that assemble files and directories from chunks. It knows nothing about
 * checkpoints, lineage or retention: the catalog decides what is live and calls `sweep()`.
 *
 * Implementations: `LocalContentStore` (files under a root directory). An S3-compatible store
 * can implement the same interface: every method is content-addressed and idempotent.
 */

/** 64 lower-case hex characters: sha256 of a chunk's uncompressed bytes. */
export type Digest = string;

/** How `putFile` cuts a file into chunks. */
export type Chunking = 'whole' | 'pages';

/** Page size that `'pages'` chunking aligns to (x86-64 CRIU pages-*.img are 4 KiB pages). */
export const PAGE_BYTES = 4096;

/**
 * Bytes of a regular file: the ordered list of chunks that concatenate to it, or (`'pages'`
 * files only) runs of pages taken from chunks (`extents`, see `page-extents.ts`).
 * Plain JSON; stable across versions.
 */
export interface FileRecipe {
  /** Length of the file in bytes. */
  size: number;
  /** Without `extents`: chunk digests in file order (empty for an empty file). With: every chunk the extents read, each once. */
  chunks: Digest[];
  /** Flat `[chunkIndex, firstPage, pageCount]` triplets in file order; absent when the chunks concatenate to the file. */
  extents?: number[];
  /** With `extents` only: flat `[extentIndex, baseChunkIndex, basePage]` triplets, the extents stored as XOR deltas against base pages (`page-extents.ts`). */
  deltas?: number[];
}

/** One entry of a stored directory (relative path, '/'-separated, no '.' or '..'). */
export type DirRecipeEntry =
  | { path: string; type: 'dir'; mode: number }
  | { path: string; type: 'file'; mode: number; chunking: Chunking; recipe: FileRecipe };

/**
 * Directory recipe formats: `crab-dir/2` when some file has XOR deltas (`FileRecipe.deltas`),
 * so that a reader that does not know them refuses it; `crab-dir/1` otherwise.
 */
export const DIR_FORMATS = ['crab-dir/1', 'crab-dir/2'] as const;

/** A stored directory tree of regular files (a CRIU image directory). */
export interface DirRecipe {
  format: (typeof DIR_FORMATS)[number];
  /** Entries sorted by path; parents come before their children. */
  entries: DirRecipeEntry[];
  /** Sum of file sizes. */
  logicalBytes: number;
}

export interface PutResult {
  digest: Digest;
  /** Uncompressed length. */
  sizeBytes: number;
  /** Compressed bytes written to the store by this call; 0 when the chunk was already there. */
  newBytes: number;
}

export interface PutFileResult {
  recipe: FileRecipe;
  /** Uncompressed bytes read (the file's size). */
  logicalBytes: number;
  /** Compressed bytes of chunks that were not in the store before. */
  newBytes: number;
  /** sha256 (hex) of the whole file, independent of chunking; for tree hashes. */
  sha256: string;
}

/** Of one `'pages'` file of a directory being stored: which page of a basis file each of its pages resembles. */
export interface PageAffinity {
  /** Path of the file in the basis directory recipe. */
  basisPath: string;
  /** Per page of the file: index of the page in the basis file, or -1 for none. */
  pages: Int32Array;
}

export interface PutDirResult {
  recipe: DirRecipe;
  /** The recipe itself, stored as a JSON chunk: the one digest a catalog record needs. */
  recipeDigest: Digest;
  logicalBytes: number;
  /** Compressed bytes of chunks (including the recipe's own) that were new. */
  newBytes: number;
}

export interface StoreStats {
  chunkCount: number;
  /** Compressed bytes on disk (sum of chunk file sizes). */
  storedBytes: number;
}

export interface CorruptChunk {
  digest: Digest;
  path: string;
  why: string;
}

export interface SweepOptions {
  /**
   * Chunks (and abandoned temp files) modified less than this long ago are kept even when not
   * live, so a checkpoint still being written is never swept. Default 1 hour.
   */
  graceMs?: number;
  /** Count what would be deleted, delete nothing. */
  dryRun?: boolean;
}

export interface SweepResult {
  deletedChunks: number;
  freedBytes: number;
  /** Unreferenced chunks kept because they are younger than the grace period. */
  keptYoung: number;
  keptLive: number;
}

/**
 * Bytes by digest.
 *
 * Durability: every method that stores returns only after the chunks it wrote are durable
 * (fsync'd file, renamed into place, fsync'd directory), so a caller can commit a catalog record
 * that references them as soon as the promise resolves.
 *
 * Concurrency: puts may run concurrently with each other and with `sweep()`. A put that finds
 * its chunk already present refreshes the chunk's mtime, so a sweep running at the same time
 * keeps it (grace period). Callers must commit the catalog record that references new chunks
 * within `SweepOptions.graceMs` of the put.
 */
export interface ContentStore {
  /** True when a chunk with this digest is stored. Does not verify its bytes. */
  has(digest: Digest): Promise<boolean>;

  /**
   * Stores `buf` as one chunk. Idempotent: a second put of the same bytes writes nothing and
   * returns `newBytes: 0`. On failure: nothing visible under the digest (a temp file may be
   * left in `<root>/tmp`, removed by `sweep()`).
   */
  put(buf: Uint8Array): Promise<PutResult>;

  /**
   * Returns the chunk's bytes after checking they hash to `digest`.
   * Throws `STORE_CHUNK_MISSING` (not-found) or `STORE_CHUNK_CORRUPT` (bad zstd frame or hash).
   */
  get(digest: Digest): Promise<Buffer>;

  /** `put` of several chunks with one durability barrier; `newBytes` is their total. */
  putMany(bufs: readonly Uint8Array[]): Promise<{ digests: Digest[]; newBytes: number }>;

  /** Stores a JSON document (stable key order is the caller's job) as one chunk. */
  putJson(value: unknown): Promise<PutResult>;
  /** Reads a chunk stored by `putJson`. Same errors as `get`; `STORE_CHUNK_CORRUPT` on bad JSON. */
  getJson<T = unknown>(digest: Digest): Promise<T>;

  /**
   * Stores a regular file. `'whole'`: one chunk up to 256 KiB; above, content-defined chunks
   * of ~1.25 MiB on average, 4 MiB at most (`content-cuts.ts`). `'pages'`: only pages not already stored are written, in page-aligned
   * content-defined chunks (see `local-content-store.ts`), so consecutive CRIU dumps of a
   * process store about its dirty pages.
   * Precondition: the file does not change while it is read (sandbox frozen).
   */
  putFile(path: string, opts: { chunking: Chunking }): Promise<PutFileResult>;

  /**
   * `putFile` for many files with one durability barrier (one syncfs and one fsync per touched
   * directory for the whole set, instead of per file). Results are in the order of `paths`.
   * `newBytes` of each result is 0; the total is returned once.
   */
  putFiles(paths: readonly string[], opts: { chunking: Chunking }): Promise<{ results: PutFileResult[]; newBytes: number }>;

  /**
   * `putFiles` of contents already in memory (read while a sandbox was frozen, stored after it
   * runs again): the same recipes `putFiles` gives the files that held them.
   */
  putBuffers(bufs: readonly Uint8Array[], opts: { chunking: 'whole' }): Promise<{ results: PutFileResult[]; newBytes: number }>;

  /**
   * Writes the file described by `recipe` to `destPath` (created or truncated; written to a temp
   * name beside it and renamed, so `destPath` is either absent/old or complete). Every chunk is
   * verified. `mode` defaults to 0o644. Does not fsync (restores are re-playable).
   * `fresh`: `destPath` is new in a directory the caller removes on failure: written in place,
   * no temp name and rename.
   */
  materializeFile(recipe: FileRecipe, destPath: string, opts?: { mode?: number; fresh?: boolean }): Promise<void>;

  /**
   * Stores a directory of regular files (a CRIU image directory): `pages-*.img` with `'pages'`
   * chunking, everything else `'whole'`. Throws `STORE_UNSUPPORTED_ENTRY` on symlinks, devices…
   * `basis`: the recipe digest of an earlier dump of the same processes (the parent checkpoint's
   * image); its pages are reused where unchanged even when this process has not seen them yet.
   * `affinity` (with `basis`): for a `'pages'` file, the basis page each of its pages probably
   * resembles; a new page close to it is stored as an XOR delta against it. Only a hint: a wrong
   * one costs bytes, never correctness.
   */
  putDir(dir: string, opts?: { basis?: Digest; affinity?: ReadonlyMap<string, PageAffinity> }): Promise<PutDirResult>;

  /** Recreates a stored directory under `dest` (created if absent; existing files overwritten). */
  materializeDir(recipe: DirRecipe, dest: string): Promise<void>;

  /** Walks the store. Cost: one stat per chunk. */
  stats(): Promise<StoreStats>;

  /**
   * Re-reads and re-hashes every chunk (or only `digests`, where a missing one is reported too);
   * returns the corrupt ones (never throws for corruption).
   */
  verify(opts?: { digests?: Iterable<Digest> }): Promise<CorruptChunk[]>;

  /**
   * Deletes every chunk not in `liveDigests` and older than the grace period, and abandoned temp
   * files. Never deletes a chunk in `liveDigests`. Who calls it: GC, with the set from
   * `Catalog.liveDigests()` computed just before.
   */
  sweep(liveDigests: ReadonlySet<Digest>, opts?: SweepOptions): Promise<SweepResult>;
}

/** Every chunk digest a stored directory recipe references (not the recipe's own digest). */
export function dirRecipeDigests(recipe: DirRecipe): Digest[] {
  const out: Digest[] = [];
  for (const e of recipe.entries) if (e.type === 'file') out.push(...e.recipe.chunks);
  return out;
}

const DIGEST_RE = /^[0-9a-f]{64}$/;

/** True for a well-formed digest. */
export function isDigest(s: unknown): s is Digest {
  return typeof s === 'string' && DIGEST_RE.test(s);
}
