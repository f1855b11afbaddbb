/**
 * @module What a checkpoint may build on. A new checkpoint reuses its parent's chunks without
 * storing them again (unchanged files, a reused process image, unchanged pages), so before it
 * does, each of those chunks must have been found good lately: by this process (`VerifiedChunks`),
 * or by the parent's recorded check (`verifiedAtMs` in the catalog). The rest are read and hashed
 * first. A corrupt one is not built on: the files it held are read again from the sandbox (and
 * the put rewrites the chunk), and a corrupt process image makes an `fs` checkpoint a full one.
 */
import { CrabError } from '../core/errors.js';
import { rootLogger } from '../core/log.js';
import type { CheckpointRecord } from '../catalog/catalog.js';
import { manifestDigests, type Manifest } from '../fssnap/index.js';
import { dirRecipeDigests, type Digest, type DirRecipe } from '../store/content-store.js';
import type { LocalContentStore } from '../store/local-content-store.js';
import { chunkCorrupt } from '../store/errors.js';

const log = rootLogger.child({ component: 'integrity' });

export interface ParentCheck {
  /** The parent's manifest without the entries whose chunks are bad (their files are read again). */
  previous: Manifest | undefined;
  /** Paths of those entries, to add to a hinted capture's hints. */
  rescan: string[];
  /** The parent's process image cannot be built on (a chunk of it is bad, or its recipe). */
  imageBad: boolean;
  /** Every chunk of the parent's process image (recipe included), when it is good. */
  imageChunks: Digest[];
  /** Chunks found bad. */
  bad: Digest[];
  /** When none is bad: the oldest check the parent's chunks now rely on (to record in the catalog). */
  verifiedAtMs: number | null;
}

/** Chunks of a stored process image: its recipe and every chunk the recipe names. Throws what `getJson` throws. */
export async function processImageChunks(store: LocalContentStore, digest: Digest): Promise<Digest[]> {
  return [digest, ...dirRecipeDigests(await store.getJson<DirRecipe>(digest))];
}

/**
 * Checks the chunks `parent` would lend a new checkpoint (its files' and its process image's)
 * that were not found good within the trust period. Cost: a map lookup per chunk when they were;
 * a read and hash of each when not (a cold process whose parent has no recent check).
 */
export async function checkParent(
  store: LocalContentStore,
  parent: CheckpointRecord,
  previous: Manifest | undefined,
  imageChunksOf: (digest: Digest) => Promise<Digest[]>,
): Promise<ParentCheck> {
  const fsChunks = previous ? manifestDigests(previous) : [];
  let imageChunks: Digest[] = [];
  let imageBad = false;
  if (parent.processImage) {
    try {
      imageChunks = await imageChunksOf(parent.processImage);
    } catch (err) {
      if (!(err instanceof CrabError) || !['STORE_CHUNK_MISSING', 'STORE_CHUNK_CORRUPT', 'STORE_BAD_RECIPE', 'STORE_BAD_DIGEST'].includes(err.code)) throw err;
      imageBad = true;
    }
  }
  const all = [...fsChunks, ...imageChunks];
  // the parent's own record of a check covers its chunks while it is recent
  if (parent.verifiedAtMs !== null) store.verified.note(all, parent.verifiedAtMs);
  const bad = new Set((await store.checkUnverified(all)).map((c) => c.digest));
  if (imageChunks.some((d) => bad.has(d))) imageBad = true;
  let rescan: string[] = [];
  let kept = previous;
  if (previous && bad.size) {
    const hit = (e: Manifest['entries'][number]) => !!e.recipe?.chunks.some((d) => bad.has(d));
    rescan = previous.entries.filter(hit).map((e) => e.path);
    kept = { ...previous, entries: previous.entries.filter((e) => !hit(e)) };
  }
  if (bad.size || imageBad) {
    log.warn({ checkpointId: parent.id, badChunks: [...bad].slice(0, 20), files: rescan.length, imageBad }, 'parent checkpoint has bad chunks: not building on them');
  }
  const verifiedAtMs = bad.size || imageBad ? null : store.verified.oldest(all);
  return { previous: kept, rescan, imageBad, imageChunks: imageBad ? [] : imageChunks, bad: [...bad], verifiedAtMs };
}

/**
 * When every chunk of a checkpoint about to be committed was last found good: the oldest such
 * check. Chunks with no recent check (their marks were forgotten) are checked now; a bad one
 * refuses the commit.
 */
export async function verifiedAtOf(store: LocalContentStore, chunks: readonly Digest[]): Promise<number> {
  const at = store.verified.oldest(chunks);
  if (at !== null) return at;
  const bad = await store.checkUnverified(chunks);
  if (bad.length) throw chunkCorrupt(bad[0]!.digest, bad[0]!.path, `${bad[0]!.why}; the checkpoint would name it`);
  return store.verified.oldest(chunks) ?? Date.now();
}
