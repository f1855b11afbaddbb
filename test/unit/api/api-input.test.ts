import test from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { bodyLimitFor, tokenMatcher } from '../../../src/api/app.js';
import { readTokenFile } from '../../../src/api/token.js';
import { CreateSandboxBody, ExecBody, pathSchema } from '../../../src/api/schemas.js';
import { CrabError } from '../../../src/core/errors.js';

test('bodyLimitFor: per-route limits', () => {
  const rows: Array<[string, string, string]> = [
    ['POST', '/v1/sandboxes', 'createSandbox'],
    ['POST', '/v1/sandboxes/sb-1/exec', 'exec'],
    ['POST', '/v1/sandboxes/sb-1/checkpoints', 'checkpoint'],
    ['POST', '/v1/sandboxes/sb-1/rollback', 'default'],
    ['POST', '/v1/sandboxes/a/b/exec', 'default'],
    ['PUT', '/v1/sandboxes/sb-1/mode', 'default'],
    ['POST', '/v1/images/import', 'default'],
  ];
  for (const [m, p, want] of rows) assert.equal(bodyLimitFor(m, p), want, `${m} ${p}`);
});

test('tokenMatcher accepts exactly the token', () => {
  const ok = tokenMatcher('s3cret');
  assert.equal(ok('Bearer s3cret'), true);
  for (const h of [undefined, '', 'Bearer', 'Bearer s3cre', 'Bearer s3cret ', 'bearer s3cret', 'Bearer s3cretX', 'Basic s3cret', `Bearer ${'s'.repeat(100_000)}`]) assert.equal(ok(h), false, String(h).slice(0, 30));
});

test('readTokenFile: the token alone, from a file nobody else may read', (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'crab-token-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const f = (name: string, text: string, mode: number) => {
    const p = path.join(dir, name);
    fs.writeFileSync(p, text, { mode });
    fs.chmodSync(p, mode);
    return p;
  };
  assert.equal(readTokenFile(f('ok', 'abc123\n', 0o600)), 'abc123');
  assert.equal(readTokenFile(f('ok2', 'abc123', 0o400)), 'abc123');
  for (const [name, text, mode] of [
    ['world', 'abc\n', 0o644],
    ['group', 'abc\n', 0o640],
    ['empty', '', 0o600],
    ['nl-only', '\n', 0o600],
    ['two-lines', 'abc\ndef\n', 0o600],
    ['space', 'ab c\n', 0o600],
  ] as const) {
    assert.throws(() => readTokenFile(f(name, text, mode)), (e: unknown) => e instanceof CrabError && e.code === 'CRAB_TOKEN_FILE', name);
  }
  assert.throws(() => readTokenFile(path.join(dir, 'missing')), /CRAB_TOKEN_FILE|cannot be read/);
  assert.throws(() => readTokenFile(dir), /not a regular file/);
});

test('schemas: ids, paths and env are checked before anything runs', () => {
  assert.equal(pathSchema.safeParse('/work/x').success, true);
  for (const bad of ['work', '/a/../b', '/a\0', '/a\n', '']) assert.equal(pathSchema.safeParse(bad).success, false, JSON.stringify(bad));
  assert.equal(ExecBody.safeParse({ cmd: 'ls', cwd: '/tmp' }).success, true);
  assert.equal(ExecBody.safeParse({ cmd: 'ls', cwd: '/tmp\0' }).success, false, 'a NUL in cwd');
  assert.equal(ExecBody.safeParse({ cmd: 'l\0s' }).success, false, 'a NUL in the command');
  assert.equal(ExecBody.safeParse({ cmd: 'ls', env: { A: 'x\0y' } }).success, false, 'a NUL in an env value');
  assert.equal(ExecBody.safeParse({ cmd: 'ls', session: '../x' }).success, false);
  assert.equal(CreateSandboxBody.safeParse({ image: '../sandboxes/sb-1/upper/evil' }).success, false, "the issue's row 7");
  assert.equal(CreateSandboxBody.safeParse({ image: 'debian-bookworm-minbase+93aae7cd8681' }).success, true);
  assert.equal(CreateSandboxBody.safeParse({ binds: [{ source: '/srv', target: '/' }] }).success, false);
  assert.equal(CreateSandboxBody.safeParse({ binds: [{ source: '/srv', target: '/w', readonly: false }] }).success, true);
});
