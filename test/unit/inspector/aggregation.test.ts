/* The helper's aggregation and net-zero cancellation, driven through its JSON protocol in
 * --no-bpf mode (no root needed; the same C code the BPF path feeds). */
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { after, before, describe, test } from 'node:test';
import { DEFAULT_HELPER, EbpfInspector, toTurnEffects, type HelperReport } from '../../../src/inspector/ebpf-inspector.js';

const skip = existsSync(DEFAULT_HELPER) ? {} : { skip: 'native helper not built (make -C native)' };

describe('helper aggregation (--no-bpf)', skip, () => {
  const ins = new EbpfInspector({ args: ['--no-bpf'] });
  let n = 0;
  before(() => ins.start());
  after(() => ins.close());

  async function sandbox(): Promise<string> {
    const name = `agg${++n}`;
    await ins.add(name, { id: 1000 + n });
    return name;
  }
  const inject = (sandbox: string, ev: Record<string, unknown>) => ins.request({ op: 'inject', sandbox, ...ev });
  const changes = async (s: string) => (await ins.effects(s)).fs.changes.map((c) => `${c.op} ${c.path}`).sort();

  test('distinct paths, not one per write', async () => {
    const s = await sandbox();
    for (let i = 0; i < 50; i++) await inject(s, { kind: 'modify', path: '/work/a' });
    await inject(s, { kind: 'bytes', n: 123 });
    const e = await ins.effects(s, { reset: false });
    assert.deepEqual(e.fs.changedPaths, ['/work/a']);
    assert.equal(e.fs.bytesWritten, 123);
    assert.deepEqual(await changes(s), ['modified /work/a']);
  });

  test('interactions (signals, ptrace…) are counted per turn', async () => {
    const s = await sandbox();
    assert.equal((await ins.effects(s)).interactions, 0);
    await inject(s, { kind: 'interaction' });
    await inject(s, { kind: 'interaction', n: 2 });
    assert.equal((await ins.effects(s)).interactions, 3);
    assert.equal((await ins.effects(s)).interactions, 0, 'a new turn starts from zero');
  });

  test('created and removed in the same turn cancels out', async () => {
    const s = await sandbox();
    await inject(s, { kind: 'create', path: '/tmp/x' });
    await inject(s, { kind: 'modify', path: '/tmp/x' });
    await inject(s, { kind: 'remove', path: '/tmp/x' });
    await inject(s, { kind: 'create', path: '/d' });
    await inject(s, { kind: 'create', path: '/d/f' });
    await inject(s, { kind: 'remove', path: '/d/f' });
    await inject(s, { kind: 'remove', path: '/d' });
    assert.deepEqual(await changes(s), []);
  });

  test('a pre-existing file removed then re-created is modified; removed stays removed', async () => {
    const s = await sandbox();
    await inject(s, { kind: 'remove', path: '/a' });
    await inject(s, { kind: 'create', path: '/a' });
    await inject(s, { kind: 'remove', path: '/b' });
    await inject(s, { kind: 'modify', path: '/c' });
    await inject(s, { kind: 'remove', path: '/c' });
    assert.deepEqual(await changes(s), ['modified /a', 'removed /b', 'removed /c']);
  });

  test('rename reports both paths; temp file renamed over a target reports the target only', async () => {
    const s = await sandbox();
    await inject(s, { kind: 'rename', path: '/w/old', path2: '/w/new' });
    await inject(s, { kind: 'create', path: '/w/.tmp1' });
    await inject(s, { kind: 'rename', path: '/w/.tmp1', path2: '/w/conf' });
    assert.deepEqual(await changes(s), ['modified /w/conf', 'modified /w/new', 'removed /w/old']);
  });

  test('renaming a directory moves the entries below it', async () => {
    const s = await sandbox();
    await inject(s, { kind: 'create', path: '/src/d' });
    await inject(s, { kind: 'create', path: '/src/d/f' });
    await inject(s, { kind: 'rename', path: '/src/d', path2: '/dst/d' });
    assert.deepEqual(await changes(s), ['created /dst/d/f', 'modified /dst/d']);
  });

  test('a path below a directory created this turn was itself created this turn', async () => {
    const s = await sandbox();
    await inject(s, { kind: 'create', path: '/n' });
    await inject(s, { kind: 'create', path: '/n/x' });
    await inject(s, { kind: 'rename', path: '/n/x', path2: '/n/y' });
    assert.deepEqual(await changes(s), ['created /n', 'created /n/y']);
    await inject(s, { kind: 'create', path: '/m' });
    await inject(s, { kind: 'rename', path: '/pre', path2: '/m/pre' });
    await inject(s, { kind: 'remove', path: '/m/pre' });
    await inject(s, { kind: 'remove', path: '/m' });
    assert.deepEqual(await changes(s), ['removed /pre']);
  });

  test('/proc, /sys and /dev are ignored; paths are normalized', async () => {
    const s = await sandbox();
    await inject(s, { kind: 'modify', path: '/proc/self/attr/current' });
    await inject(s, { kind: 'modify', path: '/dev/null' });
    await inject(s, { kind: 'create', path: '/sys/fs/cgroup/x' });
    await inject(s, { kind: 'modify', path: '/a/./b/../c//d' });
    await inject(s, { kind: 'modify', path: '/device' });
    const e = await ins.effects(s, { reset: false });
    assert.deepEqual(await changes(s), ['modified /a/c/d', 'modified /device']);
    assert.equal(e.interactions, 1, 'the write into /proc reached a process');
  });

  test('a write into another process through /proc is an interaction, not a path', async () => {
    const s = await sandbox();
    await inject(s, { kind: 'modify', path: '/proc/123/mem' });
    await inject(s, { kind: 'modify', path: '/proc/self/fd/1' });
    await inject(s, { kind: 'modify', path: '/sys/kernel/x' });
    const e = await ins.effects(s);
    assert.deepEqual(e.fs.changedPaths, []);
    assert.equal(e.interactions, 2);
  });

  test('reset starts a new turn', async () => {
    const s = await sandbox();
    await inject(s, { kind: 'modify', path: '/a' });
    const e1 = await ins.effects(s);
    assert.equal(e1.turn, 0);
    const e2 = await ins.effects(s);
    assert.equal(e2.turn, 1);
    assert.deepEqual(e2.fs.changedPaths, []);
    // create in turn 1, remove in turn 2: the removal is an effect of turn 2
    await inject(s, { kind: 'create', path: '/t' });
    assert.deepEqual(await changes(s), ['created /t']);
    await inject(s, { kind: 'remove', path: '/t' });
    assert.deepEqual(await changes(s), ['removed /t']);
  });

  test('processes: short-lived ones cancel; survivors, exits of older ones and execs count', async () => {
    const s = await sandbox();
    await inject(s, { kind: 'fork', pid: 200 });
    await inject(s, { kind: 'exec', pid: 200 });
    await inject(s, { kind: 'exit', pid: 200 }); // like `ls`
    let e = await ins.effects(s);
    assert.equal(e.processes.started, 0);
    assert.equal(e.processes.exited, 0);
    assert.equal(e.processes.changed, false);
    assert.equal(e.processes.forks, 1);
    await inject(s, { kind: 'fork', pid: 201 }); // `sleep 100 &`
    await inject(s, { kind: 'exit', pid: 150 }); // started before the turn
    await inject(s, { kind: 'exec', pid: 151 }); // a survivor exec'd
    e = await ins.effects(s);
    assert.deepEqual(e.processes.pids, { started: [201], exited: [150], execed: [151] });
    assert.equal(e.processes.changed, true);
  });

  test('network: loopback is not external; distinct destinations; listening sockets', async () => {
    const s = await sandbox();
    await inject(s, { kind: 'connect', addr: '127.0.0.1', port: 8080, pid: 5 });
    await inject(s, { kind: 'connect', addr: '::1', port: 8080, pid: 5 });
    await inject(s, { kind: 'connect', addr: '::ffff:127.0.0.2', port: 1, pid: 5 });
    await inject(s, { kind: 'connect', addr: '10.255.255.1', port: 80, pid: 5 });
    await inject(s, { kind: 'connect', addr: '10.255.255.1', port: 80, pid: 6 });
    await inject(s, { kind: 'sendto', addr: '2001:db8::1', port: 53, pid: 5 });
    await inject(s, { kind: 'listen', addr: '0.0.0.0', port: 8000, pid: 7 });
    const e = await ins.effects(s);
    assert.deepEqual(e.external.map((x) => `${x.kind} ${x.addr}:${x.port}`), ['connect 10.255.255.1:80', 'sendto 2001:db8::1:53']);
    assert.deepEqual(e.listening, [{ pid: 7, family: 'inet', addr: '0.0.0.0', port: 8000 }]);
  });

  test('any dropped event makes the turn unknown; the next turn is clean again', async () => {
    const s = await sandbox();
    await inject(s, { kind: 'drop', n: 3 });
    const e = await ins.effects(s);
    assert.equal(e.dropped, 3);
    assert.match(e.unknown ?? '', /3 events dropped/);
    assert.equal((await ins.effects(s)).unknown, null);
  });

  test('more than 4096 distinct paths: overflow, unknown, bounded answer', async () => {
    const s = await sandbox();
    for (let i = 0; i < 4100; i++) void inject(s, { kind: 'modify', path: `/many/f${i}` });
    const e = await ins.effects(s);
    assert.equal(e.fs.overflow, true);
    assert.equal(e.fs.changedPaths.length, 4096);
    assert.match(e.unknown ?? '', /4096/);
  });

  test('errors: unknown sandbox, duplicate add', async () => {
    await assert.rejects(ins.request({ op: 'effects', sandbox: 'nope' }), /no such sandbox/);
    const s = await sandbox();
    await assert.rejects(ins.request({ op: 'add', sandbox: s, cgroup_id: 5 }), /already/);
  });

  test('toTurnEffects sorts paths and counts processes', () => {
    const r: HelperReport = {
      sandbox: 's', turn: 3,
      fs: { paths: [{ path: '/b', op: 'created' }, { path: '/a', op: 'removed' }], overflow: false, unresolved: 0, bytes_written: 7 },
      proc: { started: [1, 2], exited: [], execed: [], forks: 2, execs: 0, exits: 0 },
      listening: [], external: [], dropped: 0, events: 9, unknown: null,
    };
    const e = toTurnEffects(r);
    assert.deepEqual(e.fs.changedPaths, ['/a', '/b']);
    assert.equal(e.processes.started, 2);
    assert.equal(e.fs.bytesWritten, 7);
  });
});

describe('helper supervision', skip, () => {
  test('a turn that spans a helper restart is unknown; the next one is not', async () => {
    const ins = new EbpfInspector({ args: ['--no-bpf'], restartDelayMs: 10 });
    try {
      await ins.add('sv', { id: 42 });
      const pid = ins.helperPid!;
      assert.ok(pid > 1);
      process.kill(pid, 'SIGKILL');
      for (let i = 0; i < 200 && (ins.helperPid === null || ins.helperPid === pid || ins.restarts === 0); i++) {
        await new Promise((r) => setTimeout(r, 10));
      }
      assert.notEqual(ins.helperPid, pid);
      const e = await ins.effects('sv');
      assert.match(e.unknown ?? '', /restarted/);
      const e2 = await ins.effects('sv');
      assert.equal(e2.unknown, null);
    } finally {
      await ins.close();
    }
  });

  test('helper down: effects() answers unknown instead of throwing', async () => {
    const ins = new EbpfInspector({ args: ['--no-bpf'], restartDelayMs: 60_000 });
    try {
      await ins.add('sv2', { id: 43 });
      const pid = ins.helperPid!;
      const exited = new Promise((r) => setTimeout(r, 100));
      process.kill(pid, 'SIGKILL');
      await exited;
      const e = await ins.effects('sv2');
      assert.match(e.unknown ?? '', /unavailable/);
    } finally {
      await ins.close();
    }
  });
});
