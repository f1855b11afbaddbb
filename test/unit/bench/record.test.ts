import test from 'node:test';
import assert from 'node:assert/strict';
import { buildTrace } from '../../../src/bench/record.js';
import { parseTrace } from '../../../src/bench/trace.js';

test('a recorded session becomes a valid crab-trace/1 file', () => {
  const text = buildTrace(
    [
      { turnIndex: 0, receivedAt: 1000, responseArrivedAt: 3500 },
      { turnIndex: 1, receivedAt: 5000, responseArrivedAt: 6000 },
      { turnIndex: 2, receivedAt: 8000, responseArrivedAt: 8100 },
    ],
    [
      { at: 500, cmd: 'mkdir -p /work', session: 's', exitCode: 0, timeoutMs: 60000 },
      { at: 3600, cmd: 'cd /work && ls', session: 's', exitCode: 0, timeoutMs: 60000 },
      { at: 3700, cmd: 'false', session: 's', exitCode: 1, timeoutMs: 5000 },
      { at: 6100, cmd: 'echo hi > f', session: 's', exitCode: 0, timeoutMs: 60000 },
    ],
    { name: 'rec', source: 'unit test', packages: ['python3'] },
  );
  const t = parseTrace(text, 'rec.trace.jsonl');
  assert.equal(t.header.shell, 'persistent');
  assert.deepEqual(t.header.setup, ['mkdir -p /work']);
  assert.equal(t.turns.length, 2);
  assert.deepEqual(t.turns[0]!.actions.map((a) => [a.cmd, a.expect_exit, a.timeout_s]), [['cd /work && ls', 0, 60], ['false', 1, 5]]);
  assert.equal(t.turns[0]!.llm.latency_ms, 2500);
  assert.deepEqual(t.turns[1]!.actions.map((a) => a.cmd), ['echo hi > f']);
});
