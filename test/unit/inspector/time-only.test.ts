import test, { describe } from 'node:test';
import assert from 'node:assert/strict';
import { changedSurvivors, judgeTimeOnly, notTimeOnlyBecause, TIME_ONLY_MAX_CPU_NS, type TimeOnlyInput } from '../../../src/inspector/time-only.js';
import { inetSocketInodes, parseIo, sharedWritableMappings, type ProcInfo, type ProcSnapshot } from '../../../src/inspector/process-probe.js';

const io = { rchar: 100, wchar: 50, syscr: 3, syscw: 2 };
function proc(p: Partial<ProcInfo> = {}): ProcInfo {
  return { pid: 7, comm: 'python3', cmdline: 'python3 -m http.server', startTime: 100, cpuTicks: 1, runtimeNs: 1000, threads: 1, io, memDigest: 'a', ...p };
}
function snap(...ps: ProcInfo[]): ProcSnapshot {
  return { takenAt: 0, procs: Object.fromEntries(ps.map((p) => [p.pid, p])) };
}
const quiet = { sharedWritableMappings: 0, otherSockets: 0 };

describe('notTimeOnlyBecause', () => {
  const rows: [string, Partial<ProcInfo>, typeof quiet | null, string | null][] = [
    ['memory changed, nothing else', { memDigest: 'b', runtimeNs: 5000 }, quiet, null],
    ['read something (pipe, tty, file)', { io: { ...io, syscr: 4, rchar: 101 } }, quiet, 'read'],
    ['a read that returned nothing still counts', { io: { ...io, syscr: 4 } }, quiet, 'read'],
    ['wrote something', { io: { ...io, syscw: 3, wchar: 60 } }, quiet, 'wrote'],
    ['no io counters', { io: undefined }, quiet, 'io-unknown'],
    ['a new thread', { threads: 2 }, quiet, 'threads'],
    ['busy beyond the budget', { runtimeNs: 1000 + TIME_ONLY_MAX_CPU_NS + 1 }, quiet, 'cpu'],
    ['exec', { cmdline: 'python3 other.py' }, quiet, 'exec'],
    ['channels unreadable', {}, null, 'channels-unknown'],
    ['shared memory', {}, { sharedWritableMappings: 1, otherSockets: 0 }, 'shared-memory'],
    ['a unix socket', {}, { sharedWritableMappings: 0, otherSockets: 1 }, 'unix-socket'],
  ];
  for (const [name, next, ch, want] of rows) {
    test(name, () => assert.equal(notTimeOnlyBecause(proc(), proc(next), ch)?.split(' ')[0] ?? null, want));
  }
});

describe('changedSurvivors', () => {
  test('digests decide when both sides have one; else running does', () => {
    const prev = snap(proc({ pid: 2 }), proc({ pid: 3, memDigest: undefined }), proc({ pid: 4 }), proc({ pid: 5 }));
    const next = snap(
      proc({ pid: 2, runtimeNs: 9999 }), // ran, same memory: idle
      proc({ pid: 3, memDigest: undefined, runtimeNs: 9999 }), // ran, too big to digest
      proc({ pid: 4, memDigest: 'z' }), // memory changed
      proc({ pid: 5, startTime: 999 }), // a new process with a reused pid: not a survivor
    );
    assert.deepEqual(changedSurvivors(prev, next), [3, 4]);
  });
});

describe('judgeTimeOnly', () => {
  const base: TimeOnlyInput = {
    prev: snap(proc()),
    next: snap(proc({ memDigest: 'b', runtimeNs: 2000 })),
    setChanged: false,
    channels: { 7: quiet },
    netUnchanged: true,
    interactions: 0,
  };
  const rows: [string, Partial<TimeOnlyInput>, boolean, RegExp | null][] = [
    ['a poller that only followed the clock', {}, true, null],
    ['packets in the namespace (a request to it)', { netUnchanged: false }, false, /network/],
    ['a signal or ptrace in the sandbox', { interactions: 1 }, false, /interactions/],
    ['interactions not counted (old helper)', { interactions: Number.POSITIVE_INFINITY }, false, /interactions/],
    ['processes started or exited', { setChanged: true }, false, /started/],
    ['nothing changed at all', { next: snap(proc()) }, false, /nothing/],
    ['its channels are unknown', { channels: {} }, false, /channels-unknown/],
  ];
  for (const [name, over, want, why] of rows) {
    test(name, () => {
      const v = judgeTimeOnly({ ...base, ...over });
      assert.equal(v.timeOnly, want);
      if (why) assert.match(v.why ?? '', why);
      else assert.deepEqual(v.pids, [7]);
    });
  }
});

describe('probe parsers', () => {
  test('parseIo', () => {
    assert.deepEqual(parseIo('rchar: 6976\nwchar: 0\nsyscr: 10\nsyscw: 0\nread_bytes: 0\n'), { rchar: 6976, wchar: 0, syscr: 10, syscw: 0 });
    assert.equal(parseIo('rchar: 1\n'), null);
  });
  test('inetSocketInodes', () => {
    const t = [
      '  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode',
      '   0: 0100007F:1FA3 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4242 1 0000000000000000 100 0 0 10 0',
    ].join('\n');
    assert.deepEqual(inetSocketInodes(t), [4242]);
    assert.deepEqual(inetSocketInodes(''), []);
  });
  test('sharedWritableMappings', () => {
    const maps = [
      '55d0c0000000-55d0c0001000 rw-p 00000000 00:00 0 [heap]',
      '7f0000000000-7f0000100000 rw-s 00000000 00:05 123 /dev/shm/x',
      '7f0000200000-7f0000300000 r--s 00000000 00:05 124 /usr/lib/locale/archive',
    ].join('\n');
    assert.equal(sharedWritableMappings(maps), 1);
  });
});
