/**
 * @module The manifest of a filesystem snapshot (format `crab-manifest/1`): every entry of an
 * overlay upper directory with its metadata and, for regular files, the recipe of its bytes.
 * A manifest is always complete (never a diff against a parent), so any checkpoint can be
 * restored from its own manifest alone. Stored as one JSON chunk in the content store.
 */
import type { ContentStore, Digest, FileRecipe } from '../store/content-store.js';
import { CrabError } from '../core/errors.js';

export const MANIFEST_FORMAT = 'crab-manifest/1';

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
}

/** Stores a manifest as a JSON chunk. Returns its digest and the compressed bytes written. */
export async function storeManifest(store: ContentStore, m: Manifest): Promise<{ digest: Digest; newBytes: number }> {
  const r = await store.putJson(m);
  return { digest: r.digest, newBytes: r.newBytes };
}

/** Loads and checks a manifest. Throws `FSSNAP_BAD_MANIFEST` on an unknown format. */
export async function loadManifest(store: ContentStore, digest: Digest): Promise<Manifest> {
  const m = await store.getJson<Manifest>(digest);
  if (!m || m.format !== MANIFEST_FORMAT || !Array.isArray(m.entries)) {
    throw new CrabError(
      'FSSNAP_BAD_MANIFEST',
      'invalid',
      `chunk ${digest} is not a ${MANIFEST_FORMAT} manifest (format: ${String((m as { format?: unknown } | null)?.format)})`,
      'It was written by an incompatible Crab, or the digest names something else.',
      { digest },
    );
  }
  return m;
}

/** Every chunk digest a manifest references (file contents; not the manifest's own digest). */
export function manifestDigests(m: Manifest): Digest[] {
  const out: Digest[] = [];
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
