import test, { after, before, describe } from 'node:test';
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { rootOnly, testPrefix } from '../../support/root.js';
import { paths, removeByPrefix } from '../../support/sandboxes.js';
import { rootLogger } from '../../../src/core/log.js';
import { CrabHost } from '../../../src/daemon/host.js';

/**
 * Pollers whose memory changes with the clock alone (an idle http.server, a time.sleep loop) cost
 * no process checkpoint; anything that reaches them — a request, a signal, a pipe, a write of
 * theirs — still does. Real sandbox, eBPF inspector, CRIU.
 */
describe('time-only pollers (real sandbox, inspector, CRIU)', rootOnly(), () => {
  const prefix = testPrefix('timeonly');
  let host: CrabHost;
  before(async () => {
    host = await CrabHost.start({ paths, log: rootLogger });
  });
  after(async () => {
    await removeByPrefix(host.service.sandboxes, prefix);
    await host.close();
  });

  /** A crab-mode sandbox with python3, a session shell `s` and boundaries numbered from `turn`. */
  async function sandbox(id: string) {
    await host.service.createSandbox({ name: id, packages: ['python3', 'procps'] });
    host.setMode(id, 'crab');
    const t = {
      turn: 0,
      s: async (cmd: string) => {
        const r = await host.service.exec(id, cmd, { session: 'main' });
        assert.equal(r.exitCode, 0, `${cmd}: ${r.stderr}`);
      },
      boundary: async () => {
        const r = await host.boundary(id, t.turn++);
        assert.ok(r.value, `boundary ${t.turn - 1}: ${r.outcome} ${r.errors?.join(';')}`);
        const probe = (r.value.checkpoint?.checkpoint.effects as { probe?: { timeOnly?: unknown } } | undefined)?.probe;
        return { decision: r.value.decision, reasons: `${r.value.reasons.join('+')} ${JSON.stringify(probe?.timeOnly ?? null)}` };
      },
    };
    return t;
  }

  test('idle pollers skip; a request, a signal, a pipe write or the poller writing take a process checkpoint', async () => {
    const id = `${prefix}-a`;
    const { s, boundary } = await sandbox(id);
    await s(`mkdir -p /w && cd /w && cat > poll.py <<'EOF'
import signal, sys, time
n = 0
def on_usr1(sig, frame):
    global n
    n += 1000
signal.signal(signal.SIGUSR1, on_usr1)
while True:
    n += 1
    time.sleep(0.05)
EOF
mkfifo /w/fifo`);
    assert.equal((await boundary()).decision, 'full');
    await s('python3 -m http.server 8099 --bind 127.0.0.1 >/dev/null 2>&1 & python3 poll.py >/dev/null 2>&1 & python3 -c "import time; f=open(\'/w/fifo\'); [time.sleep(0.05) or f.read(1) for _ in iter(int, 1)]" >/dev/null 2>&1 & sleep 1');
    assert.equal((await boundary()).decision, 'process'); // three pollers started
    // Idle turns: the pollers ran and their memory changed, but only the clock reached them.
    for (let i = 0; i < 2; i++) {
      await s('ls /w >/dev/null; cat /w/poll.py >/dev/null');
      await sleep(600);
      const b = await boundary();
      assert.equal(b.decision, 'skip', `idle turn ${i}: ${b.decision} (${b.reasons})`);
      assert.match(b.reasons, /time-only/);
    }
    // A file written next to idle pollers: files only.
    await s('echo x > /w/note');
    await sleep(300);
    assert.equal((await boundary()).decision, 'fs');
    // A request to the server: its memory now holds the request's effects.
    await s(`python3 -c 'import urllib.request as u; u.urlopen("http://127.0.0.1:8099/", timeout=5).read()'`);
    let b = await boundary();
    assert.equal(b.decision, 'process', `request: ${b.reasons}`);
    await sleep(300);
    assert.equal((await boundary()).decision, 'skip');
    // A signal to the sleep loop.
    await s('kill -USR1 $(pgrep -f poll.py)');
    await sleep(200);
    b = await boundary();
    assert.equal(b.decision, 'process', `signal: ${b.reasons}`);
    // kill -0 only tests that a process exists.
    await s('kill -0 $(pgrep -f poll.py)');
    await sleep(200);
    assert.equal((await boundary()).decision, 'skip');
    // A write into the loop's memory through /proc (the same byte back: still an interaction).
    await s(`P=$(pgrep -f poll.py); A=$(awk '/\\[heap\\]/{split($1,a,"-"); print a[1]; exit}' /proc/$P/maps); python3 -c "f=open('/proc/$P/mem','r+b',buffering=0); a=int('$A',16); f.seek(a); b=f.read(1); f.seek(a); f.write(b)"`);
    await sleep(200);
    b = await boundary();
    assert.equal(b.decision, 'process', `/proc/PID/mem: ${b.reasons}`);
    // Bytes through the FIFO: the reader consumed input.
    await s('echo z > /w/fifo');
    await sleep(300);
    b = await boundary();
    assert.equal(b.decision, 'process', `fifo: ${b.reasons}`);
    const cks = await host.checkpointer.catalog.listCheckpoints(id);
    const timeOnly = cks.filter((c) => JSON.stringify(c.effects).includes('time-only'));
    assert.ok(timeOnly.length >= 1, 'the fs checkpoint records the time-only pollers');
  });

  test('after a recovery the restored processes are judged against their checkpoint: no full checkpoint, idle turns skip again', async () => {
    const id = `${prefix}-r`;
    const t = await sandbox(id);
    const { s } = t;
    const boundary = async () => {
      const b = await t.boundary();
      return `${b.decision} ${b.reasons}`;
    };
    await s('mkdir -p /w && cd /w && echo 1 > a');
    assert.match(await boundary(), /^full/);
    await s('sleep 600 >/dev/null 2>&1 & sleep 0.2');
    assert.match(await boundary(), /^process/);
    await s('cat a');
    assert.match(await boundary(), /^skip/);
    await host.service.stopSandbox(id);
    const rec = await host.recover(id);
    t.turn = (rec.turn ?? 0) + 1;
    // Nothing happened since the restore: the writable layer is rescanned (an fs checkpoint of no
    // new files), the idle `sleep` and the shell compare equal to their checkpoint.
    await s('cat a');
    assert.match(await boundary(), /^fs after-restore/);
    await s('cat a; jobs');
    assert.match(await boundary(), /^skip/);
    await s('echo 2 >> a');
    assert.match(await boundary(), /^fs/);
    await s('kill %1; wait %1 2>/dev/null; true');
    assert.match(await boundary(), /^process/);
  });
});
