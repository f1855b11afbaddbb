import test from 'node:test';
import assert from 'node:assert/strict';
import { isAlive, ownerFromName, ownerMark, selfIdentity, staleVerdict } from '../../../src/core/owner.js';

test('staleVerdict: an entry goes when its owner is gone or it is older than the limit', () => {
  const o = { pid: 10, startTicks: 20 };
  const rows: Array<[string, Parameters<typeof staleVerdict>[0], boolean, string]> = [
    ['owner alive, young', { owner: o, ownerAlive: true, ageMs: 10 }, false, 'owner-alive'],
    ['owner gone, young', { owner: o, ownerAlive: false, ageMs: 10 }, true, 'owner-gone'],
    ['owner alive, old', { owner: o, ownerAlive: true, ageMs: 5000 }, true, 'too-old'],
    ['no owner mark, young', { owner: null, ownerAlive: false, ageMs: 10 }, false, 'young-unowned'],
    ['no owner mark, old', { owner: null, ownerAlive: false, ageMs: 1000 }, true, 'too-old'],
  ];
  for (const [why, entry, remove, because] of rows) {
    const v = staleVerdict(entry, 1000);
    assert.equal(v.remove, remove, why);
    assert.equal(v.why, because, why);
  }
});

test('owner marks round-trip through names; this process is alive, a reused pid is not its owner', () => {
  const me = selfIdentity();
  assert.deepEqual(ownerFromName(`.staging-img${ownerMark(me)}Ab12Cd`), me);
  assert.equal(ownerFromName('.staging-img-Ab12Cd'), null);
  assert.ok(isAlive(me));
  assert.equal(isAlive({ pid: me.pid, startTicks: me.startTicks + 1 }), false, 'same pid, another start time');
  assert.equal(isAlive({ pid: 2 ** 22 + 7, startTicks: 1 }), false, 'no such pid');
});
