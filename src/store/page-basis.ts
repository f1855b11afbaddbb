/**
 * @module Where each page of a stored `'pages'` file is: the map a dump's XOR deltas are cut
 * against (`PageAffinity` names basis pages by their index in the basis file).
 */
import { PAGE_BYTES, type Digest, type FileRecipe } from './content-store.js';
import { planExtentReads } from './page-extents.js';
import type { PageLocation } from './page-index.js';

/**
 * The location of every page of the file `recipe` describes, in file order; `undefined` where it
 * cannot be told (a plain-form chunk whose page count `pagesOf` does not know, and every page
 * after it). A delta page's location carries its base.
 */
export function basisPageLocations(recipe: FileRecipe, pagesOf: (chunk: Digest) => number | undefined): Array<PageLocation | undefined> {
  const total = Math.ceil(recipe.size / PAGE_BYTES);
  const out = new Array<PageLocation | undefined>(total).fill(undefined);
  let at = 0;
  if (!recipe.extents) {
    for (const chunk of recipe.chunks) {
      const n = pagesOf(chunk);
      if (n === undefined) break;
      for (let p = 0; p < n && at < total; p++) out[at++] = { chunk, page: p };
    }
    return out;
  }
  for (const r of planExtentReads({ ...recipe, extents: recipe.extents })) {
    const chunk = recipe.chunks[r.chunk];
    const base = r.base ? { chunk: recipe.chunks[r.base.chunk], first: r.base.first } : undefined;
    for (let p = 0; p < r.count && at < total; p++) {
      out[at++] = base ? { chunk, page: r.first + p, base: { chunk: base.chunk, page: base.first + p } } : { chunk, page: r.first + p };
    }
  }
  return out;
}
