import test from 'node:test';
import assert from 'node:assert/strict';
import { withoutControlFiles } from '../../../src/coordinator/turn-controller.js';
import { unknownEffects } from '../../../src/inspector/inspector.js';
import { decideGranularity } from '../../../src/inspector/granularity.js';

function effects(paths: string[], bytes = 10) {
  const e = unknownEffects('s', 'x');
  e.unknown = null;
  e.fs = { changedPaths: paths, changes: paths.map((path) => ({ path, op: 'modified' as const })), bytesWritten: bytes, unresolved: 0, overflow: false };
  return e;
}

test("Crab's own control files and CRIU scratch are not the agent's effects", () => {
  const table: Array<[string[], string[], number, string]> = [
    [['/run/crab/r/1.out', '/run/crab'], [], 0, 'skip'],
    [['/run/crab/r/1.out', '/work/a'], ['/work/a'], 10, 'fs'],
    [['/var/lib/crab/sandboxes/x/ckpt/ck-1/work/dump.log'], [], 0, 'skip'],
    [['/run/crabby'], ['/run/crabby'], 10, 'fs'],
  ];
  for (const [paths, kept, bytes, decision] of table) {
    const e = withoutControlFiles(effects(paths), ['/var/lib/crab/sandboxes/x/ckpt']);
    assert.deepEqual(e.fs.changedPaths, kept, paths.join(','));
    assert.equal(e.fs.bytesWritten, bytes);
    assert.equal(decideGranularity({ first: false, effects: e }).granularity, decision);
  }
});
