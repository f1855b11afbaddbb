import test from 'node:test';
import assert from 'node:assert/strict';
import { generateSession, SESSION_MIX } from '../../../src/bench/session-gen.js';
import { parseTrace } from '../../../src/bench/trace.js';

test('generated sessions: seeded, valid crab-trace/1, the mix in proportion, every background job stopped', () => {
  const a = generateSession('s', 7, 200);
  assert.deepEqual(generateSession('s', 7, 200), a, 'same seed, same session');
  assert.notDeepEqual(generateSession('s', 8, 200).turns, a.turns);
  // it round-trips through the strict parser
  const text = [JSON.stringify(a.header), ...a.turns.map((t) => JSON.stringify(t))].join('\n');
  assert.equal(parseTrace(text, 's.trace.jsonl').turns.length, 200);
  const cmds = a.turns.flatMap((t) => t.actions.map((x) => x.cmd));
  const edits = cmds.filter((c) => /sed -i|>>|> \/work\/proj\/out/.test(c)).length;
  assert.ok(Math.abs(edits - 2 * SESSION_MIX.edit) < 20, `${edits} edits in 200 turns`);
  const starts = cmds.filter((c) => c.startsWith('sleep 100000')).length;
  const stops = cmds.filter((c) => c.startsWith('kill %1')).length;
  assert.equal(starts, stops, 'every job started is stopped by the end');
  assert.ok(a.turns.every((t) => t.llm.latency_ms >= 2000 && t.llm.latency_ms < 4500));
  // a read of the shell state expects the value the last shell turn set
  let step = '';
  for (const t of a.turns) {
    for (const x of t.actions) {
      const m = /STEP=(\d+)/.exec(x.cmd);
      if (m) step = m[1]!;
      if (x.cmd === 'echo step=$STEP.') assert.equal(x.expect_stdout, `step=${step}.`);
    }
  }
});
