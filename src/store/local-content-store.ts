/**
 * @module `LocalContentStore`: chunks as zstd files under `<root>/chunks/<ab>/<hex>`.
 *
 * On-disk layout (format 1):
 *   <root>/chunks/<first two hex>/<64 hex>   one zstd frame (level 3, content size in the header)
 *   <root>/tmp/                              temp files of writes in progress (swept after the grace period)
 *
 * Writes: compress → temp file (O_EXCL) → made durable (fdatasync each, or one syncfs when a call
 * writes more than 32 chunks) → rename into place → the touched `chunks/<ab>` directories are
 * fsync'd, all before the storing call returns.
 *
 * Page chunking (`'pages'`): CRIU `pages-*.img` files are the process's private pages in pagemap
 * order. A page whose content is already stored (the in-memory page index, `page-index.ts`) is
 * named where it is: the recipe then lists page extents (`page-extents.ts`), and a dump of a
 * process stores about its dirty pages since any earlier dump. The other pages fill new chunks
 * whose boundaries are content-defined at page granularity: after each new 4 KiB page a cheap
 * hash of the page decides whether a chunk ends there (min 4 pages, max 64, mean ≈ 16 pages =
 * 64 KiB), so a cold index (a new process without a basis) still dedups unchanged runs, and an
 * inserted page costs one chunk, not the rest of the file. 64 KiB keeps the per-chunk cost (one
 * file, one fsync, one digest in the recipe) 16× below 4 KiB chunks.
 *
 * XOR deltas: when the caller says which basis page a new page resembles (`PageAffinity`: the
 * page at the same virtual address in the parent dump) and the two differ in at most
 * `DELTA_MAX_CHANGED_BYTES`, the page is stored as their XOR, in chunks of deltas. A Python
 * server's request changes a few words in each of ~150 heap pages: 600 KiB of new pages, ~4 KiB
 * as deltas. The base is always a plain page (a delta of a delta is cut against the first
 * delta's base), so a restore reads at most two chunks per page.
 */
import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { setImmediate as yieldToLoop } from 'node:timers/promises';
import { compress, decompress } from 'zstd-napi';
import { pool } from '../core/pool.js';
import { run } from '../core/run.js';
import type {
  Chunking,
  ContentStore,
  CorruptChunk,
  Digest,
  DirRecipe,
  DirRecipeEntry,
  FileRecipe,
  PageAffinity,
  PutDirResult,
  PutFileResult,
  PutResult,
  StoreStats,
  SweepOptions,
  SweepResult,
} from './content-store.js';
import { DIR_FORMATS, PAGE_BYTES, isDigest } from './content-store.js';
import { CrabError } from '../core/errors.js';
import { rootLogger } from '../core/log.js';
import { ownerMark } from '../core/owner.js';
import { badDigest, badRecipe, chunkCorrupt, chunkMissing, unsupportedEntry } from './errors.js';
import { basisPageLocations } from './page-basis.js';
import { ChunkAssembler } from './content-cuts.js';
import { ExtentBuilder, copyExtent, extentWindows, nonZeroBytes, planExtentReads, readChunks, xorInto, type ChunkRef } from './page-extents.js';
import { DEFAULT_PAGE_INDEX_PAGES, PageIndex, pageFingerprint, type PageLocation } from './page-index.js';
import { DEFAULT_VERIFIED_TRUST_MS, VerifiedChunks } from './verified.js';

const log = rootLogger.child({ component: 'store' });

/** Default page-chunk shape: a chunk ends after a page whose hash is divisible by `divisor` (after `minPages`), mean ≈ min + divisor. */
export const DEFAULT_PAGE_CHUNKING: PageChunking = { minPages: 4, divisor: 12, maxPages: 64 };

export interface PageChunking {
  minPages: number;
  divisor: number;
  maxPages: number;
}
const READ_BLOCK_BYTES = 8 * 1024 * 1024;
/** Bytes of an in-memory buffer cut and hashed at once (~12 ms of the event loop). */
const CUT_BLOCK_BYTES = 4 * 1024 * 1024;
/** Chunk writes in flight per storing call (libuv has 4 threads; this hides compression latency). */
const WRITES_IN_FLIGHT = 8;
const DEFAULT_GRACE_MS = 60 * 60 * 1000;
/** Batches with more new chunks than this are made durable with one syncfs instead of one fdatasync each. */
const SYNCFS_ABOVE_CHUNKS = 32;
/** Files `materializeDir` writes at once. */
const FILES_IN_FLIGHT = 4;
/** A page-extents file is written in windows of at most this many bytes and distinct chunks (held in memory at once). */
const EXTENT_WINDOW_BYTES = 8 * 1024 * 1024;
const EXTENT_WINDOW_CHUNKS = 64;
/** Basis recipes remembered as already indexed (a checkpoint's parent is almost always among them). */
const WARM_BASES_KEPT = 4096;
/** A new page is stored as an XOR delta against its basis page when they differ in at most this many bytes. */
export const DELTA_MAX_CHANGED_BYTES = 1024;
/** Pages per chunk of XOR deltas (mostly zeros: 64 of them compress to a few KiB). */
const DELTA_CHUNK_PAGES = 64;
/** Pages a `PageWriter` decides on at once (their base chunks are held in memory meanwhile). */
const PAGES_PER_STEP = 256;

export interface LocalContentStoreOptions {
  /** zstd level, 1–3 recommended (default 3). */
  compressionLevel?: number;
  /** Shape of `'pages'` chunks (default `DEFAULT_PAGE_CHUNKING`). Changing it only costs dedup against older chunks. */
  pageChunking?: PageChunking;
  /** Bound of the in-memory page index, in pages (default `DEFAULT_PAGE_INDEX_PAGES`); 0 turns page reuse off. */
  pageIndexPages?: number;
  /**
   * How long a check of an existing chunk's bytes is trusted before a put or a recipe builds on
   * it again (default `DEFAULT_VERIFIED_TRUST_MS`); 0 checks every time.
   */
  verifiedTrustMs?: number;
}

/** Content store on a local filesystem. Create with `LocalContentStore.open(root)`. */
export class LocalContentStore implements ContentStore {
  readonly chunksDir: string;
  readonly tmpDir: string;
  private readonly level: number;
  /** @internal */
  readonly pageChunking: PageChunking;
  /** @internal Where already-stored pages are (see `page-index.ts`). */
  readonly pageIndex: PageIndex;
  private readonly warmBases = new Set<Digest>();
  /** @internal When each chunk was last known good (`verified.ts`). */
  readonly verified: VerifiedChunks;
  /** Corrupt chunks rewritten by puts of their bytes, since open. */
  repairedChunks = 0;
  /** Chunks some batch is writing and has not renamed into place yet (count of batches). */
  private readonly writing = new Map<Digest, number>();
  private tmpCounter = 0;

  private constructor(
    readonly root: string,
    opts: LocalContentStoreOptions,
  ) {
    this.chunksDir = path.join(root, 'chunks');
    this.tmpDir = path.join(root, 'tmp');
    this.level = opts.compressionLevel ?? 3;
    this.pageChunking = opts.pageChunking ?? DEFAULT_PAGE_CHUNKING;
    this.pageIndex = new PageIndex(opts.pageIndexPages ?? DEFAULT_PAGE_INDEX_PAGES);
    this.verified = new VerifiedChunks(opts.verifiedTrustMs ?? DEFAULT_VERIFIED_TRUST_MS);
  }

  /** Opens (creating if needed) a store at `root`. Idempotent. */
  static async open(root: string, opts: LocalContentStoreOptions = {}): Promise<LocalContentStore> {
    const s = new LocalContentStore(root, opts);
    await fsp.mkdir(s.tmpDir, { recursive: true });
    await fsp.mkdir(s.chunksDir, { recursive: true });
    const fanout: Promise<unknown>[] = [];
    for (let i = 0; i < 256; i++) fanout.push(fsp.mkdir(path.join(s.chunksDir, i.toString(16).padStart(2, '0')), { recursive: true }));
    await Promise.all(fanout);
    await fsyncDir(s.chunksDir);
    await fsyncDir(root);
    return s;
  }

  /** Where the chunk with this digest lives (whether or not it exists). */
  chunkPath(digest: Digest): string {
    if (!isDigest(digest)) throw badDigest(digest);
    return path.join(this.chunksDir, digest.slice(0, 2), digest);
  }

  async has(digest: Digest): Promise<boolean> {
    try {
      await fsp.access(this.chunkPath(digest));
      return true;
    } catch {
      return false; // ENOENT (or unreadable): not usable as present
    }
  }

  async put(buf: Uint8Array): Promise<PutResult> {
    const batch = this.batch();
    const digest = sha256(buf);
    batch.add(digest, buf);
    const newBytes = await batch.finish();
    return { digest, sizeBytes: buf.length, newBytes };
  }

  async putMany(bufs: readonly Uint8Array[]): Promise<{ digests: Digest[]; newBytes: number }> {
    const batch = this.batch();
    const digests = bufs.map((b) => {
      const d = sha256(b);
      batch.add(d, b);
      return d;
    });
    return { digests, newBytes: await batch.finish() };
  }

  async get(digest: Digest): Promise<Buffer> {
    const p = this.chunkPath(digest);
    let raw: Buffer;
    try {
      raw = await fsp.readFile(p);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') throw chunkMissing(digest, this.root);
      throw err;
    }
    const out = checkChunk(digest, p, raw);
    this.verified.mark(digest);
    return out;
  }

  async putJson(value: unknown): Promise<PutResult> {
    return this.put(Buffer.from(JSON.stringify(value)));
  }

  async getJson<T = unknown>(digest: Digest): Promise<T> {
    const buf = await this.get(digest);
    try {
      return JSON.parse(buf.toString('utf8')) as T;
    } catch (err) {
      throw chunkCorrupt(digest, this.chunkPath(digest), 'not JSON', err);
    }
  }

  async putFile(file: string, opts: { chunking: Chunking }): Promise<PutFileResult> {
    const batch = this.batch();
    const r = await this.putFileInto(batch, file, opts.chunking);
    const newBytes = await batch.finish();
    return { ...r, newBytes };
  }

  async putFiles(paths: readonly string[], opts: { chunking: Chunking }): Promise<{ results: PutFileResult[]; newBytes: number }> {
    const batch = this.batch();
    const results: PutFileResult[] = [];
    for (const p of paths) results.push({ ...(await this.putFileInto(batch, p, opts.chunking)), newBytes: 0 });
    return { results, newBytes: await batch.finish() };
  }

  async putBuffers(bufs: readonly Uint8Array[], _opts: { chunking: 'whole' }): Promise<{ results: PutFileResult[]; newBytes: number }> {
    const batch = this.batch();
    const results: PutFileResult[] = [];
    for (const b of bufs) {
      const chunks: Digest[] = [];
      const cutter = wholeChunks(batch, chunks);
      const whole = createHash('sha256');
      // a block at a time, with the event loop let through between blocks (a resolved await
      // would not let it): this process serves other sandboxes' proxies and gates meanwhile
      for (let off = 0; off === 0 || off < b.length; off += CUT_BLOCK_BYTES) {
        if (off > 0) await yieldToLoop();
        await batch.backpressure();
        const block = b.subarray(off, off + CUT_BLOCK_BYTES);
        whole.update(block);
        cutter.write(block);
      }
      cutter.end();
      results.push({ recipe: { size: b.length, chunks }, logicalBytes: b.length, sha256: whole.digest('hex'), newBytes: 0 });
    }
    return { results, newBytes: await batch.finish() };
  }

  async materializeFile(recipe: FileRecipe, destPath: string, opts: { mode?: number; fresh?: boolean } = {}): Promise<void> {
    checkRecipe(recipe);
    // fresh: written in place (no temp name, no rename): the caller owns a new directory and removes it on failure
    const target = opts.fresh ? destPath : `${destPath}.crab-tmp-${randomBytes(4).toString('hex')}`;
    const fh = await fsp.open(target, 'wx', opts.mode ?? 0o644);
    try {
      const written = recipe.extents ? await this.writeExtents({ ...recipe, extents: recipe.extents }, fh) : await this.writeChunks(recipe, fh);
      if (written !== recipe.size) {
        throw badRecipe(`recipe says ${recipe.size} bytes but its chunks hold ${written}`, { destPath });
      }
      if (opts.mode !== undefined) await fh.chmod(opts.mode); // umask may have cut bits at open
      await fh.close();
      if (!opts.fresh) await fsp.rename(target, destPath);
    } catch (err) {
      await fh.close().catch(() => undefined); // already closed on the success path
      await fsp.rm(target, { force: true });
      throw err;
    }
  }

  /** Writes the concatenation of the recipe's chunks; returns the bytes written. */
  private async writeChunks(recipe: FileRecipe, fh: fsp.FileHandle): Promise<number> {
    let written = 0;
    for (let i = 0; i < recipe.chunks.length; i += WRITES_IN_FLIGHT) {
      const bufs = await Promise.all(recipe.chunks.slice(i, i + WRITES_IN_FLIGHT).map((d) => this.get(d)));
      for (const b of bufs) {
        await writeAll(fh, b, written);
        written += b.length;
      }
    }
    return written;
  }

  /**
   * Writes a page-extents recipe window by window: the window's chunks are read (a few in flight,
   * chunks of the previous window kept), its pages copied into one buffer, written once. One
   * write per extent made a 100 MB image of mostly equal pages take seconds.
   */
  private async writeExtents(recipe: FileRecipe & { extents: number[] }, fh: fsp.FileHandle): Promise<number> {
    const reads = planExtentReads(recipe);
    const windows = extentWindows(reads, EXTENT_WINDOW_BYTES, EXTENT_WINDOW_CHUNKS);
    let held = new Map<number, Buffer>();
    let written = 0;
    for (let w = 0; w + 1 < windows.length; w++) {
      const part = reads.slice(windows[w], windows[w + 1]);
      const chunks = new Map<number, Buffer>();
      const missing: number[] = [];
      for (const r of part) {
        for (const c of readChunks(r)) {
          if (chunks.has(c) || missing.includes(c)) continue;
          const had = held.get(c);
          if (had) chunks.set(c, had);
          else missing.push(c);
        }
      }
      await pool(missing, WRITES_IN_FLIGHT, async (ci) => void chunks.set(ci, await this.get(recipe.chunks[ci])));
      held = chunks;
      const start = part[0].offset;
      const out = Buffer.allocUnsafe(Math.min(recipe.size, part[part.length - 1].offset + part[part.length - 1].count * PAGE_BYTES) - start);
      let filled = 0;
      for (const r of part) filled += copyExtent(r, (c) => chunks.get(c)!, recipe.size, out, r.offset - start);
      await writeAll(fh, out.subarray(0, filled), start);
      written += filled;
    }
    return written;
  }

  async putDir(dir: string, opts: { basis?: Digest; affinity?: ReadonlyMap<string, PageAffinity> } = {}): Promise<PutDirResult> {
    const similarOf = opts.basis ? await this.useBasis(opts.basis, opts.affinity) : undefined;
    const entries: DirRecipeEntry[] = [];
    const batch = this.batch();
    let logicalBytes = 0;
    const walk = async (rel: string): Promise<void> => {
      const names = (await fsp.readdir(path.join(dir, rel))).sort();
      for (const name of names) {
        const relPath = rel ? `${rel}/${name}` : name;
        const abs = path.join(dir, relPath);
        const st = await fsp.lstat(abs);
        if (st.isDirectory()) {
          entries.push({ path: relPath, type: 'dir', mode: st.mode & 0o7777 });
          await walk(relPath);
        } else if (st.isFile()) {
          const chunking: Chunking = /^pages-\d+\.img$/.test(name) ? 'pages' : 'whole';
          // a directory recipe holds no file digests: the pages of a 100 MiB dump are not hashed a second time
          const r = await this.putFileInto(batch, abs, chunking, chunking === 'pages' ? similarOf?.(relPath) : undefined, false);
          logicalBytes += r.logicalBytes;
          entries.push({ path: relPath, type: 'file', mode: st.mode & 0o7777, chunking, recipe: r.recipe });
        } else {
          throw unsupportedEntry(abs, st.isSymbolicLink() ? 'symlink' : 'special file');
        }
      }
    };
    await walk('');
    const deltas = entries.some((e) => e.type === 'file' && e.recipe.deltas);
    const recipe: DirRecipe = { format: deltas ? 'crab-dir/2' : 'crab-dir/1', entries, logicalBytes };
    const json = Buffer.from(JSON.stringify(recipe));
    const recipeDigest = sha256(json);
    batch.add(recipeDigest, json);
    const newBytes = await batch.finish();
    this.rememberBasis(recipeDigest); // its pages are indexed: a later dump based on it needs no warm-up
    return { recipe, recipeDigest, logicalBytes, newBytes };
  }

  async materializeDir(recipe: DirRecipe, dest: string): Promise<void> {
    if (!DIR_FORMATS.includes(recipe.format)) throw badRecipe(`unknown directory recipe format ${String(recipe.format)}`);
    // a directory this call creates holds nothing to overwrite: its files are written in place
    const fresh = (await fsp.mkdir(dest, { recursive: true })) !== undefined;
    const files: Array<Extract<DirRecipeEntry, { type: 'file' }>> = [];
    for (const e of recipe.entries) {
      if (e.type === 'dir') {
        const target = safeJoin(dest, e.path);
        await fsp.mkdir(target, { recursive: true });
        await fsp.chmod(target, e.mode);
      } else {
        files.push(e);
      }
    }
    // a few files at a time: a CRIU image is a dozen small files and one or two big ones
    await pool(files, FILES_IN_FLIGHT, (e) => this.materializeFile(e.recipe, safeJoin(dest, e.path), { mode: e.mode, fresh }));
  }

  async stats(): Promise<StoreStats> {
    let chunkCount = 0;
    let storedBytes = 0;
    for await (const c of this.listChunks()) {
      try {
        const st = await fsp.stat(c.path);
        chunkCount++;
        storedBytes += st.size;
      } catch {
        // swept between readdir and stat: not counted
      }
    }
    return { chunkCount, storedBytes };
  }

  async verify(opts: { digests?: Iterable<Digest> } = {}): Promise<CorruptChunk[]> {
    const bad: CorruptChunk[] = [];
    if (opts.digests) {
      const todo = [...new Set(opts.digests)];
      const found: Array<CorruptChunk | undefined> = [];
      await pool(todo, WRITES_IN_FLIGHT, async (d, i) => {
        const why = await this.checkStored(d);
        if (why) found[i] = { digest: d, path: this.chunkPath(d), why };
      });
      return found.filter((c): c is CorruptChunk => c !== undefined); // in the order asked
    }
    for await (const c of this.listChunks()) {
      if (!isDigest(c.name) || c.name.slice(0, 2) !== path.basename(path.dirname(c.path))) {
        bad.push({ digest: c.name, path: c.path, why: 'file name is not a digest in its fan-out directory' });
        continue;
      }
      const why = await this.checkStored(c.name);
      if (why && why !== 'missing') bad.push({ digest: c.name, path: c.path, why }); // missing: swept meanwhile
    }
    return bad;
  }

  async sweep(liveDigests: ReadonlySet<Digest>, opts: SweepOptions = {}): Promise<SweepResult> {
    const graceMs = opts.graceMs ?? DEFAULT_GRACE_MS;
    const res: SweepResult = { deletedChunks: 0, freedBytes: 0, keptYoung: 0, keptLive: 0 };
    for await (const c of this.listChunks()) {
      if (liveDigests.has(c.name)) {
        res.keptLive++;
        continue;
      }
      // stat + unlink run synchronously, with no await between them: a put in this process
      // either refreshed the mtime before (so the chunk is young and kept) or finds it gone
      // afterwards (its utimes fails, so it writes the chunk again).
      try {
        const st = fs.statSync(c.path);
        if (Date.now() - st.mtimeMs < graceMs) {
          res.keptYoung++;
          continue;
        }
        if (!opts.dryRun) fs.unlinkSync(c.path);
        res.deletedChunks++;
        res.freedBytes += st.size;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
      }
    }
    for (const name of await fsp.readdir(this.tmpDir)) {
      const p = path.join(this.tmpDir, name);
      try {
        const st = await fsp.stat(p);
        if (Date.now() - st.mtimeMs >= graceMs && !opts.dryRun) await fsp.rm(p, { force: true });
      } catch {
        // removed by its writer meanwhile
      }
    }
    return res;
  }

  /**
   * Of `digests`, checks those not verified within the trust period (read, decompress, hash) and
   * returns the corrupt or missing ones. What a checkpoint calls before it builds on chunks it
   * did not store itself (its parent's files and process image).
   */
  async checkUnverified(digests: Iterable<Digest>): Promise<CorruptChunk[]> {
    return this.verify({ digests: this.verified.stale(digests) });
  }

  // ---------------------------------------------------------------------------------------------

  /**
   * Why the stored chunk is not `digest` ('missing' when absent), or null when it is (then it is
   * marked verified). A bad chunk is forgotten by the page index, so no recipe names it again.
   */
  private async checkStored(digest: Digest, expected?: Uint8Array): Promise<string | null> {
    const why = await verifyChunkFile(digest, this.chunkPath(digest), expected);
    if (why) {
      this.verified.forget(digest);
      if (!this.isBeingWritten(digest)) this.pageIndex.forget(digest);
    } else this.verified.mark(digest);
    return why;
  }

  /** @internal Why an existing chunk is not `digest` (or does not hold `expected`, the bytes a put is storing), or null. */
  existingHolds(digest: Digest, expected?: Uint8Array): Promise<string | null> {
    return this.checkStored(digest, expected);
  }

  /** Chunk files, as found on disk (names not validated). */
  private async *listChunks(): AsyncGenerator<{ name: string; path: string }> {
    const fans = (await fsp.readdir(this.chunksDir)).sort();
    for (const fan of fans) {
      const d = path.join(this.chunksDir, fan);
      let names: string[];
      try {
        names = await fsp.readdir(d);
      } catch {
        continue; // not a directory
      }
      for (const name of names) yield { name, path: path.join(d, name) };
    }
  }

  private batch(): ChunkBatch {
    return new ChunkBatch(this);
  }

  /** Reads `file` and adds its chunks to `batch`; returns the recipe (newBytes counted by the batch). */
  private async putFileInto(
    batch: ChunkBatch,
    file: string,
    chunking: Chunking,
    similar?: SimilarPages,
    wantSha256 = true,
  ): Promise<{ recipe: FileRecipe; logicalBytes: number; sha256: string }> {
    const whole = wantSha256 ? createHash('sha256') : null;
    const chunks: Digest[] = [];
    const pages = chunking === 'pages' ? new PageWriter(this, batch, similar) : null;
    const cutter = pages ? null : wholeChunks(batch, chunks);
    const fh = await fsp.open(file, 'r');
    // +1 so a file read whole in one block sees EOF without a second allocation
    const blockHint = Math.max(PAGE_BYTES, Number((await fh.stat()).size) + 1);
    let size = 0;
    try {
      for (;;) {
        await batch.backpressure();
        // small files get a small buffer: 8 MiB per file made a 10k-file capture allocation-bound
        const block = Buffer.allocUnsafe(Math.min(READ_BLOCK_BYTES, blockHint));
        const n = await readFull(fh, block);
        if (n === 0) break;
        const data = block.subarray(0, n);
        whole?.update(data);
        size += n;
        if (pages) {
          await pages.write(data);
        } else {
          cutter!.write(data);
        }
        if (n < block.length) break;
      }
    } finally {
      await fh.close();
    }
    cutter?.end();
    const recipe = pages ? pages.finish(size) : { size, chunks };
    return { recipe, logicalBytes: size, sha256: whole?.digest('hex') ?? '' };
  }

  /**
   * Prepares a dump against `basis`: indexes its pages (`warmPageIndex`) and returns, when
   * `affinity` is given, the similar basis pages of each file. An unreadable basis only costs bytes.
   */
  private async useBasis(basis: Digest, affinity?: ReadonlyMap<string, PageAffinity>): Promise<((path: string) => SimilarPages | undefined) | undefined> {
    if (this.warmBases.has(basis) && !affinity?.size) return undefined;
    const recipe = await unlessUnreadable(this.getJson<DirRecipe>(basis), basis, basis);
    if (!this.warmBases.has(basis)) await this.warmPageIndex(basis, recipe);
    if (!recipe || !affinity?.size) return undefined;
    const files = new Map<string, FileRecipe>();
    for (const e of recipe.entries) if (e.type === 'file' && e.chunking === 'pages') files.set(e.path, e.recipe);
    return (p) => {
      const a = affinity.get(p);
      const basisFile = a && files.get(a.basisPath);
      if (!a || !basisFile) return undefined;
      try {
        return { pages: a.pages, locations: basisPageLocations(basisFile, (d) => this.pageIndex.pagesOf(d)) };
      } catch (err) {
        if (!(err instanceof CrabError) || err.code !== 'STORE_BAD_RECIPE') throw err;
        log.warn({ err, basis, path: a.basisPath }, 'basis file recipe malformed; its pages are not used for deltas');
        return undefined;
      }
    };
  }

  /**
   * Indexes the pages of `basis` (a stored directory recipe) that this process has not seen, so
   * the next dump of the same processes reuses them (after a restart or a restore from elsewhere).
   * A basis chunk that is missing or corrupt is only skipped: it costs bytes, not this checkpoint.
   */
  private async warmPageIndex(basis: Digest, recipe: DirRecipe | null): Promise<void> {
    const todo = new Set<Digest>();
    for (const e of recipe?.entries ?? []) if (e.type === 'file' && e.chunking === 'pages') for (const d of e.recipe.chunks) if (!this.pageIndex.has(d)) todo.add(d);
    await pool([...todo], WRITES_IN_FLIGHT, async (d) => {
      const buf = await unlessUnreadable(this.get(d), d, basis);
      if (buf) this.indexChunkPages(d, buf);
    });
    this.rememberBasis(basis);
  }

  /**
   * @internal Records the fingerprints of a `'pages'` chunk's full pages (for a chunk of XOR
   * deltas: of the pages they give, with their bases).
   */
  indexChunkPages(digest: Digest, buf: Buffer, fingerprints?: string[], bases?: PageLocation[]): void {
    const pages = Math.ceil(buf.length / PAGE_BYTES);
    const fps = fingerprints ?? [];
    if (!fingerprints) for (let off = 0; off + PAGE_BYTES <= buf.length; off += PAGE_BYTES) fps.push(pageFingerprint(buf.subarray(off, off + PAGE_BYTES)));
    this.pageIndex.add(digest, fps, pages, bases);
  }

  /** @internal Finishes a pending page chunk: names it, indexes its pages, adds it to the batch. Returns a new empty one. */
  pageChunk(batch: ChunkBatch, p: PendingChunk): PendingChunk {
    if (!p.pages.length) return p;
    const buf = p.pages.length === 1 ? p.pages[0] : Buffer.concat(p.pages);
    const digest = sha256(buf);
    p.ref.digest = digest;
    p.ref.pages = p.pages.length;
    this.indexChunkPages(digest, buf, p.fingerprints, p.bases.length ? p.bases : undefined);
    batch.add(digest, buf);
    return newPendingChunk();
  }

  /** @internal A chunk's bytes, or null (with a warning) when it is missing or corrupt. */
  getUnlessUnreadable(digest: Digest): Promise<Buffer | null> {
    return unlessUnreadable(this.get(digest), digest, digest);
  }

  private rememberBasis(digest: Digest): void {
    this.warmBases.add(digest);
    for (const d of this.warmBases) {
      if (this.warmBases.size <= WARM_BASES_KEPT) break;
      this.warmBases.delete(d);
    }
  }

  /** @internal used by ChunkBatch */
  nextTmpPath(digest: Digest): string {
    // the owner last: a process that finds it after this one died removes it (crash-recovery.ts)
    return path.join(this.tmpDir, `${digest}.${++this.tmpCounter}.${ownerMark()}`);
  }

  /** @internal A batch started writing this chunk. */
  beginWriting(digest: Digest): void {
    this.writing.set(digest, (this.writing.get(digest) ?? 0) + 1);
  }

  /** @internal A batch finished (or gave up) writing these chunks. */
  doneWriting(digests: readonly Digest[]): void {
    for (const d of digests) {
      const n = (this.writing.get(d) ?? 1) - 1;
      if (n > 0) this.writing.set(d, n);
      else this.writing.delete(d);
    }
  }

  /** @internal True while some batch is writing the chunk (absent on disk, but not gone). */
  isBeingWritten(digest: Digest): boolean {
    return this.writing.has(digest);
  }

  /** @internal */
  compress(buf: Uint8Array): Buffer {
    return compress(buf, { compressionLevel: this.level });
  }
}

/**
 * The chunks one storing call writes. `add` starts the write at once (bounded in flight);
 * `finish` waits for all, fsyncs the touched fan-out directories and returns the new bytes.
 */
class ChunkBatch {
  private readonly seen = new Set<Digest>();
  /** Chunks of other calls this batch found present (and refreshed), so its recipes may name them. */
  private readonly touched = new Set<Digest>();
  /** Chunks this batch is writing (reported to the store until they are renamed into place). */
  private readonly writing: Digest[] = [];
  private readonly inFlight = new Set<Promise<void>>();
  private readonly dirs = new Set<string>();
  private newBytes = 0;
  private failure: unknown;
  private deferred: Array<{ tmp: string; final: string }> = [];

  constructor(private readonly store: LocalContentStore) {}

  add(digest: Digest, buf: Uint8Array): void {
    if (this.seen.has(digest)) return;
    this.seen.add(digest);
    const p = this.write(digest, buf).then(
      () => void this.inFlight.delete(p),
      (err: unknown) => {
        this.inFlight.delete(p);
        this.failure ??= err;
      },
    );
    this.inFlight.add(p);
  }

  /** Waits while too many writes are in flight (keeps memory bounded while reading a big file). */
  async backpressure(): Promise<void> {
    while (this.inFlight.size >= WRITES_IN_FLIGHT) await Promise.race(this.inFlight);
    if (this.failure) throw this.failure;
  }

  /**
   * Makes sure these chunks may be named by this batch's recipes: each is refreshed (so a
   * concurrent sweep keeps it) or, when gone, dropped from the page index.
   */
  async ensurePresent(digests: Iterable<Digest>): Promise<void> {
    const now = new Date();
    const todo = [...digests].filter((d) => !this.seen.has(d) && !this.touched.has(d));
    await pool(todo, WRITES_IN_FLIGHT, async (d) => {
      try {
        await fsp.utimes(this.store.chunkPath(d), now, now);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
        if (!this.store.isBeingWritten(d)) this.store.pageIndex.forget(d); // swept, or its writer failed
        return;
      }
      // not checked lately: read it before a recipe names it (a corrupt one is forgotten, its pages stored again)
      if (this.store.verified.fresh(d) || (await this.store.existingHolds(d)) === null) this.touched.add(d);
      else log.warn({ chunk: d }, 'stored page chunk is corrupt; its pages will be stored again');
    });
  }

  /** True when a recipe of this batch may name the chunk (written by it, or refreshed by `ensurePresent`). */
  canName(digest: Digest): boolean {
    return this.seen.has(digest) || this.touched.has(digest);
  }

  async finish(): Promise<number> {
    try {
      return await this.finishWrites();
    } finally {
      this.store.doneWriting(this.writing);
    }
  }

  private async finishWrites(): Promise<number> {
    while (this.inFlight.size) await Promise.all(this.inFlight);
    try {
      if (this.failure) throw this.failure;
      if (this.deferred.length > SYNCFS_ABOVE_CHUNKS) {
        // one syncfs(2) instead of thousands of fdatasyncs (a first capture of 10k small files)
        await syncFilesystem(this.store.tmpDir);
      } else {
        await Promise.all(this.deferred.map((d) => datasyncPath(d.tmp)));
      }
      for (const d of this.deferred) {
        await fsp.rename(d.tmp, d.final);
        this.dirs.add(path.dirname(d.final));
        this.store.verified.mark(path.basename(d.final)); // written from bytes that hash to its name, made durable
      }
      this.deferred = [];
    } catch (err) {
      await Promise.all(this.deferred.map((d) => fsp.rm(d.tmp, { force: true })));
      throw err;
    }
    await Promise.all([...this.dirs].map(fsyncDir));
    return this.newBytes;
  }

  private async write(digest: Digest, buf: Uint8Array): Promise<void> {
    const final = this.store.chunkPath(digest);
    // Present already: refresh its mtime so a concurrent sweep's grace period protects it, and
    // make sure it holds these bytes (unless checked lately): a corrupt chunk is rewritten from
    // them, so nothing built on this put names bad bytes.
    const now = new Date();
    let present = true;
    try {
      await fsp.utimes(final, now, now);
    } catch {
      present = false; // absent (or swept a moment ago): write it
    }
    if (present) {
      if (this.store.verified.fresh(digest)) return;
      const why = await this.store.existingHolds(digest, buf);
      if (why === null) return;
      log.warn({ chunk: digest, why }, 'stored chunk is corrupt; rewriting it from the bytes being stored');
      this.store.repairedChunks++;
    }
    this.writing.push(digest);
    this.store.beginWriting(digest);
    const data = this.store.compress(buf);
    const tmp = this.store.nextTmpPath(digest);
    const fh = await fsp.open(tmp, 'wx', 0o444);
    try {
      await writeAll(fh, data, 0);
    } catch (err) {
      await fh.close();
      await fsp.rm(tmp, { force: true });
      throw err;
    }
    await fh.close();
    // made durable and renamed into place by finish(): nothing is visible before its bytes are on disk
    this.deferred.push({ tmp, final });
    this.newBytes += data.length;
  }
}

/** Of a `'pages'` file being stored: per page, the index of a similar basis page (-1: none), and where the basis pages are. */
interface SimilarPages {
  pages: Int32Array;
  locations: Array<PageLocation | undefined>;
}

/**
 * Writes one `'pages'` file into a batch: each full page already stored (page index) is named
 * where it is, and only the other pages are stored, in new chunks cut content-defined at page
 * granularity (after each page a cheap hash decides, as `DEFAULT_PAGE_CHUNKING` says), or as XOR
 * deltas against a similar basis page. With an empty index and no similar pages this gives
 * exactly the chunks of plain content-defined chunking, and a plain recipe.
 */
class PageWriter {
  private readonly extents = new ExtentBuilder();
  private readonly refs = new Map<Digest, ChunkRef>();
  private pending = newPendingChunk();
  private pendingDeltas = newPendingChunk();
  /** Pages of the file seen so far. */
  private pageNo = 0;
  /** Base chunks read for the previous step (the next step's pages are usually near). */
  private baseChunks = new Map<Digest, Buffer | null>();

  constructor(
    private readonly store: LocalContentStore,
    private readonly batch: ChunkBatch,
    private readonly similar?: SimilarPages,
  ) {}

  /** The file's next bytes: whole pages, except at the end of the file. */
  async write(data: Buffer): Promise<void> {
    const step = PAGES_PER_STEP * PAGE_BYTES;
    for (let off = 0; off < data.length; off += step) await this.writeStep(data.subarray(off, Math.min(data.length, off + step)));
  }

  private async writeStep(data: Buffer): Promise<void> {
    const index = this.store.pageIndex;
    const fingerprints: Array<string | null> = [];
    const bases: Array<PageLocation | undefined> = [];
    const named = new Set<Digest>();
    for (let off = 0, i = 0; off < data.length; off += PAGE_BYTES, i++) {
      const fp = off + PAGE_BYTES <= data.length ? pageFingerprint(data.subarray(off, off + PAGE_BYTES)) : null;
      fingerprints.push(fp);
      const loc = fp === null ? undefined : index.lookup(fp);
      if (loc) for (const d of chunksOf(loc)) named.add(d);
      const base = fp !== null && !loc ? this.similarBase(this.pageNo + i) : undefined;
      bases.push(base);
      if (base) named.add(base.chunk);
    }
    this.pageNo += fingerprints.length;
    await this.batch.ensurePresent(named);
    await this.readBaseChunks(bases);
    fingerprints.forEach((fp, i) => {
      const page = data.subarray(i * PAGE_BYTES, Math.min(data.length, (i + 1) * PAGE_BYTES));
      // looked up again: during the await a gone chunk was forgotten, or another call re-mapped the page
      const loc = fp === null ? undefined : index.lookup(fp);
      if (loc && chunksOf(loc).every((d) => this.batch.canName(d))) this.pushLocation(loc);
      else if (fp === null || !this.addDelta(page, fp, bases[i])) this.addNew(page, fp);
    });
  }

  /** The file's recipe, once all its bytes were written. */
  finish(size: number): FileRecipe {
    this.cut();
    this.cutDeltas();
    return this.extents.recipe(size);
  }

  /** The plain basis page that page `n` of the file resembles, if the caller named one we can locate. */
  private similarBase(n: number): PageLocation | undefined {
    const k = this.similar?.pages[n];
    const loc = k !== undefined && k >= 0 ? this.similar!.locations[k] : undefined;
    return loc && (loc.base ?? { chunk: loc.chunk, page: loc.page });
  }

  private async readBaseChunks(bases: ReadonlyArray<PageLocation | undefined>): Promise<void> {
    const want = new Set<Digest>();
    for (const b of bases) if (b && this.batch.canName(b.chunk)) want.add(b.chunk);
    const kept = new Map<Digest, Buffer | null>();
    const todo: Digest[] = [];
    for (const d of want) {
      if (this.baseChunks.has(d)) kept.set(d, this.baseChunks.get(d)!);
      else todo.push(d);
    }
    await pool(todo, WRITES_IN_FLIGHT, async (d) => void kept.set(d, await this.store.getUnlessUnreadable(d)));
    this.baseChunks = kept;
  }

  /**
   * Stores `page` as its XOR with `base`, when they differ in few bytes (or names the base when
   * they are equal). False when there is no usable base: the caller stores the page plainly.
   */
  private addDelta(page: Buffer, fingerprint: string, base: PageLocation | undefined): boolean {
    const chunk = base && this.baseChunks.get(base.chunk);
    if (!base || !chunk || chunk.length < (base.page + 1) * PAGE_BYTES) return false;
    const xor = Buffer.from(page);
    xorInto(xor, chunk.subarray(base.page * PAGE_BYTES, (base.page + 1) * PAGE_BYTES));
    const changed = nonZeroBytes(xor, DELTA_MAX_CHANGED_BYTES);
    if (changed > DELTA_MAX_CHANGED_BYTES) return false;
    if (changed === 0) {
      this.extents.push(this.refOf(base.chunk), base.page);
      return true;
    }
    const p = this.pendingDeltas;
    p.pages.push(xor);
    p.fingerprints.push(fingerprint);
    p.bases.push(base);
    this.extents.push(p.ref, p.pages.length - 1, { chunk: this.refOf(base.chunk), page: base.page });
    if (p.pages.length >= DELTA_CHUNK_PAGES) this.cutDeltas();
    return true;
  }

  private pushLocation(loc: PageLocation): void {
    this.extents.push(this.refOf(loc.chunk), loc.page, loc.base && { chunk: this.refOf(loc.base.chunk), page: loc.base.page });
  }

  private refOf(digest: Digest): ChunkRef {
    let ref = this.refs.get(digest);
    if (!ref) this.refs.set(digest, (ref = { digest, pages: this.store.pageIndex.pagesOf(digest) ?? null }));
    return ref;
  }

  private addNew(page: Buffer, fingerprint: string | null): void {
    const p = this.pending;
    p.pages.push(page);
    if (fingerprint !== null) p.fingerprints.push(fingerprint);
    this.extents.push(p.ref, p.pages.length - 1);
    const n = p.pages.length;
    const { minPages, divisor, maxPages } = this.store.pageChunking;
    if (page.length === PAGE_BYTES && (n >= maxPages || (n >= minPages && pageHash(page) % divisor === 0))) this.cut();
  }

  private cut(): void {
    this.pending = this.store.pageChunk(this.batch, this.pending);
  }

  private cutDeltas(): void {
    this.pendingDeltas = this.store.pageChunk(this.batch, this.pendingDeltas);
  }
}

/** The chunks naming this page needs: its own and, for a delta, its base's. */
function chunksOf(loc: PageLocation): Digest[] {
  return loc.base ? [loc.chunk, loc.base.chunk] : [loc.chunk];
}

/** A chunk of pages being filled: plain pages, or XOR deltas (each with its base). */
interface PendingChunk {
  ref: ChunkRef;
  pages: Buffer[];
  fingerprints: string[];
  bases: PageLocation[];
}

function newPendingChunk(): PendingChunk {
  return { ref: { digest: null, pages: null }, pages: [], fingerprints: [], bases: [] };
}

/** A basis chunk's value, or null (with a warning) when it is missing or corrupt: that costs bytes, not the checkpoint. */
async function unlessUnreadable<T>(read: Promise<T>, chunk: Digest, basis: Digest): Promise<T | null> {
  try {
    return await read;
  } catch (err) {
    if (!(err instanceof CrabError) || !['STORE_CHUNK_MISSING', 'STORE_CHUNK_CORRUPT'].includes(err.code)) throw err;
    log.warn({ err, chunk, basis }, 'basis chunk unreadable; its pages will be stored again');
    return null;
  }
}

/** Decompresses and hash-checks a raw chunk file. */
function checkChunk(digest: Digest, p: string, raw: Buffer): Buffer {
  let out: Buffer;
  try {
    out = decompress(raw);
  } catch (err) {
    throw chunkCorrupt(digest, p, 'not a valid zstd frame', err);
  }
  if (sha256(out) !== digest) throw chunkCorrupt(digest, p, 'content does not hash to its name');
  return out;
}

/**
 * Why the chunk file at `p` is not chunk `digest` ('missing' when absent), or null when it is.
 * With `expected` (bytes known to hash to `digest`), a byte comparison replaces the hash.
 */
async function verifyChunkFile(digest: Digest, p: string, expected?: Uint8Array): Promise<string | null> {
  let raw: Buffer;
  try {
    raw = await fsp.readFile(p);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return 'missing';
    return `unreadable: ${(err as Error).message}`;
  }
  try {
    if (expected) {
      let out: Buffer;
      try {
        out = decompress(raw);
      } catch {
        return 'not a valid zstd frame';
      }
      return out.equals(expected) ? null : 'content does not hash to its name';
    }
    checkChunk(digest, p, raw);
    return null;
  } catch (err) {
    return String((err as { details?: { why?: string } }).details?.why ?? err);
  }
}

function checkRecipe(recipe: FileRecipe): void {
  if (!recipe || typeof recipe.size !== 'number' || !Array.isArray(recipe.chunks)) {
    throw badRecipe('file recipe must be {size: number, chunks: string[]}');
  }
  for (const d of recipe.chunks) if (!isDigest(d)) throw badDigest(String(d));
  if (recipe.extents !== undefined && !Array.isArray(recipe.extents)) throw badRecipe('file recipe extents must be an array');
}

/** The chunks of a `'whole'` recipe, cut where `content-cuts.ts` says, into `batch` and `chunks`. */
function wholeChunks(batch: ChunkBatch, chunks: Digest[]): ChunkAssembler {
  return new ChunkAssembler((piece) => {
    const d = sha256(piece);
    chunks.push(d);
    batch.add(d, piece);
  });
}

/** sha256 hex of bytes. */
export function sha256(buf: Uint8Array): Digest {
  return createHash('sha256').update(buf).digest('hex');
}

/** Cheap content hash of a 4 KiB page for chunk boundaries: samples one 32-bit word per 64 bytes. */
function pageHash(page: Buffer): number {
  let h = 0x811c9dc5;
  for (let off = 0; off < PAGE_BYTES; off += 64) {
    h = Math.imul(h ^ page.readUInt32LE(off), 0x01000193);
    h ^= h >>> 15;
  }
  return h >>> 0;
}

function safeJoin(root: string, rel: string): string {
  if (rel.split('/').some((s) => s === '' || s === '.' || s === '..')) throw badRecipe(`unsafe path '${rel}' in recipe`);
  return path.join(root, rel);
}

async function readFull(fh: fsp.FileHandle, buf: Buffer): Promise<number> {
  let got = 0;
  while (got < buf.length) {
    const { bytesRead } = await fh.read(buf, got, buf.length - got, null);
    if (bytesRead === 0) break;
    got += bytesRead;
  }
  return got;
}

async function writeAll(fh: fsp.FileHandle, buf: Uint8Array, position: number): Promise<void> {
  let done = 0;
  while (done < buf.length) {
    const { bytesWritten } = await fh.write(buf, done, buf.length - done, position + done);
    done += bytesWritten;
  }
}

async function datasyncPath(p: string): Promise<void> {
  const fh = await fsp.open(p, 'r');
  try {
    await fh.datasync();
  } finally {
    await fh.close();
  }
}

/** syncfs(2) on the filesystem holding `p` (coreutils `sync -f`; Node has no binding). */
async function syncFilesystem(p: string): Promise<void> {
  await run('sync', ['-f', p], { errorCode: 'STORE_SYNC_FAILED', timeoutMs: 120_000 });
}

/** fsyncs a directory so renames into it are durable. */
export async function fsyncDir(dir: string): Promise<void> {
  const fh = await fsp.open(dir, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}
