/* The eBPF inspector against real processes in a real cgroup v2 (needs root, tracefs, the helper). */
import assert from 'node:assert/strict';
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, rm, rmdir, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { DEFAULT_HELPER, EbpfInspector } from '../../../src/inspector/ebpf-inspector.js';
import { decideGranularity } from '../../../src/inspector/granularity.js';
import { cgroupPids, diffSnapshots, probeCgroup } from '../../../src/inspector/process-probe.js';
import { rootOnly, testPrefix } from '../../support/root.js';

const UNIFIED = '/sys/fs/cgroup/unified';
const opts = rootOnly().skip ? rootOnly() : existsSync(DEFAULT_HELPER) ? {} : { skip: 'native helper not built (make -C native)' };

/** A bash that reads commands from stdin, moved into the cgroup before it runs any. */
class Shell {
  private out = '';
  private n = 0;
  readonly child: ChildProcessWithoutNullStreams;
  constructor(cwd: string) {
    this.child = spawn('bash', ['--noprofile', '--norc', '-s'], { cwd, stdio: ['pipe', 'pipe', 'pipe'] });
    this.child.stdout.on('data', (b: Buffer) => (this.out += b.toString()));
    this.child.stderr.on('data', () => undefined);
  }
  get pid(): number {
    return this.child.pid!;
  }
  /** Runs a command line and resolves with its output, once the shell printed the marker. */
  async run(cmd: string, timeoutMs = 10_000): Promise<string> {
    const marker = `__crab_done_${++this.n}__`;
    const start = this.out.length;
    this.child.stdin.write(`${cmd}\necho ${marker}\n`);
    const t0 = Date.now();
    while (!this.out.includes(marker, start)) {
      if (Date.now() - t0 > timeoutMs) throw new Error(`shell command timed out: ${cmd}`);
      await new Promise((r) => setTimeout(r, 5));
    }
    const s = this.out.slice(start, this.out.indexOf(marker, start));
    return s.trim();
  }
}

describe('EbpfInspector on a cgroup', opts, () => {
  const prefix = testPrefix('insp');
  const cg = path.join(UNIFIED, prefix);
  let work = '';
  let ins: EbpfInspector;
  let sh: Shell;
  const spawnedPids: number[] = [];

  before(async () => {
    await mkdir(cg);
    work = await mkdtemp(path.join(os.tmpdir(), `${prefix}-`));
    await writeFile(path.join(work, 'pre'), 'existing\n');
    ins = new EbpfInspector();
    await ins.add(prefix, { path: cg });
    sh = new Shell(work);
    await writeFile(path.join(cg, 'cgroup.procs'), String(sh.pid)); // before it runs anything
    await sh.run('true');
    await ins.effects(prefix); // the first boundary
  });

  after(async () => {
    // kill only what we started: the shell's background children (by pid), then the shell
    for (const pid of spawnedPids) if (Number.isInteger(pid) && pid > 1) try { process.kill(pid, 'SIGKILL'); } catch { /* gone */ }
    if (sh?.child.pid && sh.child.exitCode === null) {
      const exited = new Promise((r) => sh.child.once('exit', r));
      sh.child.kill('SIGKILL');
      await exited;
    }
    await ins?.remove(prefix).catch(() => undefined);
    await ins?.close();
    for (let i = 0; i < 50; i++) {
      try {
        await rmdir(cg);
        break;
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code === 'ENOENT') break;
        await new Promise((r) => setTimeout(r, 20));
      }
    }
    if (work) await rm(work, { recursive: true, force: true });
  });

  test('a read-only turn (ls, cat, grep) reports nothing', async () => {
    await sh.run('ls -la >/dev/null; cat pre >/dev/null; grep -r existing . >/dev/null; ls /tmp | head -1 >/dev/null; find . -name pre >/dev/null');
    const e = await ins.effects(prefix);
    assert.equal(e.unknown, null);
    assert.deepEqual(e.fs.changedPaths, []);
    assert.equal(e.fs.unresolved, 0);
    assert.equal(e.processes.started, 0);
    assert.equal(e.processes.exited, 0);
    assert.equal(e.processes.changed, false);
    assert.ok((e.processes.forks ?? 0) >= 5, 'the short-lived processes were seen, and cancelled');
    assert.deepEqual(e.external, []);
    assert.equal(decideGranularity({ first: false, effects: e }).granularity, 'skip');
  });

  test('echo x > f reports f', async () => {
    await sh.run('echo x > f');
    const e = await ins.effects(prefix);
    assert.deepEqual(e.fs.changedPaths, [path.join(work, 'f')]);
    assert.equal(e.fs.changes[0]!.op, 'created');
    assert.equal(e.fs.unresolved, 0, 'the write through the redirected fd is resolved in the kernel');
    assert.ok(e.fs.bytesWritten >= 2);
    assert.equal(decideGranularity({ first: false, effects: e }).granularity, 'fs');
  });

  test('writes in a loop give one path; an existing file appended to is modified', async () => {
    await sh.run('for i in $(seq 1 200); do echo line$i >> pre; done');
    const e = await ins.effects(prefix);
    assert.deepEqual(e.fs.changes, [{ path: path.join(work, 'pre'), op: 'modified' }]);
  });

  test('create + delete in the same turn reports nothing', async () => {
    await sh.run('echo y > tmp1; rm tmp1; mkdir dd; touch dd/x; mv dd/x dd/y; rm -r dd; touch t2; rm -f t2');
    const e = await ins.effects(prefix);
    assert.deepEqual(e.fs.changedPaths, []);
    assert.equal(e.unknown, null);
  });

  test('every file written or chmod-ed through reused fds and struct files is reported', async () => {
    await sh.run('mkdir re && for i in $(seq 1 20); do echo $i > re/e$i; echo $i > re/r$i; done');
    await ins.effects(prefix);
    // each round frees a struct file (and a dentry: tmp is removed) just before opening the next one
    await sh.run('for i in $(seq 1 20); do echo a > tmp; rm tmp; exec 4<>re/e$i; echo z >&4; exec 4>&-; done');
    const py = 'import os\nfor i in range(1, 21):\n    fd = os.open("re/r%d" % i, os.O_RDONLY)\n    os.fchmod(fd, 0o600)\n    os.close(fd)';
    await sh.run(`python3 -c '${py}'`);
    const e = await ins.effects(prefix);
    const want = [...Array.from({ length: 20 }, (_, i) => `re/e${i + 1}`), ...Array.from({ length: 20 }, (_, i) => `re/r${i + 1}`)];
    assert.deepEqual(e.fs.changedPaths, want.map((p) => path.join(work, p)).sort());
    assert.equal(e.unknown, null);
    await sh.run('rm -r re');
    await ins.effects(prefix);
  });

  test('mv reports both paths', async () => {
    await sh.run('mv f g');
    const e = await ins.effects(prefix);
    assert.deepEqual(e.fs.changes, [
      { path: path.join(work, 'f'), op: 'removed' },
      { path: path.join(work, 'g'), op: 'modified' },
    ]);
  });

  test('relative paths after cd, in a subshell and with *at syscalls resolve inside the root', async () => {
    await sh.run('mkdir -p sub/deeper && cd sub && (cd deeper && echo z > z) && ln -s z ../lnk && chmod 600 ../g && cd ..');
    const e = await ins.effects(prefix);
    assert.deepEqual(e.fs.changedPaths, ['g', 'lnk', 'sub', 'sub/deeper', 'sub/deeper/z'].map((p) => path.join(work, p)));
  });

  test('sleep 100 & reports a process started; killing it later reports it exited', async () => {
    const pid = Number(await sh.run('sleep 100 & echo $!'));
    spawnedPids.push(pid);
    const e = await ins.effects(prefix);
    assert.equal(e.processes.started, 1);
    assert.deepEqual(e.processes.pids?.started, [pid]);
    assert.equal(decideGranularity({ first: false, effects: e }).granularity, 'process');
    assert.ok((await cgroupPids(cg)).includes(pid));

    await sh.run(`kill ${pid}; wait ${pid} 2>/dev/null; true`);
    const e2 = await ins.effects(prefix);
    assert.equal(e2.processes.exited, 1);
    assert.deepEqual(e2.processes.pids?.exited, [pid]);
  });

  test('connect to a non-loopback address is external; loopback is not', async () => {
    const node = process.execPath;
    const js = (host: string, port: number) =>
      `const s=require('net').connect({host:'${host}',port:${port}});s.on('error',()=>{});setTimeout(()=>process.exit(0),300)`;
    await sh.run(`${node} -e "${js('127.0.0.1', 1)}"; timeout 1 ${node} -e "${js('10.255.255.1', 80)}"; true`);
    const e = await ins.effects(prefix);
    assert.deepEqual(
      e.external.map((x) => `${x.kind} ${x.addr}:${x.port}`),
      ['connect 10.255.255.1:80'],
    );
    assert.deepEqual(e.fs.changedPaths, []);
  });

  test('a listening socket is reported', async () => {
    const node = process.execPath;
    await sh.run(`${node} -e "require('net').createServer().listen(0,'127.0.0.1',()=>process.exit(0))"`);
    const e = await ins.effects(prefix);
    assert.equal(e.listening.length, 1);
    assert.equal(e.listening[0]!.addr, '127.0.0.1');
    assert.ok(e.listening[0]!.port > 0);
  });

  test('processes outside the cgroup are not seen', async () => {
    await writeFile(path.join(work, 'outside'), 'x');
    await new Promise<void>((resolve, reject) => {
      const c = spawn('sh', ['-c', `touch ${work}/outside2; rm -f ${work}/pre; sleep 0.1`]);
      c.on('exit', () => resolve());
      c.on('error', reject);
    });
    const e = await ins.effects(prefix);
    assert.deepEqual(e.fs.changedPaths, []);
    assert.equal(e.processes.forks, 0);
    assert.equal(e.events ?? 0, 0);
  });

  test('process probe: the shell ran; ignorePids leaves it out', async () => {
    const a = await probeCgroup(cg);
    assert.ok(a.procs[sh.pid]);
    await sh.run('for i in $(seq 1 2000); do :; done');
    const b = await probeCgroup(cg);
    const d = diffSnapshots(a, b);
    assert.deepEqual(d.ran, [sh.pid]);
    assert.equal(d.changed, true);
    const a2 = await probeCgroup(cg, { ignorePids: [sh.pid] });
    await sh.run('for i in $(seq 1 2000); do :; done');
    const b2 = await probeCgroup(cg, { ignorePids: [sh.pid] });
    assert.equal(diffSnapshots(a2, b2).changed, false);
    await ins.effects(prefix);
  });

  test('helper stats count events', async () => {
    const s = await ins.stats();
    assert.ok(Number(s.events) > 0);
    assert.equal(s.bpf, true);
  });
});
