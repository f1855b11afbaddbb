import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { decideGranularity } from '../../../src/inspector/granularity.js';
import { unknownEffects, type TurnEffects } from '../../../src/inspector/inspector.js';
import type { ProcessDiff } from '../../../src/inspector/process-probe.js';

function effects(over: Partial<{ paths: string[]; bytes: number; unresolved: number; started: number; exited: number; changed: boolean; listening: number; external: number; unknown: string | null }> = {}): TurnEffects {
  const paths = over.paths ?? [];
  return {
    sandbox: 's',
    turn: 1,
    fs: { changedPaths: paths, changes: paths.map((p) => ({ path: p, op: 'modified' })), bytesWritten: over.bytes ?? 0, unresolved: over.unresolved ?? 0, overflow: false },
    processes: { started: over.started ?? 0, exited: over.exited ?? 0, changed: over.changed ?? false },
    listening: Array.from({ length: over.listening ?? 0 }, (_, i) => ({ pid: 10 + i, family: 'inet' as const, addr: '0.0.0.0', port: 8000 + i })),
    external: Array.from({ length: over.external ?? 0 }, () => ({ kind: 'connect' as const, addr: '10.0.0.1', port: 80 })),
    dropped: 0,
    unknown: over.unknown ?? null,
  };
}

const noDiff: ProcessDiff = { started: [], exited: [], ran: [], execed: [], memChanged: [], changed: false };

describe('decideGranularity', () => {
  const table: [string, Parameters<typeof decideGranularity>[0], string][] = [
    ['first boundary, even if nothing happened', { first: true, effects: effects() }, 'full'],
    ['first boundary wins over unknown', { first: true, effects: effects({ unknown: 'x' }) }, 'full'],
    ['no report', { first: false, effects: null }, 'full'],
    ['nothing', { first: false, effects: effects() }, 'skip'],
    ['external effects alone do not need a checkpoint', { first: false, effects: effects({ external: 1 }) }, 'skip'],
    ['files only', { first: false, effects: effects({ paths: ['/a'] }) }, 'fs'],
    ['bytes written to an already-open file', { first: false, effects: effects({ bytes: 10 }) }, 'fs'],
    ['unresolved mutation', { first: false, effects: effects({ unresolved: 1 }) }, 'fs'],
    ['process started', { first: false, effects: effects({ started: 1 }) }, 'process'],
    ['process exited', { first: false, effects: effects({ exited: 1 }) }, 'process'],
    ['process changed (exec)', { first: false, effects: effects({ changed: true }) }, 'process'],
    ['process + files', { first: false, effects: effects({ started: 1, paths: ['/a'] }) }, 'process'],
    ['new listening socket', { first: false, effects: effects({ listening: 1 }) }, 'process'],
    ['probe: a surviving process ran', { first: false, effects: effects(), probe: { ...noDiff, ran: [5], changed: true } }, 'process'],
    ['probe: nothing', { first: false, effects: effects({ paths: ['/a'] }), probe: noDiff }, 'fs'],
    ['in-sandbox agent, files: process (agent memory must match the files)', { first: false, effects: effects({ paths: ['/a'] }), agentInside: true }, 'process'],
    ['in-sandbox agent, nothing else: skip', { first: false, effects: effects(), agentInside: true }, 'skip'],
    ['first turn after a restore, nothing seen: fs (the layer is rescanned)', { first: false, effects: effects(), afterRestore: true }, 'fs'],
    ['first turn after a restore, files: fs', { first: false, effects: effects({ paths: ['/a'] }), afterRestore: true }, 'fs'],
    ['first turn after a restore, processes: process', { first: false, effects: effects({ started: 1 }), afterRestore: true }, 'process'],
    ['unknown (dropped events)', { first: false, effects: effects({ paths: ['/a'], unknown: '3 events dropped' }) }, 'full'],
    ['unknown (helper down)', { first: false, effects: unknownEffects('s', 'inspector unavailable') }, 'full'],
  ];
  for (const [name, input, want] of table) {
    test(name, () => assert.equal(decideGranularity(input).granularity, want));
  }

  test('pathsComplete is false when a path could not be resolved', () => {
    assert.equal(decideGranularity({ first: false, effects: effects({ paths: ['/a'] }) }).pathsComplete, true);
    assert.equal(decideGranularity({ first: false, effects: effects({ paths: ['/a'], unresolved: 2 }) }).pathsComplete, false);
  });

  test('after a restore the path list is never complete (the restored processes ran unseen)', () => {
    for (const e of [effects(), effects({ paths: ['/a'] }), effects({ started: 1 })]) {
      assert.equal(decideGranularity({ first: false, effects: e, afterRestore: true }).pathsComplete, false);
    }
  });

  test('reasons name what happened', () => {
    const d = decideGranularity({ first: false, effects: effects({ started: 1, paths: ['/a'] }) });
    assert.deepEqual(d.reasons, ['process-started', 'fs-changed']);
  });
});
