/**
 * @module The manifest of a filesystem snapshot (format `crab-manifest/1`): every entry of an
 * overlay upper directory with its metadata and, for regular files, the recipe of its bytes.
 * A manifest is always complete (never a diff against a parent), so any checkpoint can be
 * restored from its own manifest alone.
 *
 * Stored (`crab-manifest/2`) as a small top document plus its entries in parts: runs of entries
 * cut where a path's hash says (content-defined, like page chunks), each part one JSON chunk.
 * A capture that changed a few files writes the few parts holding them and a new top document;
 * the unchanged parts are the same chunks. (One JSON chunk per manifest cost ~300 KiB per
 * checkpoint of a 10k-file tree, in every checkpoint whatever changed.) `crab-manifest/1`
 * documents (the whole manifest in one chunk) are still read.
 */
import { hash } from 'node:crypto';
import type { ContentStore, Digest, FileRecipe } from '../store/content-store.js';
import { CrabError } from '../core/errors.js';
import { pool } from '../core/pool.js';

export const MANIFEST_FORMAT = 'crab-manifest/1';
/** The stored top document of a manifest kept in parts. */
export const MANIFEST_PARTS_FORMAT = 'crab-manifest/2';

/** Part shape: a part ends after an entry whose path hash is divisible by `divisor` (after `min` entries), or at `max`. */
export const MANIFEST_PARTS = { min: 16, divisor: 64, max: 512 } as const;

/** `whiteout`: overlayfs whiteout (char device 0:0). `other`: char/block device or socket. */
export type EntryType = 'file' | 'dir' | 'symlink' | 'whiteout' | 'fifo' | 'other';

export interface ManifestEntry {
  /** Relative to the snapshot root, '/'-separated; '' is the root itself. */
  path: string;
  type: EntryType;
  /** Permission bits incl. setuid/setgid/sticky (st_mode & 0o7777). */
  mode: number;
  uid: number;
  gid: number;
  /** Modification time in ns since the epoch (decimal string: exceeds 2^53). */
  mtimeNs: string;
  /** st_size (files: content length; symlinks: target length). */
  size: number;
  /** Extended attributes, name → hex value (incl. trusted.overlay.opaque/redirect/origin). */
  xattrs?: Record<string, string>;
  /** Symlink target. */
  target?: string;
  /** For `other`: 'chr' | 'blk' | 'socket', and the raw dev_t. */
  otherKind?: 'chr' | 'blk' | 'socket';
  rdev?: number;
  /** Entries with the same group number are hard links to one inode (numbered in path order from 1). */
  linkGroup?: number;
  /** Regular files: how to rebuild the bytes. */
  recipe?: FileRecipe;
  /** Regular files: sha256 (hex) of the whole content, independent of chunking. */
  sha256?: string;
  /** Host-local identity, used only to skip re-reading unchanged files in the next capture. */
  ino: number;
  ctimeNs: string;
}

export interface Manifest {
  format: typeof MANIFEST_FORMAT;
  createdAtMs: number;
  /** st_dev/st_ino of the captured root: incremental reuse is only trusted on the same directory. */
  sourceDev: number;
  sourceIno: number;
  /** Sorted by path (parents before children). */
  entries: ManifestEntry[];
  /** Sum of regular file sizes (each inode once). */
  logicalBytes: number;
  /** Digests of the stored parts (set by `storeManifest` / `loadManifest`; GC keeps them). */
  parts?: Digest[];
}

/** The stored top document of a `crab-manifest/2` manifest. */
interface StoredManifestTop extends Omit<Manifest, 'format' | 'entries' | 'parts'> {
  format: typeof MANIFEST_PARTS_FORMAT;
  parts: Digest[];
  entryCount: number;
}

/** Cuts sorted entries into parts at content-defined boundaries (a path's hash), so an insert moves no other boundary. */
export function manifestParts(entries: readonly ManifestEntry[], shape: { min: number; divisor: number; max: number } = MANIFEST_PARTS): ManifestEntry[][] {
  const parts: ManifestEntry[][] = [];
  let cur: ManifestEntry[] = [];
  for (const e of entries) {
    cur.push(e);
    if (cur.length >= shape.max || (cur.length >= shape.min && fnv1a(e.path) % shape.divisor === 0)) {
      parts.push(cur);
      cur = [];
    }
  }
  if (cur.length) parts.push(cur);
  return parts;
}

/** Stores a manifest (parts, then the top document, one durability barrier). Returns the top's digest and the compressed bytes written; sets `m.parts`. */
export async function storeManifest(store: ContentStore, m: Manifest): Promise<{ digest: Digest; newBytes: number }> {
  const partBufs = manifestParts(m.entries).map((p) => Buffer.from(JSON.stringify(p)));
  const parts = partBufs.map((b) => hash('sha256', b, 'hex')); // the store names chunks by the same digest
  const top: StoredManifestTop = {
    format: MANIFEST_PARTS_FORMAT,
    createdAtMs: m.createdAtMs,
    sourceDev: m.sourceDev,
    sourceIno: m.sourceIno,
    logicalBytes: m.logicalBytes,
    entryCount: m.entries.length,
    parts,
  };
  const topBuf = Buffer.from(JSON.stringify(top));
  const r = await store.putMany([...partBufs, topBuf]);
  m.parts = parts;
  return { digest: r.digests[r.digests.length - 1], newBytes: r.newBytes };
}

/** Loads and checks a manifest (either stored format). Throws `FSSNAP_BAD_MANIFEST` on anything else. */
export async function loadManifest(store: ContentStore, digest: Digest): Promise<Manifest> {
  const doc = await store.getJson<Manifest | StoredManifestTop>(digest);
  if (doc && doc.format === MANIFEST_FORMAT && Array.isArray(doc.entries)) return doc;
  if (!doc || doc.format !== MANIFEST_PARTS_FORMAT || !Array.isArray(doc.parts)) throw badManifest(digest, doc);
  const partEntries: ManifestEntry[][] = [];
  await pool(doc.parts, PARTS_IN_FLIGHT, async (d, i) => {
    const p = await store.getJson<ManifestEntry[]>(d);
    if (!Array.isArray(p)) throw badManifest(digest, doc);
    partEntries[i] = p;
  });
  const entries = partEntries.flat();
  if (entries.length !== doc.entryCount) throw badManifest(digest, doc);
  const { parts, createdAtMs, sourceDev, sourceIno, logicalBytes } = doc;
  return { format: MANIFEST_FORMAT, createdAtMs, sourceDev, sourceIno, entries, logicalBytes, parts };
}

const PARTS_IN_FLIGHT = 16;

function badManifest(digest: Digest, doc: unknown): CrabError {
  return new CrabError(
    'FSSNAP_BAD_MANIFEST',
    'invalid',
    `chunk ${digest} is not a ${MANIFEST_PARTS_FORMAT} or ${MANIFEST_FORMAT} manifest (format: ${String((doc as { format?: unknown } | null)?.format)})`,
    'It was written by an incompatible Crab, or the digest names something else.',
    { digest },
  );
}

/** 32-bit FNV-1a of a string's UTF-16 code units: cheap and stable, for part boundaries only. */
function fnv1a(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 0x01000193);
  return h >>> 0;
}

/** Every chunk digest a manifest references (file contents and its stored parts; not the top document's own digest). */
export function manifestDigests(m: Manifest): Digest[] {
  const out: Digest[] = [...(m.parts ?? [])];
  for (const e of m.entries) if (e.recipe) out.push(...e.recipe.chunks);
  return out;
}

/** Byte-wise path order (parents first, stable across locales). */
export function comparePaths(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/** True when `p` is `prefix` or inside it. */
export function underPrefix(p: string, prefix: string): boolean {
  return p === prefix || p.startsWith(prefix + '/');
}
