import test from 'node:test';
import assert from 'node:assert/strict';
import { bytesByCause, checkpointCause, type CheckpointCause } from '../../../src/bench/causes.js';

test('checkpointCause: boundary 0 is the setup; otherwise the strongest reason', () => {
  const rows: Array<[number | null, string[], CheckpointCause]> = [
    [0, ['first-boundary'], 'setup'],
    [0, [], 'setup'],
    [3, ['unknown: more than 4096 distinct paths'], 'rule'],
    [3, ['escalated'], 'rule'],
    [2, ['process-started', 'listening-socket', 'process-ran'], 'server started'],
    [2, ['process-started', 'process-exited', 'process-ran', 'fs-changed'], 'process started'],
    [9, ['process-exited', 'process-ran', 'fs-changed'], 'process exited'],
    [4, ['process-ran'], 'process memory changed'],
    [4, ['process-changed', 'fs-changed'], 'process memory changed'],
    [5, ['fs-changed', 'shell-state'], 'shell state'],
    [8, ['fs-changed', 'time-only 15206'], 'files changed'],
    [6, ['after-restore'], 'after restore'],
    [null, [], 'other'],
  ];
  for (const [turn, reasons, want] of rows) assert.equal(checkpointCause(turn, reasons), want, reasons.join(','));
});

test('bytesByCause sums bytes and counts checkpoints per cause', () => {
  assert.deepEqual(
    bytesByCause([
      { turn: 0, new_bytes: 100, reasons: ['first-boundary'] },
      { turn: 2, new_bytes: 2000, reasons: ['process-started', 'listening-socket'] },
      { turn: 3, new_bytes: 300, reasons: ['process-ran'] },
      { turn: 4, new_bytes: 200, reasons: ['process-ran'] },
    ]),
    { setup: { checkpoints: 1, bytes: 100 }, 'server started': { checkpoints: 1, bytes: 2000 }, 'process memory changed': { checkpoints: 2, bytes: 500 } },
  );
});
