/**
 * `crab gc` against another process's live scratch: staging dirs and tmp entries of a live
 * owner, a sandbox another process is still creating, cgroups of another CRAB_HOME. Each test
 * uses a CRAB_HOME of its own (a temp dir), so gc never touches anyone else's state; the "other
 * process" is a child of this test, stopped by its pid.
 */
import test, { after, before, describe } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { rootOnly, testPrefix } from '../support/root.js';
import { REPO_ROOT, crabPaths, type CrabPaths } from '../../src/core/paths.js';
import { SandboxManager } from '../../src/sandbox/sandbox-manager.js';
import { ownerMark, processStartTicks, type ProcessIdentity } from '../../src/core/owner.js';

const HOUR = 60 * 60 * 1000;

function identity(pid: number): ProcessIdentity {
  const startTicks = processStartTicks(pid);
  assert.ok(startTicks !== null, `process ${pid} runs`);
  return { pid, startTicks };
}

/** An entry with a canary file in it, `ageMs` old. */
function entry(p: string, ageMs = 0): string {
  fs.mkdirSync(p, { recursive: true });
  fs.writeFileSync(path.join(p, 'canary'), 'work in progress\n');
  const t = new Date(Date.now() - ageMs);
  fs.utimesSync(p, t, t);
  return p;
}

describe('crab gc and other processes\' live scratch (own CRAB_HOME)', rootOnly(), () => {
  const prefix = testPrefix('atk-gc');
  let base: string;
  let paths: CrabPaths;
  let live: ChildProcess;
  let liveId: ProcessIdentity;
  let deadId: ProcessIdentity;
  before(() => {
    base = fs.mkdtempSync(path.join(os.tmpdir(), `${prefix}-`));
    paths = crabPaths(path.join(base, 'home'));
    live = spawn('sleep', ['600'], { stdio: 'ignore' });
    liveId = identity(live.pid!);
    // A process that ran and is gone: its identity names no live process any more.
    const gone = spawnSync(process.execPath, ['-e', 'const fs=require("fs");const s=fs.readFileSync("/proc/self/stat","utf8");process.stdout.write(process.pid+" "+s.slice(s.lastIndexOf(")")+2).split(" ")[19])']);
    const [pid, ticks] = gone.stdout.toString().split(' ').map(Number);
    deadId = { pid: pid!, startTicks: ticks! };
  });
  after(() => {
    if (live?.pid && live.pid > 1 && live.exitCode === null) live.kill('SIGKILL');
    fs.rmSync(base, { recursive: true, force: true });
  });

  test('staging and tmp entries: kept while their owner lives (unless older than an hour), removed once it is gone', async () => {
    const m = new SandboxManager(paths);
    const img = (n: string, id: ProcessIdentity | null, age = 0) => entry(path.join(paths.images, `.staging-${n}${id ? ownerMark(id) : '-'}abc123`), age);
    const tmp = (n: string, id: ProcessIdentity | null, age = 0) => entry(path.join(paths.tmp, `${n}${id ? ownerMark(id) : ''}`), age);
    const keep = [img('live', liveId), tmp('live', liveId), img('young-unmarked', null, 5 * 60_000), tmp('young-unmarked', null)];
    const drop = [img('dead', deadId), tmp('dead', deadId), img('old-live', liveId, 2 * HOUR), img('old-unmarked', null, 2 * HOUR), tmp('old-unmarked', null, 2 * HOUR)];
    const published = entry(path.join(paths.images, 'some-image'), 3 * HOUR);
    const rep = await m.gc();
    for (const p of keep) assert.equal(fs.readFileSync(path.join(p, 'canary'), 'utf8'), 'work in progress\n', `kept: ${path.basename(p)}`);
    for (const p of drop) assert.ok(!fs.existsSync(p), `removed: ${path.basename(p)}`);
    assert.deepEqual(rep.removedStaging.sort(), drop.sort());
    assert.ok(fs.existsSync(published), 'a published image is no staging entry');
    assert.deepEqual(rep.problems, []);
  });

  test('a sandbox another live process is creating (no record yet) is left alone; one whose creator died is removed', async () => {
    const m = new SandboxManager(paths);
    const making = `${prefix}-making`;
    const crashed = `${prefix}-crashed`;
    for (const [id, who] of [
      [making, liveId],
      [crashed, deadId],
    ] as const) {
      const d = m.dirs(id);
      entry(path.join(d.root, 'upper'));
      fs.writeFileSync(d.owner, `${who.pid} ${who.startTicks}\n`);
    }
    const rep = await m.gc();
    assert.ok(fs.existsSync(path.join(m.dirs(making).root, 'upper', 'canary')), 'the live creation is untouched');
    assert.ok(rep.removedSandboxes.includes(crashed) && !fs.existsSync(m.dirs(crashed).root), 'the crashed creation is removed');
    assert.ok(!rep.removedSandboxes.includes(making));
  });

  test("cgroups of sandboxes this CRAB_HOME does not know are not this gc's", async () => {
    const m = new SandboxManager(paths);
    // A sandbox of another CRAB_HOME, between runc's cgroup setup and its first process.
    const foreign = `${prefix}-foreign`;
    const dir = `/sys/fs/cgroup/pids/crab/${foreign}`;
    fs.mkdirSync(dir, { recursive: true });
    try {
      const rep = await m.gc();
      assert.ok(fs.existsSync(dir), 'the foreign cgroup is still there');
      assert.ok(!rep.removedCgroups.includes(foreign));
    } finally {
      fs.rmdirSync(dir);
    }
  });

  test('`crab gc` from the CLI on this CRAB_HOME: same rules, and the run leaves its own home private', () => {
    const p = entry(path.join(paths.images, `.staging-cli${ownerMark(liveId)}xyz`));
    const r = spawnSync(process.execPath, [path.join(REPO_ROOT, 'dist/src/cli/main.js'), 'gc', '--json'], { env: { ...process.env, CRAB_HOME: paths.home, CRAB_NO_DAEMON: '1' }, encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    assert.ok(fs.existsSync(path.join(p, 'canary')), 'a live owner\'s staging dir is kept');
    assert.equal(fs.statSync(paths.home).mode & 0o777, 0o700, 'CRAB_HOME is 0700');
    for (const n of fs.readdirSync(paths.home)) assert.equal(fs.statSync(path.join(paths.home, n)).mode & 0o077, 0, `${n} is private`);
  });
});
