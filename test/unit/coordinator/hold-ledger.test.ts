import test from 'node:test';
import assert from 'node:assert/strict';
import { HoldLedger } from '../../../src/coordinator/hold-ledger.js';

test('HoldLedger: the next boundary after a timed-out turn is forced full, even when later turns time out before its job runs', () => {
  const l = new HoldLedger();
  assert.deepEqual(l.before('a', 5), [], 'nothing timed out');
  l.add('a', 1);
  assert.deepEqual(l.before('a', 1), [], "a turn's own late checkpoint is not forced by its own timeout");
  // Turn 2 also times out while boundary 2's job still waits in the queue.
  l.add('a', 2);
  assert.deepEqual(l.before('a', 2), [1], 'boundary 2 covers turn 1');
  l.settle('a', [1]);
  assert.deepEqual(l.before('a', 3), [2], 'turn 2 still forces boundary 3');
  l.settle('a', [2]);
  assert.deepEqual(l.before('a', 9), []);
  l.add('b', 0);
  l.add('a', 4);
  l.forget('a');
  assert.deepEqual(l.before('a', 9), []);
  assert.deepEqual(l.before('b', 1), [0], 'per sandbox');
});
