/**
 * Attacks with bind mounts: a host path outside the daemon's allowlist, a symlink inside the
 * allowlist that leads out of it, CRAB_HOME itself, and writes through a bind that was not asked
 * to be writable. A real daemon with `--bind-allow`; real sandboxes.
 */
import test, { after, before, describe } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { rootOnly, testPrefix } from '../support/root.js';
import { manager, paths, removeByPrefix } from '../support/sandboxes.js';
import { assertClear4xx, canary, raw, startDaemonProcess, type Canary, type DaemonProc } from '../support/attack.js';

describe('attacks with bind mounts (real daemon, --bind-allow)', rootOnly(), () => {
  const prefix = testPrefix('atk-bind');
  const m = manager();
  let d: DaemonProc;
  let host: Canary;
  const allowed = `/tmp/${prefix}-allowed`;
  const sock = () => ({ socketPath: d.socket });
  const create = (name: string, binds: unknown) => raw(sock(), 'POST', '/v1/sandboxes', JSON.stringify({ name: `${prefix}-${name}`, binds }));
  before(async () => {
    host = canary(prefix);
    fs.mkdirSync(path.join(allowed, 'proj'), { recursive: true });
    fs.writeFileSync(path.join(allowed, 'proj', 'input.txt'), 'input\n');
    fs.symlinkSync(host.dir, path.join(allowed, 'out'));
    fs.symlinkSync(paths.home, path.join(allowed, 'home'));
    d = await startDaemonProcess(`/tmp/${prefix}.sock`, ['--bind-allow', allowed]);
  });
  after(async () => {
    await d?.stop();
    await removeByPrefix(m, prefix);
    fs.rmSync(allowed, { recursive: true, force: true });
    host?.remove();
  });

  test('sources outside the allowlist, through a symlink, CRAB_HOME, / and /proc: 400, no sandbox', async () => {
    const rows: Array<[string, string, string]> = [
      ['outside', host.dir, 'HOST_PATH_NOT_ALLOWED'],
      ['symlink-out', path.join(allowed, 'out'), 'HOST_PATH_NOT_ALLOWED'],
      ['symlink-home', path.join(allowed, 'home'), 'HOST_PATH_NOT_ALLOWED'],
      ['home', paths.home, 'HOST_PATH_NOT_ALLOWED'],
      ['store', paths.store, 'HOST_PATH_NOT_ALLOWED'],
      ['root', '/', 'HOST_PATH_NOT_ALLOWED'],
      ['proc', '/proc/1/root', 'HOST_PATH_NOT_ALLOWED'],
      ['missing', path.join(allowed, 'nope'), 'HOST_PATH_MISSING'],
      ['dotdot', `${allowed}/proj/../../..${host.dir}`, 'API_INVALID_REQUEST'],
    ];
    for (const [name, source, code] of rows) {
      assertClear4xx(await create(name, [{ source, target: '/mnt' }]), 400, code);
      assert.ok(!fs.existsSync(path.join(paths.sandboxes, `${prefix}-${name}`)), `${name}: no sandbox dir`);
    }
    assertClear4xx(await create('target-root', [{ source: path.join(allowed, 'proj'), target: '/' }]), 400);
    host.check();
  });

  test('an allowed source is bound read-only, nosuid, nodev unless readonly:false', async () => {
    const ro = await create('ro', [{ source: path.join(allowed, 'proj'), target: '/mnt/proj' }]);
    assert.equal(ro.status, 201, ro.text);
    const id = `${prefix}-ro`;
    const w = await d.api.exec(id, 'cat /mnt/proj/input.txt; echo x > /mnt/proj/evil.txt', {});
    assert.equal(w.stdout, 'input\n');
    assert.notEqual(w.exitCode, 0, 'a write into a read-only bind fails');
    assert.match(w.stderr, /Read-only file system/);
    assert.ok(!fs.existsSync(path.join(allowed, 'proj', 'evil.txt')));
    const mi = await d.api.exec(id, "awk '$5 == \"/mnt/proj\" {print $6}' /proc/self/mountinfo", {});
    const opts = mi.stdout.trim().split(',');
    for (const o of ['ro', 'nosuid', 'nodev']) assert.ok(opts.includes(o), `mount options ${mi.stdout.trim()} include ${o}`);
    const rec = JSON.parse(fs.readFileSync(path.join(paths.sandboxes, id, 'sandbox.json'), 'utf8')) as { binds: Array<{ readonly: boolean }> };
    assert.equal(rec.binds[0]!.readonly, true, 'the record says read-only');

    const rw = await create('rw', [{ source: path.join(allowed, 'proj'), target: '/mnt/proj', readonly: false }]);
    assert.equal(rw.status, 201, rw.text);
    const w2 = await d.api.exec(`${prefix}-rw`, 'echo ok > /mnt/proj/out.txt && grep -c nosuid /proc/self/mountinfo >/dev/null', {});
    assert.equal(w2.exitCode, 0, w2.stderr);
    assert.equal(fs.readFileSync(path.join(allowed, 'proj', 'out.txt'), 'utf8'), 'ok\n');
    host.check();
  });
});
