/**
 * @module Filesystem snapshots of an overlayfs upper directory, without ZFS/btrfs: `capture()`
 * walks the upper (or only the paths the inspector saw touched) and stores changed file
 * contents as chunks plus one manifest; `materialize()` rebuilds an identical upper (whiteouts,
 * opaque/redirect xattrs, hard links, owners, modes, times); `treeHash()` / `treeHashOfDir()`
 * tell whether two trees are the same. Also the GC expander the catalog needs (typed
 * structurally, so fssnap does not import the catalog).
 */
import type { ContentStore, DirRecipe } from '../store/content-store.js';
import { dirRecipeDigests } from '../store/content-store.js';
import { loadManifest, manifestDigests } from './manifest.js';

export { capture, snapshot, FROZEN_READ_BUDGET_BYTES, type CaptureOptions, type CaptureResult, type PendingCapture } from './capture.js';
export { materialize, type MaterializeOptions, type MaterializeResult } from './materialize.js';
export { treeHash, treeHashOfDir, type TreeHashOptions } from './tree-hash.js';
export {
  MANIFEST_FORMAT,
  loadManifest,
  manifestDigests,
  storeManifest,
  type EntryType,
  type Manifest,
  type ManifestEntry,
} from './manifest.js';

/**
 * The expander `Catalog.liveDigests()` needs: the chunks an fs manifest or a process-image
 * directory recipe references. Throws (aborting GC) if a root cannot be read: sweeping with an
 * incomplete live set could delete live chunks.
 */
export function gcRootExpander(
  store: ContentStore,
): (root: { digest: string; kind: 'fs-manifest' | 'process-image' }) => Promise<Iterable<string>> {
  return async (root) => {
    if (root.kind === 'fs-manifest') return manifestDigests(await loadManifest(store, root.digest));
    return dirRecipeDigests(await store.getJson<DirRecipe>(root.digest));
  };
}
