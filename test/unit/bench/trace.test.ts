import test from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { CrabError } from '../../../src/core/errors.js';
import { loadTrace, loadTraces, parseTrace } from '../../../src/bench/trace.js';
import { actionIsReadOnly, profileTrace } from '../../../src/bench/trace-effects.js';

/** Repository root, from src (test/unit/bench) or from the build (dist/test/unit/bench). */
async function repoRoot(): Promise<string> {
  let dir = path.dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 6; i++) {
    try {
      await fs.access(path.join(dir, 'package.json'));
      await fs.access(path.join(dir, 'traces'));
      return dir;
    } catch {
      dir = path.dirname(dir);
    }
  }
  throw new Error('repository root with traces/ not found');
}

const H = {
  format: 'crab-trace/1',
  name: 't',
  source: 'unit test',
  image: { base: 'debian-bookworm-minbase', packages: ['python3', 'g++', 'libc6-dev'] },
  shell: 'persistent',
  setup: ['mkdir -p /work'],
  verify: [{ cmd: 'true' }],
};
const T = (n: number, extra: Record<string, unknown> = {}) => ({
  turn: n,
  llm: { latency_ms: 1500, prompt_tokens: 2000, completion_tokens: 60 },
  actions: [{ cmd: 'ls' }],
  ...extra,
});
const lines = (...xs: unknown[]) => xs.map((x) => (typeof x === 'string' ? x : JSON.stringify(x))).join('\n');

test('a good trace parses, with defaults filled in', () => {
  const t = parseTrace(lines({ format: 'crab-trace/1', name: 'n', source: 's', image: { base: 'debian-bookworm-minbase', packages: [] } }, T(1), T(2)) + '\n\n\n', 'x.trace.jsonl');
  assert.equal(t.file, 'x.trace.jsonl');
  assert.equal(t.header.shell, 'persistent');
  assert.deepEqual(t.header.setup, []);
  assert.deepEqual(t.header.verify, []);
  assert.equal(t.turns.length, 2);
  assert.equal(t.turns[0]!.actions[0]!.timeout_s, 60);
  assert.equal(t.turns[0]!.actions[0]!.expect_exit, undefined);
});

test('good variants: fresh shell, verify defaults, CRLF, BOM, optional fields', () => {
  const t = parseTrace(
    '\uFEFF' +
      lines({ ...H, shell: 'fresh', verify: [{ cmd: 'x', expect_stdout: 'y' }, { cmd: 'make test', timeout_s: 900 }] }, T(1, { actions: [{ cmd: 'a', timeout_s: 1.5, expect_exit: 0, expect_stdout: '' }] }), T(2, { actions: [] })).replace(/\n/g, '\r\n'),
    'y',
  );
  assert.equal(t.header.shell, 'fresh');
  assert.equal(t.header.verify[0]!.expect_exit, 0);
  assert.equal(t.header.verify[0]!.timeout_s, 120, 'a verify command waits 120 s unless it says');
  assert.equal(t.header.verify[1]!.timeout_s, 900);
  assert.equal(t.turns[0]!.actions[0]!.timeout_s, 1.5);
  assert.equal(t.turns[1]!.actions.length, 0);
});

const BAD: Array<{ name: string; text: string; line: number; field: string; says?: RegExp }> = [
  { name: 'empty file', text: '', line: 1, field: 'header', says: /empty/ },
  { name: 'header only', text: lines(H), line: 2, field: 'turns', says: /at least one turn/ },
  { name: 'wrong format', text: lines({ ...H, format: 'crab-trace/2' }, T(1)), line: 1, field: 'header.format', says: /crab-trace\/1/ },
  { name: 'no format (a turn on line 1)', text: lines(T(1), T(2)), line: 1, field: 'header.format', says: /line 1 must be the header/ },
  { name: 'header not an object', text: lines([1, 2], T(1)), line: 1, field: 'header', says: /JSON object/ },
  { name: 'bad JSON in header', text: '{"format": "crab-trace/1",\n' + lines(T(1)), line: 1, field: 'header', says: /not valid JSON/ },
  { name: 'bad JSON in a turn', text: lines(H, T(1), '{"turn": 2, "llm": ', T(3)), line: 3, field: 'turns[2]', says: /not valid JSON/ },
  { name: 'blank line in the middle', text: lines(H, T(1), '', T(2)), line: 3, field: 'turns[2]', says: /blank line/ },
  { name: 'wrong base image', text: lines({ ...H, image: { base: 'ubuntu', packages: [] } }, T(1)), line: 1, field: 'header.image.base', says: /debian-bookworm-minbase/ },
  { name: 'bad package name', text: lines({ ...H, image: { base: 'debian-bookworm-minbase', packages: ['python3', 'Bad_Pkg'] } }, T(1)), line: 1, field: 'header.image.packages[1]', says: /Debian package name/ },
  { name: 'one-letter package', text: lines({ ...H, image: { base: 'debian-bookworm-minbase', packages: ['x'] } }, T(1)), line: 1, field: 'header.image.packages[0]' },
  { name: 'name with a path in it', text: lines({ ...H, name: '../../etc/passwd' }, T(1)), line: 1, field: 'header.name', says: /lower-case letters/ },
  { name: 'name with a NUL', text: lines({ ...H, name: 'a\u0000b' }, T(1)), line: 1, field: 'header.name' },
  { name: 'a NUL in a command', text: lines(H, { ...T(1), actions: [{ cmd: 'ls\u0000x' }] }), line: 2, field: 'turns[1].actions[0].cmd', says: /NUL/ },
  { name: 'name of 10 kB', text: lines({ ...H, name: 'a'.repeat(10_000) }, T(1)), line: 1, field: 'header.name' },
  { name: 'unknown header field', text: lines({ ...H, extra: 1 }, T(1)), line: 1, field: 'header.extra', says: /unknown field/ },
  { name: 'unknown image field', text: lines({ ...H, image: { ...H.image, arch: 'amd64' } }, T(1)), line: 1, field: 'header.image.arch', says: /unknown field/ },
  { name: 'bad shell', text: lines({ ...H, shell: 'tmux' }, T(1)), line: 1, field: 'header.shell', says: /persistent/ },
  { name: 'setup not strings', text: lines({ ...H, setup: ['ok', 3] }, T(1)), line: 1, field: 'header.setup[1]' },
  { name: 'verify missing cmd', text: lines({ ...H, verify: [{ cmd: 'a' }, { expect_exit: 0 }] }, T(1)), line: 1, field: 'header.verify[1].cmd', says: /required field missing/ },
  { name: 'verify bad exit', text: lines({ ...H, verify: [{ cmd: 'a', expect_exit: 300 }] }, T(1)), line: 1, field: 'header.verify[0].expect_exit' },
  { name: 'missing name', text: lines({ ...H, name: undefined }, T(1)), line: 1, field: 'header.name', says: /required/ },
  { name: 'turn numbering starts at 0', text: lines(H, T(0)), line: 2, field: 'turns[1].turn' },
  { name: 'turn skipped', text: lines(H, T(1), T(2), T(4)), line: 4, field: 'turns[3].turn', says: /expected turn 3/ },
  { name: 'turn repeated', text: lines(H, T(1), T(1)), line: 3, field: 'turns[2].turn', says: /consecutive/ },
  { name: 'negative latency', text: lines(H, T(1), T(2), T(3, { llm: { latency_ms: -5, prompt_tokens: 1, completion_tokens: 1 } })), line: 4, field: 'turns[3].llm.latency_ms', says: /expected a non-negative integer/ },
  { name: 'fractional tokens', text: lines(H, T(1, { llm: { latency_ms: 5, prompt_tokens: 1.5, completion_tokens: 1 } })), line: 2, field: 'turns[1].llm.prompt_tokens', says: /non-negative integer/ },
  { name: 'tokens as string', text: lines(H, T(1, { llm: { latency_ms: 5, prompt_tokens: 1, completion_tokens: '7' } })), line: 2, field: 'turns[1].llm.completion_tokens' },
  { name: 'llm missing', text: lines(H, { turn: 1, actions: [] }), line: 2, field: 'turns[1].llm', says: /required/ },
  { name: 'unknown llm field', text: lines(H, T(1, { llm: { latency_ms: 5, prompt_tokens: 1, completion_tokens: 1, model: 'x' } })), line: 2, field: 'turns[1].llm.model', says: /unknown field/ },
  { name: 'actions not an array', text: lines(H, T(1, { actions: 'ls' })), line: 2, field: 'turns[1].actions' },
  { name: 'empty cmd', text: lines(H, T(1), T(2, { actions: [{ cmd: 'ls' }, { cmd: '' }] })), line: 3, field: 'turns[2].actions[1].cmd', says: /non-empty/ },
  { name: 'zero timeout', text: lines(H, T(1, { actions: [{ cmd: 'ls', timeout_s: 0 }] })), line: 2, field: 'turns[1].actions[0].timeout_s', says: /positive/ },
  { name: 'bad expect_exit', text: lines(H, T(1, { actions: [{ cmd: 'ls', expect_exit: -1 }] })), line: 2, field: 'turns[1].actions[0].expect_exit' },
  { name: 'expect_stdout not a string', text: lines(H, T(1, { actions: [{ cmd: 'ls', expect_stdout: 42 }] })), line: 2, field: 'turns[1].actions[0].expect_stdout' },
  { name: 'unknown action field', text: lines(H, T(1, { actions: [{ cmd: 'ls', cwd: '/' }] })), line: 2, field: 'turns[1].actions[0].cwd', says: /unknown field/ },
  { name: 'unknown turn field', text: lines(H, T(1, { tools: [] })), line: 2, field: 'turns[1].tools', says: /unknown field/ },
  { name: 'turn is null', text: lines(H, 'null'), line: 2, field: 'turns[1]', says: /JSON object/ },
];

for (const c of BAD) {
  test(`rejects: ${c.name} (line ${c.line}, ${c.field})`, () => {
    assert.throws(
      () => parseTrace(c.text, 'traces/x.trace.jsonl'),
      (e: unknown) => {
        assert.ok(e instanceof CrabError, String(e));
        assert.equal(e.code, 'TRACE_INVALID');
        assert.equal(e.kind, 'invalid');
        const prefix = `traces/x.trace.jsonl:${c.line}: ${c.field}: `;
        assert.ok(e.message.startsWith(prefix), `message ${JSON.stringify(e.message)} should start with ${JSON.stringify(prefix)}`);
        if (c.says) assert.match(e.message, c.says);
        assert.match(e.message, /fix line \d+/);
        assert.deepEqual(e.details, { file: 'traces/x.trace.jsonl', line: c.line, field: c.field });
        return true;
      },
    );
  });
}

test('loadTrace / loadTraces: files, directories (sorted, *.trace.jsonl only), missing paths, duplicate names', async () => {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'crab-trace-'));
  try {
    const good = (name: string) => lines({ ...H, name }, T(1)) + '\n';
    await fs.writeFile(path.join(dir, 'b.trace.jsonl'), good('b'));
    await fs.writeFile(path.join(dir, 'a.trace.jsonl'), good('a'));
    await fs.writeFile(path.join(dir, 'notes.txt'), 'not a trace');
    const ts = await loadTraces([dir]);
    assert.deepEqual(ts.map((t) => t.header.name), ['a', 'b']);
    assert.equal(ts[0]!.file, path.join(dir, 'a.trace.jsonl'));
    assert.equal((await loadTrace(path.join(dir, 'b.trace.jsonl'))).header.name, 'b');
    await assert.rejects(loadTrace(path.join(dir, 'nope.trace.jsonl')), (e: unknown) => e instanceof CrabError && e.code === 'TRACE_NOT_FOUND');
    await assert.rejects(loadTraces([path.join(dir, 'missing')]), (e: unknown) => e instanceof CrabError && e.code === 'TRACE_NOT_FOUND');
    await fs.writeFile(path.join(dir, 'c.trace.jsonl'), good('a'));
    await assert.rejects(loadTraces([dir]), (e: unknown) => e instanceof CrabError && e.code === 'TRACE_INVALID' && /c\.trace\.jsonl:1: header\.name: duplicate/.test(e.message));
    await fs.writeFile(path.join(dir, 'c.trace.jsonl'), lines({ ...H, name: 'c' }, T(1), T(3)));
    await assert.rejects(loadTraces([dir]), (e: unknown) => e instanceof CrabError && e.message.startsWith(`${path.join(dir, 'c.trace.jsonl')}:3: turns[2].turn:`));
  } finally {
    await fs.rm(dir, { recursive: true, force: true });
  }
});

test('read-only classifier', () => {
  const ro = ['ls -la', 'cat a | grep -n x | head', "grep -rn 'x > y' .", 'git log --oneline', 'git status --short', "sed -n '1,5p' f", 'python3 -B -m unittest -v 2>&1 | tail -3',
    "python3 -c 'print(1 > 0)'", 'find . -name "*.py" | wc -l', 'jobs', 'echo $X', 'ls >/dev/null 2>&1', "sqlite3 -readonly db 'SELECT 1'", 'test $(cat /tmp/cnt) -gt 5 && echo growing', 'kill -0 12', 'command -v bash', 'declare -f fn', 'python3 -B check.py', 'git bisect log',
    'until test "$(cat /tmp/cnt)" -ge 5; do sleep 0.1; done; echo growing', "timeout 30 bash -c 'until test \"$(cat /tmp/cnt)\" -ge 5; do sleep 0.1; done' 2>/dev/null && echo growing",
    'if grep -q x f; then echo yes; else echo no; fi', "bash -c 'cd /tmp && ls'"];
  const rw = ['sed -i s/a/b/ f', 'echo x > f', 'echo x >> f', 'sleep 600 &', 'export A=1', 'cd /tmp', 'A=1', "f() { echo; }", 'make', 'git commit -qam x', "cat > f <<'EOF'\nx > y\nEOF",
    'find . -delete', 'python3 script.py', 'python3 -m pip --version', 'kill %1', 'cp a b', 'tee f', 'python3 -m unittest', "python3 -c 'open(\"f\", \"w\").write(\"x\")'", "sqlite3 db 'CREATE TABLE t(x)'", 'ls &>out',
    'for i in 1 2; do echo $i; done', 'while read l; do echo $l; done < f', 'until test -e f; do touch f; done', "bash -c 'echo x > f'", 'if true; then cd /tmp; fi', "bash -c 'rm f'"];
  for (const c of ro) assert.equal(actionIsReadOnly(c), true, c);
  for (const c of rw) assert.equal(actionIsReadOnly(c), false, c);
  assert.equal(actionIsReadOnly('cd /srv && ls', true), true);
});

/** Toolchains whose traces build (and so write) every time they test. */
const COMPILERS = new Set(['g++', 'golang-go', 'rustc', 'cargo']);

test('every bundled trace in traces/ parses; shell traces are mostly read-only', async () => {
  const root = await repoRoot();
  const traces = await loadTraces([path.join(root, 'traces')]);
  assert.ok(traces.length >= 22, `expected at least 22 bundled traces, found ${traces.length}`);
  const rows: string[] = [];
  for (const t of traces) {
    const p = profileTrace(t);
    rows.push(`${p.name.padEnd(34)} ${p.shell.padEnd(10)} turns ${String(p.turns).padStart(2)}  read-only ${String(p.readOnlyTurns).padStart(2)}/${String(p.turns).padEnd(2)} ${(p.readOnlyShare * 100).toFixed(0).padStart(3)}%  packages ${p.packages.join(',') || '-'}`);
  }
  console.log(`bundled traces (${traces.length}):\n  ${rows.join('\n  ')}`);
  for (const t of traces) {
    const p = profileTrace(t);
    assert.equal(path.basename(t.file), `${t.header.name}.trace.jsonl`, 'file name matches trace name');
    assert.ok(p.turns >= 8 && p.turns <= 30, `${p.name}: 8..30 turns`);
    // A compiled-language session builds and runs its tests again and again, and each build writes
    // (build/, Go's build cache): more of its turns write, though most still only read.
    const compiled = t.header.image.packages.some((pk) => COMPILERS.has(pk));
    const floor = compiled ? 0.4 : 0.75;
    assert.ok(p.readOnlyShare > floor, `${p.name}: more than ${floor * 100}% read-only turns (${p.readOnlyTurns}/${p.turns})`);
    assert.ok(t.header.setup.length > 0 && t.header.verify.length > 0, `${p.name}: setup and verify`);
    assert.ok(t.turns.some((x) => x.actions.some((a) => a.expect_stdout !== undefined && a.expect_stdout !== '')), `${p.name}: has expect_stdout checks`);
    assert.ok(!/https?:\/\//.test(t.header.source), `${p.name}: source without URLs`);
  }
  assert.ok(traces.filter((t) => t.header.shell === 'persistent').length >= 18);
});
