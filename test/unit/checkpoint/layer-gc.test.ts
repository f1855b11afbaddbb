import test from 'node:test';
import assert from 'node:assert/strict';
import { layersToRemove, type LayerEntry } from '../../../src/checkpoint/layer-gc.js';

const D1 = 'a'.repeat(64);
const D2 = 'b'.repeat(64);
const entry = (name: string, ageMs: number, ownerAlive?: boolean): LayerEntry => ({
  name,
  path: `/h/layers/${name}`,
  ageMs,
  owner: ownerAlive === undefined ? null : { pid: 123, startTicks: 456 },
  ownerAlive: ownerAlive ?? false,
});

test('layersToRemove: what nothing names and the grace period no longer covers', () => {
  const grace = 1000;
  const rows: Array<[string, LayerEntry, string[], boolean]> = [
    ['named by a sandbox or checkpoint: kept', entry(D1, 5000), [`/h/layers/${D1}`], false],
    ['named, young: kept', entry(D1, 10), [`/h/layers/${D1}`], false],
    ['unnamed, old: removed', entry(D2, 5000), [`/h/layers/${D1}`], true],
    ['unnamed, young (a fork in progress): kept', entry(D2, 999), [], false],
    ['unnamed, exactly the grace: removed', entry(D2, 1000), [], true],
    ['staging without an owner mark, older than an hour: removed', entry(`${D1}.123.xyz`, 10_000), [], true],
    ['staging without an owner mark, younger: kept (a fork of an older version may be writing it)', entry(`${D1}.123.xyz`, 5000), [], false],
    ['staging whose owner is gone: removed at once', entry(`${D1}.~p123t456~xyz`, 10, false), [], true],
    ['staging whose owner is alive: kept', entry(`${D1}.~p123t456~xyz`, 5000, true), [], false],
    ['staging whose owner is alive but older than an hour: removed', entry(`${D1}.~p123t456~xyz`, 10_000, true), [], true],
    ['staging is never live, even if named', entry(`${D1}.~p123t456~xyz`, 10, false), [`/h/layers/${D1}.~p123t456~xyz`], true],
  ];
  for (const [why, e, named, removed] of rows) {
    assert.equal(layersToRemove([e], new Set(named), grace, 10_000).length === 1, removed, why);
  }
});
