import test from 'node:test';
import assert from 'node:assert/strict';
import { crashesHost, faultLabel, faultPoints, parseFaultPlan, planKind } from '../../../src/bench/faults.js';

test('fault plans parse with an optional KIND: prefix, and bad ones are refused', () => {
  const table: Array<[string, unknown]> = [
    ['none', { kind: 'none' }],
    ['every-turn', { kind: 'every-turn' }],
    ['random:3', { kind: 'random', count: 3 }],
    ['turn:4', { kind: 'turn', turn: 4, when: undefined }],
    ['turn:4:mid-wait', { kind: 'turn', turn: 4, when: 'mid-wait' }],
    ['kill:every-turn', { kind: 'every-turn', fault: 'kill' }],
    ['host-crash:turn:2:mid-wait', { kind: 'turn', turn: 2, when: 'mid-wait', fault: 'host-crash' }],
    ['mid-action:random:5', { kind: 'random', count: 5, fault: 'mid-action' }],
    ['mid-action:turn:3', { kind: 'turn', turn: 3, when: undefined, fault: 'mid-action' }],
    ['mid-action:turn:3:mid-wait', null],
    ['kill:none', null],
    ['reboot:every-turn', null],
    ['turn:0', null],
    ['turn:x', null],
    ['sometimes', null],
  ];
  for (const [text, want] of table) assert.deepEqual(parseFaultPlan(text), want, text);
});

test('the default kind: host-crash for every-turn and random:N, kill for turn:K; a prefix wins', () => {
  const table: Array<[string, string]> = [
    ['every-turn', 'host-crash'],
    ['random:2', 'host-crash'],
    ['turn:3', 'kill'],
    ['kill:every-turn', 'kill'],
    ['host-crash:turn:3', 'host-crash'],
    ['mid-action:every-turn', 'mid-action'],
  ];
  for (const [text, want] of table) assert.equal(planKind(parseFaultPlan(text)!), want, text);
});

test('every-turn puts one fault at every turn, alternating after-actions and mid-wait; mid-action puts it in the first action', () => {
  assert.deepEqual(faultPoints({ kind: 'every-turn' }, 4), [
    { turn: 1, when: 'after-actions', kind: 'host-crash' },
    { turn: 2, when: 'mid-wait', kind: 'host-crash' },
    { turn: 3, when: 'after-actions', kind: 'host-crash' },
    { turn: 4, when: 'mid-wait', kind: 'host-crash' },
  ]);
  // a turn without actions has no action to crash in: the fault comes after its (empty) actions
  assert.deepEqual(faultPoints({ kind: 'every-turn', fault: 'mid-action' }, 3, Math.random, (t) => (t === 2 ? 0 : 1)), [
    { turn: 1, when: 'mid-action', kind: 'mid-action' },
    { turn: 2, when: 'after-actions', kind: 'mid-action' },
    { turn: 3, when: 'mid-action', kind: 'mid-action' },
  ]);
  assert.deepEqual(faultPoints({ kind: 'turn', turn: 9 }, 4), []);
  assert.deepEqual(faultPoints({ kind: 'turn', turn: 2 }, 4), [{ turn: 2, when: 'after-actions', kind: 'kill' }]);
  assert.equal(faultPoints({ kind: 'random', count: 5 }, 4).length, 5);
  assert.ok(faultPoints({ kind: 'random', count: 50 }, 4).every((x) => x.turn >= 1 && x.turn <= 4 && x.kind === 'host-crash'));
});

test('labels name the kind unless it is a kill (the labels of earlier benches), and which faults take the host down', () => {
  assert.equal(faultLabel(null), 'none');
  assert.equal(faultLabel({ turn: 3, when: 'after-actions', kind: 'kill' }), 'after-actions:3');
  assert.equal(faultLabel({ turn: 3, when: 'mid-wait', kind: 'host-crash' }), 'host-crash@mid-wait:3');
  assert.equal(faultLabel({ turn: 1, when: 'mid-action', kind: 'mid-action' }), 'mid-action@mid-action:1');
  assert.equal(crashesHost({ turn: 1, when: 'after-actions', kind: 'kill' }), false);
  assert.equal(crashesHost({ turn: 1, when: 'mid-wait', kind: 'host-crash' }), true);
  assert.equal(crashesHost(null), false);
});
