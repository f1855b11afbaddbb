import test from 'node:test';
import assert from 'node:assert/strict';
import { pseudoRandom } from '../../support/bytes.js';
import { ChunkAssembler, ContentCutter, CUT_MAX_BYTES, CUT_MIN_BYTES } from '../../../src/store/content-cuts.js';

/** The chunks of `data` fed in pieces of the given sizes (the rest in one piece). */
function chunksOf(data: Uint8Array, pieces: number[] = []): Buffer[] {
  const out: Buffer[] = [];
  const a = new ChunkAssembler((c) => out.push(Buffer.from(c)));
  let at = 0;
  for (const n of pieces) {
    a.write(data.subarray(at, at + n));
    at += n;
  }
  a.write(data.subarray(at));
  a.end();
  return out;
}

const MiB = 1024 * 1024;


test('content cuts: small data is one chunk; empty data none', () => {
  assert.deepEqual(new ContentCutter().next(pseudoRandom(CUT_MIN_BYTES - 1)), []);
  assert.equal(chunksOf(pseudoRandom(CUT_MIN_BYTES - 1)).length, 1);
  assert.equal(chunksOf(new Uint8Array(0)).length, 0);
});

test('content cuts: the cuts depend on the bytes, not on how they were split; chunks join to the data', () => {
  const data = pseudoRandom(24 * MiB, 7);
  const whole = chunksOf(data);
  assert.deepEqual(Buffer.concat(whole), data);
  for (const pieces of [[1, 2, 3], [CUT_MIN_BYTES - 40, 64, 1], [8 * MiB, 8 * MiB], Array.from({ length: 300 }, (_, i) => 4093 + i * 17)]) {
    assert.deepEqual(chunksOf(data, pieces).map((c) => c.length), whole.map((c) => c.length), `pieces ${pieces.slice(0, 3).join(',')}…`);
  }
  const sizes = whole.map((c) => c.length);
  for (const n of sizes.slice(0, -1)) assert.ok(n >= CUT_MIN_BYTES && n <= CUT_MAX_BYTES, `chunk of ${n}`);
  const mean = data.length / sizes.length;
  assert.ok(mean > 0.75 * MiB && mean < 2 * MiB, `mean chunk ${mean}`);
});

test('content cuts: an insertion changes the chunks around it only; uniform bytes are cut at the maximum', () => {
  const data = pseudoRandom(32 * MiB, 11);
  const edited = Buffer.concat([data.subarray(0, 13 * MiB + 5), Buffer.from('inserted line\n'), data.subarray(13 * MiB + 5)]);
  const before = new Set(chunksOf(data).map((c) => c.toString('base64')));
  const after = chunksOf(edited);
  const fresh = after.filter((c) => !before.has(c.toString('base64')));
  assert.ok(fresh.length >= 1 && fresh.length <= 2, `${fresh.length} of ${after.length} chunks new`);
  // an append: only the last chunk changes
  const appended = chunksOf(Buffer.concat([data, pseudoRandom(1000, 3)]));
  assert.equal(appended.filter((c) => !before.has(c.toString('base64'))).length, 1);
  assert.deepEqual(chunksOf(new Uint8Array(9 * MiB)).map((c) => c.length), [CUT_MAX_BYTES, CUT_MAX_BYTES, MiB]);
});
