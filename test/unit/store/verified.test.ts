import test from 'node:test';
import assert from 'node:assert/strict';
import { VerifiedChunks } from '../../../src/store/verified.js';

test('verified marks: fresh within the trust period, noted records keep the younger mark, oldest, bound', () => {
  let now = 1_000_000;
  const v = new VerifiedChunks(100, 3, () => now);
  v.mark('a');
  now += 50;
  v.mark('b');
  assert.ok(v.fresh('a') && v.fresh('b'));
  assert.equal(v.oldest(['a', 'b']), 1_000_000);
  assert.equal(v.oldest([]), now, 'nothing to rely on: as good as now');
  assert.equal(v.oldest(['a', 'zz']), null, 'one without a mark');
  now += 60; // a is 110 ms old, b 60
  assert.ok(!v.fresh('a') && v.fresh('b'));
  assert.deepEqual(v.stale(['a', 'b', 'a', 'c']), ['a', 'c']);
  assert.equal(v.oldest(['b', 'a']), null, 'a stale one');
  v.note(['a', 'b'], now - 10); // a record younger than both marks: it counts
  assert.ok(v.fresh('a'));
  assert.equal(v.oldest(['a', 'b']), now - 10);
  v.mark('b');
  v.note(['b'], now - 50); // older than b's own mark: b's is kept
  assert.equal(v.oldest(['b']), now);
  v.mark('c');
  v.mark('d'); // bound 3: the oldest entry goes
  assert.equal(v.size, 3);
  v.forget('d');
  assert.ok(!v.fresh('d'));
  const strict = new VerifiedChunks(0, 10, () => now);
  strict.mark('x');
  assert.ok(!strict.fresh('x'), 'trust period 0: always checked');
});
