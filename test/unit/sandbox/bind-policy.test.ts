import test from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { checkPathText, hostPathVerdict, resolveBind, resolveHostPath } from '../../../src/sandbox/bind-policy.js';
import { bindMount } from '../../../src/sandbox/oci-spec.js';
import { CrabError } from '../../../src/core/errors.js';

const code = (fn: () => unknown): string | null => {
  try {
    fn();
    return null;
  } catch (e) {
    return e instanceof CrabError ? e.code : `not a CrabError: ${String(e)}`;
  }
};

test('hostPathVerdict: the root, CRAB_HOME, the kernel trees and what holds them are never allowed; an allowlist narrows the rest', () => {
  const home = '/var/lib/crab';
  const rows: Array<[string, readonly string[] | null, boolean, string]> = [
    ['/srv/data', null, true, 'anywhere else, no allowlist (unix socket)'],
    ['/', null, false, "the host's root"],
    ['/var/lib/crab', null, false, 'CRAB_HOME'],
    ['/var/lib/crab/store', null, false, 'inside CRAB_HOME'],
    ['/var/lib', null, false, 'holds CRAB_HOME'],
    ['/var/lib/crabby', null, true, 'a sibling with a common prefix'],
    ['/proc', null, false, '/proc'],
    ['/proc/1/root', null, false, 'inside /proc'],
    ['/sys/fs/cgroup', null, false, 'inside /sys'],
    ['/dev', null, false, '/dev'],
    ['/srv/data', [], false, 'TCP without --bind-allow: nothing'],
    ['/srv/data', ['/srv'], true, 'under an allowed dir'],
    ['/srv', ['/srv'], true, 'the allowed dir itself'],
    ['/srvx', ['/srv'], false, 'a prefix is not a parent'],
    ['/etc', ['/srv', '/data'], false, 'under none'],
    ['/var/lib/crab/x', ['/var/lib'], false, 'allowed dir holds CRAB_HOME: still not inside it'],
  ];
  for (const [p, allow, ok, why] of rows) assert.equal(hostPathVerdict(p, { allow, home }) === null, ok, `${why}: ${hostPathVerdict(p, { allow, home })}`);
});

test('checkPathText: absolute, normalized, no control characters, at most PATH_MAX', () => {
  const rows: Array<[unknown, boolean]> = [
    ['/work', true],
    ['/work/', true],
    ['/', true],
    ['/a/b.c/..d', true],
    ['work', false],
    ['', false],
    ['/a/../b', false],
    ['/a/./b', false],
    ['/a//b', false],
    ['/..', false],
    ['/a\0b', false],
    ['/a\nb', false],
    [`/${'a'.repeat(5000)}`, false],
    [7, false],
  ];
  for (const [p, ok] of rows) assert.equal(code(() => checkPathText(p, 'cwd')) === null, ok, JSON.stringify(p)?.slice(0, 40));
});

test('resolveHostPath and resolveBind: symlinks resolved before the check; read-only unless readonly is false', (t) => {
  const base = fs.realpathSync(fs.mkdtempSync(path.join(os.tmpdir(), 'crab-bind-')));
  t.after(() => fs.rmSync(base, { recursive: true, force: true }));
  const home = path.join(base, 'home');
  const allowed = path.join(base, 'allowed');
  fs.mkdirSync(path.join(home, 'store'), { recursive: true });
  fs.mkdirSync(path.join(allowed, 'proj'), { recursive: true });
  fs.symlinkSync(path.join(home, 'store'), path.join(allowed, 'sneaky'));
  fs.symlinkSync('/etc', path.join(allowed, 'out'));
  const policy = { allow: [allowed], home };
  assert.equal(resolveHostPath(path.join(allowed, 'proj'), policy, 'bind source'), path.join(allowed, 'proj'));
  assert.equal(code(() => resolveHostPath(path.join(allowed, 'sneaky'), policy, 'bind source')), 'HOST_PATH_NOT_ALLOWED', 'a symlink into CRAB_HOME');
  assert.equal(code(() => resolveHostPath(path.join(allowed, 'out'), policy, 'bind source')), 'HOST_PATH_NOT_ALLOWED', 'a symlink out of the allowed dir');
  assert.equal(code(() => resolveHostPath(path.join(allowed, 'nope'), policy, 'bind source')), 'HOST_PATH_MISSING');
  assert.equal(code(() => resolveHostPath(path.join(allowed, 'proj'), { allow: [], home }, 'bind source')), 'HOST_PATH_NOT_ALLOWED', 'no allowlist over TCP');
  assert.deepEqual(resolveBind({ source: path.join(allowed, 'proj'), target: '/work' }, policy), { source: path.join(allowed, 'proj'), target: '/work', readonly: true });
  assert.equal(resolveBind({ source: path.join(allowed, 'proj'), target: '/work', readonly: false }, policy).readonly, false);
  assert.equal(code(() => resolveBind({ source: path.join(allowed, 'proj'), target: '/' }, policy)), 'SANDBOX_BAD_BIND');
  assert.equal(code(() => resolveBind({ source: path.join(allowed, 'proj'), target: '/a/../..' }, policy)), 'SANDBOX_BAD_BIND');
});

test('bind mounts are nosuid,nodev and read-only unless readonly is exactly false', () => {
  const opts = (readonly?: boolean) => bindMount({ source: '/s', target: '/t', readonly }).options as string[];
  assert.deepEqual(opts(undefined), ['rbind', 'nosuid', 'nodev', 'ro']);
  assert.deepEqual(opts(true), ['rbind', 'nosuid', 'nodev', 'ro']);
  assert.deepEqual(opts(false), ['rbind', 'nosuid', 'nodev', 'rw']);
});
