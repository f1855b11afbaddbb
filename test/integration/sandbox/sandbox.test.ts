import test, { after, describe } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { rootOnly, testPrefix } from '../../support/root.js';
import { leftovers, manager, removeByPrefix } from '../../support/sandboxes.js';
import { freezerStateFile, processesOf } from '../../../src/sandbox/cgroup.js';

describe('sandbox runtime (real runc)', rootOnly(), () => {
  const prefix = testPrefix('sb');
  const m = manager();
  after(() => removeByPrefix(m, prefix));

  test('isolation: own rootfs, pid 1, hostname, loopback up', async () => {
    const marker = `/tmp/${prefix}-host-marker`;
    fs.writeFileSync(marker, 'host secret');
    try {
      const sb = await m.create({ name: `${prefix}-iso` });
      const r = await m.exec(sb.id, `test -e ${marker} && echo visible || echo hidden; cat /proc/1/comm; hostname; echo $$; cat /sys/class/net/lo/operstate /sys/class/net/lo/flags; ls /sys/class/net`);
      const [visible, comm, host, pid, operstate, flags, ifaces] = r.stdout.trim().split('\n');
      assert.equal(visible, 'hidden');
      assert.equal(comm, 'bash');
      assert.equal(host, sb.id);
      assert.ok(Number(pid) < 1000, `pid inside the sandbox is small (own pid namespace), got ${pid}`);
      assert.equal(operstate, 'unknown'); // loopback reports "unknown" when up
      assert.equal(Number(flags) & 1, 1, 'IFF_UP');
      assert.equal(ifaces, 'lo', 'no network device but loopback');
    } finally {
      fs.rmSync(marker, { force: true });
    }
  });

  test('memory limit is enforced', async () => {
    const sb = await m.create({ name: `${prefix}-mem`, memoryLimitBytes: 64 * 1024 * 1024 });
    // `tail` keeps the whole newline-free stream in memory: far past 64 MiB it gets OOM-killed.
    const r = await m.exec(sb.id, 'head -c 300M /dev/zero | tail -n 1 >/dev/null; echo "rc=${PIPESTATUS[1]}"');
    assert.match(r.stdout, /rc=137/);
    const ok = await m.exec(sb.id, 'head -c 16M /dev/zero | tail -n 1 | wc -c');
    assert.equal(ok.stdout.trim(), String(16 * 1024 * 1024));
  });

  test('persistent session keeps cwd, exports, functions and background jobs', async () => {
    const sb = await m.create({ name: `${prefix}-sess` });
    const run = (cmd: string) => m.exec(sb.id, cmd, { session: 'main' });
    await run('mkdir -p /work && cd /work && export FOO=bar && greet() { echo "hi $1"; }');
    await run('sleep 300 &');
    const r = await run('pwd; echo $FOO; greet you; jobs | wc -l');
    assert.deepEqual(r.stdout.trim().split('\n'), ['/work', 'bar', 'hi you', '1']);
    const rc = await run('false');
    assert.equal(rc.exitCode, 1);
    const stderr = await run('echo oops >&2; exit_code_probe() { return 3; }; exit_code_probe');
    assert.equal(stderr.stderr, 'oops\n');
    assert.equal(stderr.exitCode, 3);
    // A second session has its own state.
    const other = await m.exec(sb.id, 'pwd; echo "[$FOO]"', { session: 'other' });
    assert.deepEqual(other.stdout.trim().split('\n'), ['/', '[]']);
  });

  test('exec timeout kills only that command', async () => {
    const sb = await m.create({ name: `${prefix}-tmo` });
    await m.exec(sb.id, 'sleep 300 & echo $! > /tmp/bg.pid', { session: 's' });
    const t0 = Date.now();
    const r = await m.exec(sb.id, 'sleep 30', { session: 's', timeoutMs: 500 });
    assert.equal(r.timedOut, true);
    assert.equal(r.exitCode, 124);
    assert.ok(Date.now() - t0 < 5000);
    const after = await m.exec(sb.id, 'kill -0 $(cat /tmp/bg.pid) && echo bg-alive; jobs | wc -l', { session: 's' });
    assert.deepEqual(after.stdout.trim().split('\n'), ['bg-alive', '1']);
    const oneShot = await m.exec(sb.id, 'sleep 30', { timeoutMs: 500 });
    assert.equal(oneShot.timedOut, true);
    const still = await m.exec(sb.id, 'echo ok');
    assert.equal(still.stdout, 'ok\n');
  });

  test('remove leaves no process, mount, cgroup or directory behind', async () => {
    const sb = await m.create({ name: `${prefix}-rm` });
    await m.exec(sb.id, 'sleep 300 &', { session: 's' });
    const pids = processesOf(sb.id).map((p) => p.hostPid);
    assert.ok(pids.length >= 3);
    await m.remove(sb.id);
    assert.deepEqual(await leftovers(m, sb.id), []);
    for (const pid of pids) assert.equal(fs.existsSync(`/proc/${pid}`) && !isZombie(pid), false, `pid ${pid} still alive`);
  });

  test('stop works on a sandbox whose init died while a checkpoint had its cgroup frozen', async () => {
    // What a kill during a checkpoint's freeze can leave: init gone, the freezer cgroup FROZEN.
    // (The race this comes from, a freeze landing between two of runc's own status reads, which
    // makes runc fail with "invalid state transition from stopped to paused", cannot be forced.)
    const id = `${prefix}-frozen-dead`;
    await m.create({ name: id });
    const init = processesOf(id).find((p) => p.nsPid === 1)!;
    process.kill(init.hostPid, 'SIGKILL'); // our own sandbox's init, by its pid
    for (let i = 0; i < 200 && processesOf(id).length; i++) await new Promise((r) => setTimeout(r, 10));
    fs.writeFileSync(freezerStateFile(id), 'FROZEN');
    await m.stop(id);
    assert.equal((await m.status(id)).status, 'missing');
    await m.remove(id);
    assert.deepEqual(await leftovers(m, id), []);
  });

  test('20 sandboxes created and removed concurrently leave nothing behind', async () => {
    const ids = Array.from({ length: 20 }, (_, i) => `${prefix}-c${i}`);
    await Promise.all(ids.map((name) => m.create({ name })));
    const results = await Promise.all(ids.map((id) => m.exec(id, 'hostname')));
    assert.deepEqual(results.map((r) => r.stdout.trim()), ids);
    await Promise.all(ids.map((id) => m.remove(id)));
    for (const id of ids) assert.deepEqual(await leftovers(m, id), [], id);
  });

  test('bad input gives typed errors', async () => {
    await assert.rejects(m.create({ name: 'Bad Name' }), { code: 'INVALID_NAME' });
    await assert.rejects(m.exec(`${prefix}-nope`, 'true'), { code: 'SANDBOX_NOT_FOUND' });
    await m.create({ name: `${prefix}-dup` });
    await assert.rejects(m.create({ name: `${prefix}-dup` }), { code: 'SANDBOX_EXISTS' });
    await m.stop(`${prefix}-dup`);
    await assert.rejects(m.exec(`${prefix}-dup`, 'true'), { code: 'SANDBOX_NOT_RUNNING' });
  });
});

function isZombie(pid: number): boolean {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).startsWith('Z');
  } catch {
    return false; // gone
  }
}
