import test from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { claimFreeze, readFreezeRecord, releaseFreeze, staleFreezeVerdict, type FreezeRecord } from '../../../src/checkpoint/freeze-owner.js';
import { ownedByDead } from '../../../src/checkpoint/crash-recovery.js';
import { isAlive as ownerAlive, ownerFromName as ownerOfName, ownerMark, processStartTicks, selfIdentity as currentOwner } from '../../../src/core/owner.js';

const rec: FreezeRecord = { pid: 1234, startTicks: 5, op: 'checkpoint', atMs: 0 };

test('stale freeze verdicts', () => {
  const cases: Array<[Parameters<typeof staleFreezeVerdict>[0], string]> = [
    [{ frozen: true, record: null, ownerAlive: false, tracedByCriu: false }, 'leave'],
    [{ frozen: true, record: rec, ownerAlive: true, tracedByCriu: false }, 'leave'],
    [{ frozen: true, record: rec, ownerAlive: false, tracedByCriu: true }, 'leave'],
    [{ frozen: true, record: rec, ownerAlive: false, tracedByCriu: false }, 'thaw'],
    [{ frozen: false, record: rec, ownerAlive: false, tracedByCriu: false }, 'clear'],
    [{ frozen: false, record: rec, ownerAlive: true, tracedByCriu: false }, 'leave'],
  ];
  for (const [input, want] of cases) assert.equal(staleFreezeVerdict(input), want, JSON.stringify(input));
});

test('owner tags: parsed from the end of a name; a dead or recycled pid is not the owner', () => {
  assert.deepEqual(ownerOfName(`ck-abc.${ownerMark({ pid: 123, startTicks: 456 })}`), { pid: 123, startTicks: 456 });
  assert.deepEqual(ownerOfName(`${'a'.repeat(64)}.17.${ownerMark({ pid: 99, startTicks: 1 })}`), { pid: 99, startTicks: 1 });
  for (const n of ['ck-abc', 'upper.restore', 'x.12', 'x.12-3', `${'a'.repeat(64)}.42.7`]) assert.equal(ownerOfName(n), null, n);
  assert.ok(ownerAlive(currentOwner()));
  assert.ok(ownerMark().startsWith(`~p${process.pid}t`));
  assert.ok(!ownerAlive({ pid: process.pid, startTicks: currentOwner().startTicks + 1 }), 'same pid, another start: recycled');
  const child = spawnSync(process.execPath, ['-e', 'console.log(process.pid)']);
  const deadPid = Number(child.stdout.toString());
  assert.equal(processStartTicks(deadPid), null);
  assert.ok(!ownerAlive({ pid: deadPid, startTicks: 1 }));
  assert.ok(!ownerAlive({ pid: 0, startTicks: 0 }));
});

test('freeze records: exclusive against a live owner, taken over from a dead one, released only by their owner', () => {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'crab-freeze-'));
  try {
    claimFreeze(root, 'checkpoint');
    assert.equal(readFreezeRecord(root)!.pid, process.pid);
    claimFreeze(root, 'restore'); // this process's own stale record (a take that did not release) is replaced
    assert.equal(readFreezeRecord(root)!.op, 'restore');
    releaseFreeze(root);
    assert.equal(readFreezeRecord(root), null);
    // a live other owner: our parent process stands in for it
    const parent = { pid: process.ppid, startTicks: processStartTicks(process.ppid)! };
    fs.writeFileSync(path.join(root, 'freeze-owner.json'), JSON.stringify({ ...parent, op: 'checkpoint', atMs: 1 }));
    assert.throws(() => claimFreeze(root, 'checkpoint'), { code: 'CKPT_SANDBOX_BUSY' });
    releaseFreeze(root);
    assert.equal(readFreezeRecord(root)!.pid, process.ppid, 'not ours: kept');
    // a dead one
    fs.writeFileSync(path.join(root, 'freeze-owner.json'), JSON.stringify({ pid: parent.pid, startTicks: parent.startTicks + 1, op: 'checkpoint', atMs: 1 }));
    claimFreeze(root, 'checkpoint');
    assert.equal(readFreezeRecord(root)!.pid, process.pid);
    releaseFreeze(root);
    // damaged: names no live owner
    fs.writeFileSync(path.join(root, 'freeze-owner.json'), '{');
    assert.equal(readFreezeRecord(root)!.pid, 0);
    assert.deepEqual(fs.readdirSync(root), ['freeze-owner.json'], 'no temp file left');
    // scratch: a live owner's is kept, a dead one's goes, an unowned one only when old
    const mine = path.join(root, `ck-1.${ownerMark()}`);
    const dead = path.join(root, `ck-2.${ownerMark({ pid: parent.pid, startTicks: parent.startTicks + 1 })}`);
    const unowned = path.join(root, 'ck-3');
    for (const p of [mine, dead, unowned]) fs.mkdirSync(p);
    assert.equal(ownedByDead(mine), false);
    assert.equal(ownedByDead(dead), true);
    assert.equal(ownedByDead(unowned), false);
    assert.equal(ownedByDead(unowned, Date.now() + 2 * 3600_000), true);
  } finally {
    fs.rmSync(root, { recursive: true, force: true });
  }
});
