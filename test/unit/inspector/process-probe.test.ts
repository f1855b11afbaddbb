import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { spawn } from 'node:child_process';
import { setTimeout as sleep } from 'node:timers/promises';
import { diffSnapshots, parseStat, snapshotProcesses, writableRegions, memoryDigest, timeOutputRanges, type ProcInfo, type ProcSnapshot } from '../../../src/inspector/process-probe.js';

function snap(...ps: Partial<ProcInfo>[]): ProcSnapshot {
  const procs: Record<number, ProcInfo> = {};
  for (const p of ps) {
    const full: ProcInfo = { pid: 1, comm: 'x', cmdline: 'x', startTime: 100, cpuTicks: 0, runtimeNs: 0, threads: 1, ...p };
    procs[full.pid] = full;
  }
  return { takenAt: 0, procs };
}

describe('process-probe', () => {
  test('parseStat handles a comm with spaces and parentheses', () => {
    const line = '1234 (we (ird) name) S 1 1234 1234 0 -1 4194560 100 0 0 0 7 3 0 0 20 0 1 0 98765 1000 100 18446744073709551615';
    assert.deepEqual(parseStat(line), { comm: 'we (ird) name', utime: 7, stime: 3, startTime: 98765 });
  });

  test('writableRegions keeps private writable mappings only', () => {
    const maps = [
      '55d0c0000000-55d0c0001000 r--p 00000000 08:01 123 /usr/bin/x',
      '55d0c0003000-55d0c0004000 rw-p 00003000 08:01 123 /usr/bin/x',
      '7f0000000000-7f0000002000 rw-s 00000000 00:01 9 /dev/shm/y',
      '7ffd00000000-7ffd00021000 rw-p 00000000 00:00 0 [stack]',
      'ffffffffff600000-ffffffffff601000 --xp 00000000 00:00 0 [vsyscall]',
    ].join('\n');
    const r = writableRegions(maps);
    assert.deepEqual(r.map((x) => x.name), ['/usr/bin/x', '[stack]']);
    assert.equal(r[1]!.end - r[1]!.start, 0x21000);
  });

  test('diff: same processes, nothing ran → unchanged', () => {
    const a = snap({ pid: 10 }, { pid: 11 });
    assert.equal(diffSnapshots(a, a).changed, false);
  });

  test('diff: started, exited, pid reuse, exec, ran', () => {
    const a = snap({ pid: 10 }, { pid: 11 }, { pid: 12, startTime: 5 }, { pid: 13 });
    const b = snap({ pid: 10, runtimeNs: 1000 }, { pid: 12, startTime: 6 }, { pid: 13, cmdline: 'y' }, { pid: 14 });
    const d = diffSnapshots(a, b);
    assert.deepEqual(d.started, [12, 14]);
    assert.deepEqual(d.exited, [11, 12]);
    assert.deepEqual(d.ran, [10]);
    assert.deepEqual(d.execed, [13]);
    assert.equal(d.changed, true);
  });

  test('diff: with digests, running without changing memory is not a change', () => {
    const a = snap({ pid: 10, memDigest: 'aa' });
    assert.equal(diffSnapshots(a, snap({ pid: 10, runtimeNs: 5, memDigest: 'aa' })).changed, false);
    const d = diffSnapshots(a, snap({ pid: 10, runtimeNs: 5, memDigest: 'bb' }));
    assert.equal(d.changed, true);
    assert.deepEqual(d.memChanged, [10]);
  });

  test('snapshot of this process, ignoreComm/ignorePids, digest is stable for a quiet process', async () => {
    const s = await snapshotProcesses([process.pid]);
    assert.ok(s.procs[process.pid]);
    assert.ok(s.procs[process.pid]!.runtimeNs > 0 || s.procs[process.pid]!.cpuTicks > 0);
    const ign = await snapshotProcesses([process.pid], { ignorePids: [process.pid] });
    assert.equal(Object.keys(ign.procs).length, 0);
    const ign2 = await snapshotProcesses([process.pid], { ignoreComm: [/^node/, s.procs[process.pid]!.comm] });
    assert.equal(Object.keys(ign2.procs).length, 0);
    // pid 1 and invalid pids are never probed
    assert.equal(Object.keys((await snapshotProcesses([0, 1, -5])).procs).length, 0);
    const d = await memoryDigest(process.pid);
    assert.ok(d === undefined || /^[0-9a-f]{64}$/.test(d.digest));
  });

  test('timeOutputRanges: the time arguments of blocked sleeps, nothing else', () => {
    const r = (start: number) => ({ start, end: start + 16 });
    const table: [string, { start: number; end: number }[]][] = [
      ['230 0x0 0x0 0x7ffe3d8ec960 0x7ffe3d8ec9a0 0x0 0x0 0x7ffe3d8ec948 0x7f7d16326503', [r(0x7ffe3d8ec960), r(0x7ffe3d8ec9a0)]],
      ['230 0x1 0x1 0x7ffe97610330 0x0 0x0 0x0 0x7ffe97610318 0x7faa4a0ed503', [r(0x7ffe97610330)]], // absolute sleep, no rem
      ['219 0x0 0x0 0x7ffd8e65fe50 0x7ffd8e65fe90 0x0 0x0 0x7ffd8e65fe38 0x7f50bc634503', [r(0x7ffd8e65fe50), r(0x7ffd8e65fe90)]], // restarted clock_nanosleep
      ['219 0x7ffc00001000 0x7ffc00002000 0x0 0x0 0x0 0x0 0x7ffc00000ff0 0x7f0000000000', [r(0x7ffc00001000), r(0x7ffc00002000)]], // restarted nanosleep
      ['35 0x7ffc00001000 0x7ffc00002000 0x0 0x0 0x0 0x0 0x7ffc00000ff0 0x7f0000000000', [r(0x7ffc00001000), r(0x7ffc00002000)]],
      ['23 0x4 0x7ffc00001000 0x0 0x0 0x7ffc00003000 0x0 0x7ffc00000ff0 0x7f0000000000', [r(0x7ffc00003000)]],
      ['0 0x3 0x7ffc00001000 0x1000 0x0 0x0 0x0 0x7ffc00000ff0 0x7f0000000000', []], // read: not masked
      ['running', []],
      ['-1 0x7ffc00000ff0 0x7f0000000000', []],
    ];
    for (const [text, want] of table) assert.deepEqual(timeOutputRanges(text), want, text);
  });

  test('memoryDigest: a sleep interrupted by a stop keeps its digest', { skip: process.getuid?.() !== 0 ? 'needs root to read /proc/PID/mem' : undefined }, async () => {
    // As in a sandbox: no rseq (the kernel rewrites its CPU id when the task resumes on another CPU).
    const child = spawn('sleep', ['1000'], { stdio: 'ignore', env: { ...process.env, GLIBC_TUNABLES: 'glibc.pthread.rseq=0' } });
    try {
      await sleep(200);
      const a = await memoryDigest(child.pid!);
      child.kill('SIGSTOP');
      await sleep(50);
      child.kill('SIGCONT');
      await sleep(50);
      const b = await memoryDigest(child.pid!);
      assert.ok(a && b);
      assert.equal(a.digest, b.digest);
    } finally {
      child.kill('SIGKILL');
    }
  });
});
