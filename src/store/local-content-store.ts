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
 * order. Fixed-offset chunks would lose alignment as soon as one page is added or removed in an
 * early VMA (every later page shifts by 4 KiB), so chunk boundaries are content-defined at page
 * granularity: after each 4 KiB page a cheap hash of the page decides whether a chunk ends there
 * (min 4 pages, max 64, mean ≈ 16 pages = 64 KiB). One changed page costs one (rarely two) new
 * chunks, and an inserted page costs one, not the rest of the file. 64 KiB keeps the per-chunk
 * cost (one file, one fsync, one digest in the recipe) 16× below 4 KiB chunks while one dirty
 * page stores at most ~64 KiB (compressed) again.
 */
import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { compress, decompress } from 'zstd-napi';
import { run } from '../core/run.js';
import type {
  Chunking,
  ContentStore,
  CorruptChunk,
  Digest,
  DirRecipe,
  DirRecipeEntry,
  FileRecipe,
  PutDirResult,
  PutFileResult,
  PutResult,
  StoreStats,
  SweepOptions,
  SweepResult,
} from './content-store.js';
import { PAGE_BYTES, isDigest } from './content-store.js';
import { badDigest, badRecipe, chunkCorrupt, chunkMissing, unsupportedEntry } from './errors.js';

/** `'whole'` chunking cuts files above this size into pieces of this size. */
export const WHOLE_CHUNK_MAX_BYTES = 4 * 1024 * 1024;
/** Default page-chunk shape: a chunk ends after a page whose hash is divisible by `divisor` (after `minPages`), mean ≈ min + divisor. */
export const DEFAULT_PAGE_CHUNKING: PageChunking = { minPages: 4, divisor: 12, maxPages: 64 };

export interface PageChunking {
  minPages: number;
  divisor: number;
  maxPages: number;
}
const READ_BLOCK_BYTES = 8 * 1024 * 1024;
/** Chunk writes in flight per storing call (libuv has 4 threads; this hides compression latency). */
const WRITES_IN_FLIGHT = 8;
const DEFAULT_GRACE_MS = 60 * 60 * 1000;
/** Batches with more new chunks than this are made durable with one syncfs instead of one fdatasync each. */
const SYNCFS_ABOVE_CHUNKS = 32;

export interface LocalContentStoreOptions {
  /** zstd level, 1–3 recommended (default 3). */
  compressionLevel?: number;
  /** Shape of `'pages'` chunks (default `DEFAULT_PAGE_CHUNKING`). Changing it only costs dedup against older chunks. */
  pageChunking?: PageChunking;
}

/** Content store on a local filesystem. Create with `LocalContentStore.open(root)`. */
export class LocalContentStore implements ContentStore {
  readonly chunksDir: string;
  readonly tmpDir: string;
  private readonly level: number;
  private readonly pageChunking: PageChunking;
  private tmpCounter = 0;

  private constructor(
    readonly root: string,
    opts: LocalContentStoreOptions,
  ) {
    this.chunksDir = path.join(root, 'chunks');
    this.tmpDir = path.join(root, 'tmp');
    this.level = opts.compressionLevel ?? 3;
    this.pageChunking = opts.pageChunking ?? DEFAULT_PAGE_CHUNKING;
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

  async get(digest: Digest): Promise<Buffer> {
    const p = this.chunkPath(digest);
    let raw: Buffer;
    try {
      raw = await fsp.readFile(p);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') throw chunkMissing(digest, this.root);
      throw err;
    }
    return checkChunk(digest, p, raw);
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

  async materializeFile(recipe: FileRecipe, destPath: string, opts: { mode?: number } = {}): Promise<void> {
    checkRecipe(recipe);
    const tmp = `${destPath}.crab-tmp-${randomBytes(4).toString('hex')}`;
    const fh = await fsp.open(tmp, 'wx', opts.mode ?? 0o644);
    try {
      let written = 0;
      for (let i = 0; i < recipe.chunks.length; i += WRITES_IN_FLIGHT) {
        const bufs = await Promise.all(recipe.chunks.slice(i, i + WRITES_IN_FLIGHT).map((d) => this.get(d)));
        for (const b of bufs) {
          await writeAll(fh, b, written);
          written += b.length;
        }
      }
      if (written !== recipe.size) {
        throw badRecipe(`recipe says ${recipe.size} bytes but its chunks hold ${written}`, { destPath });
      }
      if (opts.mode !== undefined) await fh.chmod(opts.mode); // umask may have cut bits at open
      await fh.close();
      await fsp.rename(tmp, destPath);
    } catch (err) {
      await fh.close().catch(() => undefined); // already closed on the success path
      await fsp.rm(tmp, { force: true });
      throw err;
    }
  }

  async putDir(dir: string): Promise<PutDirResult> {
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
          const r = await this.putFileInto(batch, abs, chunking);
          logicalBytes += r.logicalBytes;
          entries.push({ path: relPath, type: 'file', mode: st.mode & 0o7777, chunking, recipe: r.recipe });
        } else {
          throw unsupportedEntry(abs, st.isSymbolicLink() ? 'symlink' : 'special file');
        }
      }
    };
    await walk('');
    const recipe: DirRecipe = { format: 'crab-dir/1', entries, logicalBytes };
    const json = Buffer.from(JSON.stringify(recipe));
    const recipeDigest = sha256(json);
    batch.add(recipeDigest, json);
    const newBytes = await batch.finish();
    return { recipe, recipeDigest, logicalBytes, newBytes };
  }

  async materializeDir(recipe: DirRecipe, dest: string): Promise<void> {
    if (recipe.format !== 'crab-dir/1') throw badRecipe(`unknown directory recipe format ${String(recipe.format)}`);
    await fsp.mkdir(dest, { recursive: true });
    for (const e of recipe.entries) {
      const target = safeJoin(dest, e.path);
      if (e.type === 'dir') {
        await fsp.mkdir(target, { recursive: true });
        await fsp.chmod(target, e.mode);
      } else {
        await this.materializeFile(e.recipe, target, { mode: e.mode });
      }
    }
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
      for (const d of opts.digests) {
        const p = this.chunkPath(d);
        const why = await verifyChunkFile(d, p);
        if (why) bad.push({ digest: d, path: p, why });
      }
      return bad;
    }
    for await (const c of this.listChunks()) {
      if (!isDigest(c.name) || c.name.slice(0, 2) !== path.basename(path.dirname(c.path))) {
        bad.push({ digest: c.name, path: c.path, why: 'file name is not a digest in its fan-out directory' });
        continue;
      }
      const why = await verifyChunkFile(c.name, c.path);
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

  // ---------------------------------------------------------------------------------------------

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
  ): Promise<{ recipe: FileRecipe; logicalBytes: number; sha256: string }> {
    const whole = createHash('sha256');
    const chunks: Digest[] = [];
    const emit = (buf: Buffer): void => {
      const d = sha256(buf);
      chunks.push(d);
      batch.add(d, buf);
    };
    const { minPages, divisor, maxPages } = this.pageChunking;
    const fh = await fsp.open(file, 'r');
    // +1 so a file read whole in one block sees EOF without a second allocation
    const blockHint = Math.max(PAGE_BYTES, Number((await fh.stat()).size) + 1);
    let size = 0;
    try {
      let carry: Buffer[] = [];
      let carryBytes = 0;
      for (;;) {
        await batch.backpressure();
        // small files get a small buffer: 8 MiB per file made a 10k-file capture allocation-bound
        const block = Buffer.allocUnsafe(Math.min(READ_BLOCK_BYTES, blockHint));
        const n = await readFull(fh, block);
        if (n === 0) break;
        const data = block.subarray(0, n);
        whole.update(data);
        size += n;
        if (chunking === 'whole') {
          // READ_BLOCK_BYTES is a multiple of WHOLE_CHUNK_MAX_BYTES, so pieces stay aligned
          for (let off = 0; off < n; off += WHOLE_CHUNK_MAX_BYTES) emit(data.subarray(off, Math.min(n, off + WHOLE_CHUNK_MAX_BYTES)));
          continue;
        }
        let start = 0;
        for (let off = 0; off < n; off += PAGE_BYTES) {
          const end = Math.min(n, off + PAGE_BYTES);
          const pages = (carryBytes + end - start + PAGE_BYTES - 1) / PAGE_BYTES | 0;
          const page = data.subarray(off, end);
          const cut =
            page.length === PAGE_BYTES &&
            (pages >= maxPages || (pages >= minPages && pageHash(page) % divisor === 0));
          if (cut) {
            const piece = data.subarray(start, end);
            emit(carry.length ? Buffer.concat([...carry, piece]) : piece);
            carry = [];
            carryBytes = 0;
            start = end;
          }
        }
        if (start < n) {
          carry.push(data.subarray(start, n));
          carryBytes += n - start;
        }
        if (n < block.length) break;
      }
      if (carryBytes > 0) emit(Buffer.concat(carry));
    } finally {
      await fh.close();
    }
    return { recipe: { size, chunks }, logicalBytes: size, sha256: whole.digest('hex') };
  }

  /** @internal used by ChunkBatch */
  nextTmpPath(digest: Digest): string {
    return path.join(this.tmpDir, `${digest}.${process.pid}.${++this.tmpCounter}`);
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

  async finish(): Promise<number> {
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
    // Present already: refresh its mtime so a concurrent sweep's grace period protects it.
    const now = new Date();
    try {
      await fsp.utimes(final, now, now);
      return;
    } catch {
      // absent (or swept a moment ago): write it
    }
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

/** Why the chunk file at `p` is not chunk `digest` ('missing' when absent), or null when it is. */
async function verifyChunkFile(digest: Digest, p: string): Promise<string | null> {
  let raw: Buffer;
  try {
    raw = await fsp.readFile(p);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return 'missing';
    return `unreadable: ${(err as Error).message}`;
  }
  try {
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
