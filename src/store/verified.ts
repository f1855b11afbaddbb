/**
 * @module When each chunk's bytes were last known good in this process: hashed after it was read
 * (`get`, `verify`), compared with the bytes a put was storing, or written by this process.
 * A checkpoint builds on an existing chunk only when its mark is younger than the trust period;
 * otherwise the chunk is read and checked first. Bounded: the oldest marks are forgotten first
 * (a forgotten chunk is simply checked again).
 */
import type { Digest } from './content-store.js';

/** How long a check of a chunk's bytes is trusted (default 10 minutes). */
export const DEFAULT_VERIFIED_TRUST_MS = 10 * 60_000;
/** Marks kept (~120 bytes each): 262144 chunks is 16 GiB of 64 KiB page chunks. */
export const DEFAULT_VERIFIED_KEPT = 262_144;

export class VerifiedChunks {
  /** Digest → ms of its last check, in insertion order of the latest mark (oldest first). */
  private readonly marks = new Map<Digest, number>();

  constructor(
    readonly trustMs = DEFAULT_VERIFIED_TRUST_MS,
    private readonly kept = DEFAULT_VERIFIED_KEPT,
    private readonly nowMs: () => number = Date.now,
  ) {}

  /** The chunk's bytes were just checked (or written). */
  mark(digest: Digest): void {
    this.set(digest, this.nowMs());
  }

  /** These chunks were checked at `atMs` (a record of an earlier check, e.g. a checkpoint's); a younger mark is kept. */
  note(digests: Iterable<Digest>, atMs: number): void {
    for (const d of digests) if ((this.marks.get(d) ?? -Infinity) < atMs) this.set(d, atMs);
  }

  /** Forgets a chunk (found corrupt or gone). */
  forget(digest: Digest): void {
    this.marks.delete(digest);
  }

  /** True when the chunk was checked within the trust period. */
  fresh(digest: Digest): boolean {
    const at = this.marks.get(digest);
    return at !== undefined && this.nowMs() - at < this.trustMs;
  }

  /** The chunks among `digests` not checked within the trust period (each once). */
  stale(digests: Iterable<Digest>): Digest[] {
    const out = new Set<Digest>();
    for (const d of digests) if (!this.fresh(d)) out.add(d);
    return [...out];
  }

  /** The oldest check among `digests` (ms), or null when one of them has no fresh mark. */
  oldest(digests: Iterable<Digest>): number | null {
    let min = Infinity;
    const now = this.nowMs();
    for (const d of digests) {
      const at = this.marks.get(d);
      if (at === undefined || now - at >= this.trustMs) return null;
      if (at < min) min = at;
    }
    return min === Infinity ? now : min;
  }

  get size(): number {
    return this.marks.size;
  }

  private set(digest: Digest, atMs: number): void {
    this.marks.delete(digest); // re-inserted: the newest mark goes last
    this.marks.set(digest, atMs);
    if (this.marks.size > this.kept) this.marks.delete(this.marks.keys().next().value!);
  }
}
