import test from 'node:test';
import assert from 'node:assert/strict';
import { addPressure, parseMemoryPressure, pressureNote } from '../../../src/bench/memory-limit.js';

test('memory pressure from the cgroup files: v2 memory.events first, else v1 failcnt and oom_control', () => {
  const table: Array<[string, Parameters<typeof parseMemoryPressure>[0], { limitHits: number; oomKills: number }]> = [
    ['nothing readable', {}, { limitHits: 0, oomKills: 0 }],
    ['v2, an OOM kill at the limit', { events: 'low 0\nhigh 0\nmax 17\noom 1\noom_kill 1\n' }, { limitHits: 17, oomKills: 1 }],
    ['v2 wins over v1', { events: 'max 0\noom_kill 0\n', failcnt: '9\n', oomControl: 'oom_kill 3\n' }, { limitHits: 0, oomKills: 0 }],
    ['v1 (this host: a hybrid hierarchy)', { failcnt: '42\n', oomControl: 'oom_kill_disable 0\nunder_oom 0\noom_kill 2\n' }, { limitHits: 42, oomKills: 2 }],
    ['v1, an old kernel without oom_kill', { failcnt: '0\n', oomControl: 'oom_kill_disable 0\nunder_oom 0\n' }, { limitHits: 0, oomKills: 0 }],
  ];
  for (const [why, files, want] of table) assert.deepEqual(parseMemoryPressure(files), want, why);
  assert.deepEqual(addPressure({ limitHits: 1, oomKills: 2 }, { limitHits: 3, oomKills: 4 }), { limitHits: 4, oomKills: 6 });
});

test("a failed run's reason says the sandbox hit its memory limit, with the limit and what to do", () => {
  assert.equal(pressureNote({ limitHits: 0, oomKills: 0 }, 2 ** 29), null);
  assert.equal(pressureNote({ limitHits: 12, oomKills: 1 }, 2 ** 29), 'the sandbox hit its memory limit of 512 MiB (1 OOM kill, 12 times at the limit): raise it with --memory');
});
