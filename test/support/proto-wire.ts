/** @module Protobuf wire format written by hand, for tests of parsers of CRIU's images (not with the parsers' schemas). */

export function varint(n: number): number[] {
  const out: number[] = [];
  let v = BigInt(n);
  do {
    let b = Number(v & 0x7fn);
    v >>= 7n;
    if (v) b |= 0x80;
    out.push(b);
  } while (v);
  return out;
}

/** A varint field. */
export const varintField = (id: number, n: number): number[] => [(id << 3) | 0, ...varint(n)];

/** A length-delimited field (bytes, string, embedded message). */
export const bytesField = (id: number, b: number[]): number[] => [(id << 3) | 2, ...varint(b.length), ...b];
