/**
 * Ground truth for the inspector (issue 5): real agent-style commands run in a real sandbox; each
 * command's true effect is computed independently of the inspector — a full diff of the writable
 * layer, the process list (pid + start time) and memory digests of the processes, and the session
 * shell's state — and compared with the decision taken at the next turn boundary.
 * A false "nothing" (skip while something changed) fails the test; false positives are listed.
 *
 * A process whose memory changed although nothing but the clock reached it (its read and write
 * counters and the namespace's packet counters unchanged, measured here from /proc) is a
 * time-only poller: restoring its older image is a delay, so the truth calls that "clock", not
 * "changed" (see src/inspector/time-only.ts).
 *
 * Decisions documented here: pytest's cache (.pytest_cache) and Python's __pycache__ are real file
 * writes and count as effects (a restore without them is still correct, but Crab does not guess
 * which files matter); `-p no:cacheprovider` with PYTHONDONTWRITEBYTECODE=1 writes nothing.
 */
import test, { after, before, describe } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { rootOnly, testPrefix } from '../../support/root.js';
import { paths, removeByPrefix } from '../../support/sandboxes.js';
import { rootLogger } from '../../../src/core/log.js';
import { CrabHost } from '../../../src/daemon/host.js';
import { upperEntries } from '../../../src/bench/final-state.js';
import { processesOf } from '../../../src/sandbox/cgroup.js';
import { memoryDigest, netCountersDigest, parseIo } from '../../../src/inspector/process-probe.js';

type Expect = 'nothing' | 'files' | 'processes';

// [command, what it really does (for the reader; the truth is measured, not taken from here)]
const COMMANDS: Array<[string, Expect]> = [
  ['mkdir -p /work/proj && cd /work/proj && git init -q && git config user.email a@b && git config user.name a', 'files'],
  ["printf 'def add(a, b):\\n    return a + b\\n' > calc.py", 'files'],
  ["printf 'from calc import add\\ndef test_add():\\n    assert add(1, 2) == 3\\n' > test_calc.py", 'files'],
  ['ls -la', 'nothing'],
  ['cat calc.py', 'nothing'],
  ['grep -rn add .', 'nothing'],
  ['git status --short', 'nothing'],
  ['find . -name "*.py"', 'nothing'],
  ['python3 -c "print(1)"', 'nothing'],
  ['wc -l calc.py test_calc.py; head -1 calc.py; sed -n 2p calc.py', 'nothing'],
  ['PYTHONDONTWRITEBYTECODE=1 python3 -m pytest -q -p no:cacheprovider', 'nothing'],
  ['python3 -m pytest -q', 'files'],
  ['echo "# note" >> calc.py', 'files'],
  ["sed -i 's/a + b/b + a/' calc.py", 'files'],
  ['echo hello | tee greeting.txt', 'files'],
  ['cp calc.py calc_backup.py', 'files'],
  ['mv calc_backup.py old_calc.py', 'files'],
  ['rm old_calc.py', 'files'],
  ['mkdir -p build/out', 'files'],
  ['chmod 600 greeting.txt', 'files'],
  ['tar -cf /tmp/p.tar calc.py greeting.txt && mkdir -p /work/x && tar -xf /tmp/p.tar -C /work/x', 'files'],
  ['git add -A && git commit -qm init', 'files'],
  ['git log --oneline | head -3', 'nothing'],
  ['mkdir -p /usr/local/lib/python3.11/dist-packages/mylib && echo "X = 1" > /usr/local/lib/python3.11/dist-packages/mylib/__init__.py', 'files'],
  ['python3 -B -c "import mylib; print(mylib.X)"', 'nothing'],
  ['sqlite3 /work/db.sqlite "create table t(a); insert into t values (1);"', 'files'],
  ['sqlite3 /work/db.sqlite "select count(*) from t;"', 'nothing'],
  ["printf 'int main(){return 0;}\\n' > /work/m.c && gcc -o /work/m /work/m.c", 'files'],
  ['/work/m; echo $?', 'nothing'],
  ['touch /tmp/scratch && rm /tmp/scratch', 'nothing'],
  ['sleep 600 &', 'processes'],
  ['jobs', 'nothing'],
  ['nohup python3 -m http.server 8111 --bind 127.0.0.1 >/tmp/srv.log 2>&1 &', 'processes'],
  ['sleep 1; python3 -c "import urllib.request;print(urllib.request.urlopen(\'http://127.0.0.1:8111/\').status)"', 'processes'],
  ['kill %1', 'processes'],
  ['cd /work', 'processes'],
  ['export PROJECT=crab', 'processes'],
  ['greet() { echo hi; }', 'processes'],
  ['alias ll="ls -l"', 'processes'],
  ['echo $PROJECT; greet; pwd', 'nothing'],
  ['REPL_VAR=42', 'processes'],
  ['echo $REPL_VAR', 'nothing'],
  ['cat /etc/os-release > /dev/null; ls /usr/bin | wc -l', 'nothing'],
];

interface Truth {
  files: Record<string, string>;
  /** Memory digest and read/write counters by nsPid@startTime. */
  procs: Map<string, { mem: string | undefined; io: string }>;
  shell: string | null;
  net: string | null;
}

describe('inspector ground truth (real sandbox, eBPF helper, CRIU)', rootOnly(), () => {
  const prefix = testPrefix('gt');
  let host: CrabHost;
  before(async () => {
    host = await CrabHost.start({ paths, log: rootLogger });
    assert.ok(host.inspector, 'the eBPF helper is built and running');
  });
  after(async () => {
    await removeByPrefix(host.service.sandboxes, prefix);
    await host.close();
  });

  async function truth(id: string): Promise<Truth> {
    const m = host.service.sandboxes;
    const ch = m.channel(id);
    const crabNs = new Set([1, ...ch.sessions().map((s) => ch.sessionPid(s))]);
    const procs = new Map<string, { mem: string | undefined; io: string }>();
    let net: string | null = null;
    for (const p of processesOf(id)) {
      if (crabNs.has(p.nsPid)) continue;
      let start: string;
      try {
        const stat = fs.readFileSync(`/proc/${p.hostPid}/stat`, 'utf8');
        start = stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19]!;
      } catch {
        continue; // exited
      }
      const io = JSON.stringify(parseIo(fs.readFileSync(`/proc/${p.hostPid}/io`, 'utf8')));
      procs.set(`${p.nsPid}@${start}`, { mem: (await memoryDigest(p.hostPid, 512 << 20))?.digest, io });
      net ??= await netCountersDigest(p.hostPid);
    }
    const files = await upperEntries(m.dirs(id).upper);
    for (const k of Object.keys(files)) if (k === 'run' || k.startsWith('run/crab')) delete files[k];
    return { files, procs, shell: ch.sessionState('main'), net };
  }

  function changed(a: Truth, b: Truth): string[] {
    const why: string[] = [];
    for (const p of new Set([...Object.keys(a.files), ...Object.keys(b.files)])) if (a.files[p] !== b.files[p]) why.push(`file ${p}`);
    for (const k of new Set([...a.procs.keys(), ...b.procs.keys()])) {
      if (!a.procs.has(k) || !b.procs.has(k)) why.push(`process ${k} ${a.procs.has(k) ? 'exited' : 'started'}`);
      else if (a.procs.get(k)!.mem !== b.procs.get(k)!.mem) {
        const clockOnly = a.procs.get(k)!.io === b.procs.get(k)!.io && a.net !== null && a.net === b.net;
        if (!clockOnly) why.push(`process ${k} memory`);
      }
    }
    if (a.shell !== b.shell) why.push('shell state');
    return why;
  }

  test(`${COMMANDS.length} agent-style commands: no false "nothing"`, async () => {
    const id = `${prefix}-sb`;
    await host.service.createSandbox({ name: id, packages: ['python3', 'python3-pytest', 'git', 'sqlite3', 'gcc', 'libc6-dev'] });
    await host.service.exec(id, 'true', { session: 'main' });
    let turn = 0;
    await host.controller.onBoundary(id, turn++);
    const falseNothing: string[] = [];
    const falsePositive: string[] = [];
    const rows: string[] = [];
    for (const [cmd] of COMMANDS) {
      const before = await truth(id);
      const r = await host.service.exec(id, cmd, { session: 'main', timeoutMs: 60_000 });
      assert.notEqual(r.timedOut, true, cmd);
      const afterState = await truth(id);
      const why = changed(before, afterState);
      const b = await host.controller.onBoundary(id, turn++);
      rows.push(`${b.decision.padEnd(7)} truth=${why.length ? 'changed' : 'nothing'}  ${cmd.slice(0, 70)}${why.length ? `  [${why.slice(0, 2).join(', ')}]` : ''}`);
      if (why.length && b.decision === 'skip') falseNothing.push(`${cmd}: ${why.join(', ')}`);
      if (!why.length && b.decision !== 'skip') falsePositive.push(`${cmd}: ${b.decision} (${b.reasons.join(', ')})`);
    }
    console.log(rows.map((r) => `# ${r}`).join('\n'));
    console.log(`# false "nothing": ${falseNothing.length}; false positives: ${falsePositive.length} of ${COMMANDS.length}`);
    for (const f of falsePositive) console.log(`#   false positive: ${f}`);
    assert.deepEqual(falseNothing, [], 'the inspector never says nothing when something changed');
  });
});
