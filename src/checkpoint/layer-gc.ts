/**
 * @module Which shared fork layers (`CRAB_HOME/layers/<manifest digest>`) are garbage: pure policy.
 * A layer is the read-only lower dir every fork of one checkpoint shares. It is live while a
 * sandbox on disk or a checkpoint in the catalog (a checkpoint of a fork records its lower dirs)
 * names it. A fork touches a layer when it reuses it, so the grace period covers a fork that has
 * the layer but has not written its sandbox record yet.
 */

export interface LayerEntry {
  /** The directory's name under the layers dir. */
  name: string;
  /** Absolute path, as sandbox records and checkpoint metas name it. */
  path: string;
  /** Time since its last change (mtime). */
  ageMs: number;
}

/** How young a layer or staging dir must be to be kept although nothing names it. */
export const LAYER_GRACE_MS = 10 * 60 * 1000;

const DIGEST = /^[0-9a-f]{64}$/;

/**
 * The entries to remove: published layers (named by a digest) that nothing names, and staging
 * dirs of crashed forks (`<digest>.<pid>.<id>`, never named); in both cases only once older than
 * `graceMs`.
 */
export function layersToRemove(entries: readonly LayerEntry[], named: ReadonlySet<string>, graceMs: number): LayerEntry[] {
  return entries.filter((e) => e.ageMs >= graceMs && !(DIGEST.test(e.name) && named.has(e.path)));
}
