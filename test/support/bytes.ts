/** @module Test data. */

/** Bytes that look random but are the same on every run (xorshift32): the tests' chunk counts do not vary. */
export function pseudoRandom(n: number, seed = 1): Buffer {
  const buf = Buffer.alloc(n + 3);
  const words = new Uint32Array(buf.buffer, buf.byteOffset, Math.floor(buf.length / 4));
  let x = seed >>> 0 || 1;
  for (let i = 0; i < words.length; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    words[i] = x >>> 0;
  }
  return buf.subarray(0, n);
}
