/**
 * @module Which shared fork layers (`CRAB_HOME/layers/<manifest digest>`) are garbage: pure policy.
 * A layer is the read-only lower dir every fork of one checkpoint shares. It is live while a
 * sandbox on disk or a checkpoint in the catalog (a checkpoint of a fork records its lower dirs)
 * names it. A fork touches a layer when it reuses it, so the grace period covers a fork that has
 * the layer but has not written its sandbox record yet.
 */
import { STALE_AFTER_MS, staleVerdict, type ProcessIdentity } from '../core/owner.js';

export interface LayerEntry {
  /** The directory's name under the layers dir. */
  name: string;
  /** Absolute path, as sandbox records and checkpoint metas name it. */
  path: string;
  /** Time since its last change (mtime). */
  ageMs: number;
  /** The process materializing a staging dir (`<digest>.~p<pid>t<ticks>~<id>`), when its name carries one. */
  owner?: ProcessIdentity | null;
  ownerAlive?: boolean;
}

/** How young a layer or staging dir must be to be kept although nothing names it. */
export const LAYER_GRACE_MS = 10 * 60 * 1000;

const DIGEST = /^[0-9a-f]{64}$/;

/**
 * The entries to remove: published layers (named by a digest) that nothing names, once older than
 * `graceMs`; and staging dirs of forks (`<digest>.~p<pid>t<ticks>~<id>`, never named) once their
 * owner is gone or they are older than an hour (`staleVerdict`), so a slow fork's materialize is
 * never swept from under it.
 */
export function layersToRemove(entries: readonly LayerEntry[], named: ReadonlySet<string>, graceMs: number, staleAfterMs = STALE_AFTER_MS): LayerEntry[] {
  return entries.filter((e) => {
    if (DIGEST.test(e.name)) return e.ageMs >= graceMs && !named.has(e.path);
    return staleVerdict({ owner: e.owner ?? null, ownerAlive: e.ownerAlive ?? false, ageMs: e.ageMs }, staleAfterMs).remove;
  });
}
