import test from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { replayScript, stateSections } from '../../../src/sandbox/shell-replay.js';
import { SESSION_SHELL, sessionStateFunction } from '../../../src/sandbox/channel.js';

/**
 * Runs `steps` in one bash (as the session shell runs commands: sourced, then `__crab_state`)
 * and returns the state text after each step. Bash on the host is the sandbox's (Debian 12).
 */
function statesAfter(dir: string, steps: readonly string[]): string[] {
  try {
    const lines = [sessionStateFunction(dir)];
    steps.forEach((step, i) => {
      fs.writeFileSync(path.join(dir, `step${i}`), step + '\n');
      lines.push(`source ${dir}/step${i} </dev/null >/dev/null 2>&1; __crab_state; cp ${dir}/state.raw ${dir}/out${i}`);
    });
    const [bash, ...args] = SESSION_SHELL.split(' ');
    execFileSync(bash!, args, { input: lines.join('\n') + '\n', cwd: '/', env: { PATH: process.env.PATH!, HOME: '/root', LANG: 'C.UTF-8' } });
    // PPID is the host's: it differs between two bash runs here (in a sandbox it is init, 1)
    return steps.map((_, i) => fs.readFileSync(path.join(dir, `out${i}`), 'utf8').replace(/^declare -ir PPID=.*\n/m, ''));
  } finally {
    for (const f of fs.readdirSync(dir)) fs.rmSync(path.join(dir, f));
  }
}

/** The state after `setup` then `turn`, and after `setup` then the replay of that turn's change. */
function replayed(setup: string, turn: string): { want: string; got: string; script: string } | { refused: string } {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'crab-replay-'));
  try {
    const [a, b] = statesAfter(dir, [setup, turn]);
    const r = replayScript(a!, b!);
    if ('refused' in r) return r;
    const [, got] = statesAfter(dir, [setup, r.script]);
    return { want: b!, got: got!, script: r.script };
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

test('replayScript: a turn that only changed the shell is replayed exactly', () => {
  const rows: Array<[string, string, string]> = [
    ['cd', 'mkdir -p /tmp', 'cd /tmp'],
    ['cd back and forth: OLDPWD as the image had it, not as the script\'s cd leaves it', 'cd /tmp; cd /', 'cd /usr; cd /tmp; cd /var'],
    ['export', 'true', 'export PROJECT=crab GREETING="hello world"'],
    ['plain variables, quotes and escapes', 'A=1', "A=2; B=\"it's \\\"quoted\\\"\"; C=$'tab\\there'"],
    ['values on several lines', 'true', "M=$'a\\nb'; N=\"c\nd\""],
    ['unset and unexport', 'export X=1 Y=2 Z=3', 'unset X; export -n Y; Z=4'],
    ['exported without a value', 'export V=1', 'unset V; export V'],
    ['functions: defined, changed, removed', 'f() { echo one; }; g() { echo g; }', 'f() { echo two; }; unset -f g; h() { for i in 1 2; do echo $i; done; }'],
    ['aliases', "alias ll='ls -l'", "unalias ll; alias la='ls -a'; alias g='grep --color'"],
    ['options', 'true', 'set -o pipefail; shopt -s nullglob; set -u'],
    ['umask', 'true', 'umask 027'],
    ['all at once, errexit last', 'cd /', 'cd /tmp; export P=1; q() { :; }; alias x=y; umask 077; set -e'],
  ];
  for (const [name, setup, turn] of rows) {
    const r = replayed(setup, turn);
    assert.ok(!('refused' in r), `${name}: refused (${'refused' in r ? r.refused : ''})`);
    assert.equal(r.got, r.want, `${name}: script\n${r.script}`);
  }
});

test('replayScript: what a script cannot set exactly is refused', () => {
  const rows: Array<[string, string, string, RegExp]> = [
    ['an array', 'true', 'arr=(a b c)', /arr is not a plain scalar/],
    ['an integer', 'true', 'declare -i n=5', /n is not a plain scalar/],
    ['a readonly variable', 'true', 'readonly R=1', /R is not a plain scalar/],
    ['a trap', 'true', "trap 'echo bye' EXIT", /traps changed/],
    ['an exported function', 'f() { :; }', 'export -f f', /function exported/],
    ['a job', 'true', 'sleep 0.5 &', /job table/],
    ['an option that changes how the shell reads', 'true', 'set -o posix', /option posix|traps changed/],
  ];
  for (const [name, setup, turn, why] of rows) {
    const r = replayed(setup, turn);
    assert.ok('refused' in r, `${name}: replayed`);
    assert.match(r.refused, why, name);
  }
});

test('stateSections: the parts by name; a text of the older format has none', () => {
  assert.deepEqual([...stateSections('\x1ecwd\n/tmp\n\x1evars\ndeclare -- A="1"\n\n')!.entries()], [['cwd', ['/tmp']], ['vars', ['declare -- A="1"']]]);
  assert.equal(stateSections('/tmp\n/work\ndeclare -- A="1"\n'), null);
  assert.deepEqual(replayScript('/tmp\n', '\x1ecwd\n/\n'), { refused: 'a state text without parts (an older session shell)' });
});
