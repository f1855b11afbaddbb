import test from 'node:test';
import assert from 'node:assert/strict';
import { pool } from '../../../src/core/pool.js';

const tick = () => new Promise((r) => setTimeout(r, 1));

test('pool: every item once with its index, never more than the bound at once', async () => {
  for (const [n, bound] of [[0, 3], [1, 3], [10, 3], [10, 1], [5, 0]] as const) {
    let running = 0;
    let most = 0;
    const seen: number[] = [];
    await pool(Array.from({ length: n }, (_, i) => i * 10), bound, async (item, i) => {
      running++;
      most = Math.max(most, running);
      await tick();
      assert.equal(item, i * 10);
      seen.push(i);
      running--;
    });
    assert.deepEqual([...seen].sort((a, b) => a - b), Array.from({ length: n }, (_, i) => i), `${n} items`);
    assert.ok(most <= Math.max(1, bound), `${n} items, bound ${bound}: ${most} at once`);
  }
});

test('pool: rejects with the first failure and starts no item after it', async () => {
  const started: number[] = [];
  await assert.rejects(
    pool([0, 1, 2, 3, 4, 5, 6, 7], 2, async (i) => {
      started.push(i);
      await tick();
      if (i === 1) throw new Error('boom');
    }),
    /boom/,
  );
  await new Promise((r) => setTimeout(r, 20));
  assert.ok(started.length <= 3, `started after the failure: ${started.join(',')}`);
});
