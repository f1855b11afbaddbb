/** Test helpers for the C/R chain on the shared CRAB_HOME. */
import { LocalContentStore, type LocalContentStoreOptions } from '../../src/store/local-content-store.js';
import { SqliteCatalog } from '../../src/catalog/sqlite-catalog.js';
import { Checkpointer } from '../../src/checkpoint/checkpointer.js';
import { manager, paths } from './sandboxes.js';

export async function checkpointer(storeOpts: LocalContentStoreOptions = {}): Promise<Checkpointer> {
  return new Checkpointer(manager(), await LocalContentStore.open(paths.store, storeOpts), SqliteCatalog.open(paths.catalog));
}

/** Command lines of every process in the sandbox except Crab's own init, sorted. */
export const PROCESS_LIST_CMD =
  "for p in /proc/[0-9]*; do [ \"${p#/proc/}\" = 1 ] && continue; tr '\\0' ' ' < $p/cmdline 2>/dev/null; echo; done | grep -v '^$' | sort";
