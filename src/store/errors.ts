/** @module Errors of the content store. Codes are stable: never rename them. */
import { CrabError } from '../core/errors.js';

/** Stable codes raised by `src/store`. */
export const STORE_ERROR_CODES = {
  chunkMissing: 'STORE_CHUNK_MISSING',
  chunkCorrupt: 'STORE_CHUNK_CORRUPT',
  badDigest: 'STORE_BAD_DIGEST',
  badRecipe: 'STORE_BAD_RECIPE',
  unsupportedEntry: 'STORE_UNSUPPORTED_ENTRY',
} as const;

/** A chunk named by a recipe or a catalog record is not in the store. */
export function chunkMissing(digest: string, root: string): CrabError {
  return new CrabError(
    STORE_ERROR_CODES.chunkMissing,
    'not-found',
    `chunk ${digest} is not in the store at ${root}`,
    'The checkpoint that references it cannot be restored. If GC ran while a checkpoint was being ' +
      'written, re-take the checkpoint; run `verify()` to see how much of the store is affected.',
    { digest, root },
  );
}

/** The bytes on disk do not decompress, or do not hash to their name. */
export function chunkCorrupt(digest: string, path: string, why: string, cause?: unknown): CrabError {
  return new CrabError(
    STORE_ERROR_CODES.chunkCorrupt,
    'internal',
    `chunk ${digest} is corrupt (${why}): ${path}`,
    'The disk returned different bytes than were written. Check the disk (dmesg, SMART), run ' +
      '`verify()` to list every corrupt chunk, delete them, and restore from a checkpoint that does ' +
      'not reference them (or re-put the data if you still have it: put() rewrites a missing chunk).',
    { digest, path, why },
    { cause },
  );
}

/** A string that is not 64 lower-case hex characters was passed as a digest. */
export function badDigest(digest: string): CrabError {
  return new CrabError(
    STORE_ERROR_CODES.badDigest,
    'invalid',
    `'${digest}' is not a sha256 digest`,
    'Digests are 64 lower-case hex characters (no "sha256:" prefix).',
    { digest },
  );
}

/** A recipe is malformed, or the bytes it names do not add up to its size. */
export function badRecipe(message: string, details: Record<string, unknown> = {}): CrabError {
  return new CrabError(
    STORE_ERROR_CODES.badRecipe,
    'invalid',
    message,
    'The recipe does not match the chunks it names: it was written by an incompatible version or edited by hand.',
    details,
  );
}

/** putDir met something other than a regular file or a directory. */
export function unsupportedEntry(path: string, what: string): CrabError {
  return new CrabError(
    STORE_ERROR_CODES.unsupportedEntry,
    'invalid',
    `${path} is a ${what}; putDir stores only regular files and directories`,
    'CRIU image directories hold only regular files; use fssnap.capture() for general trees.',
    { path, what },
  );
}
