/**
 * Attacks through ids and names over the API (issue 19: a NUL in an id, a 10 kB id,
 * `..%2F..%2Fetc%2Fpasswd`, `a%2F..%2Fb` reading another sandbox's record, a NUL in `cwd`
 * hanging 7 s, `image: "../sandboxes/ID/upper/evil"` mounting a host directory as a lower layer).
 * A real daemon over its socket; each attack must get a clear 4xx and leave the host as it was.
 */
import test, { after, before, describe } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { rootOnly, testPrefix } from '../support/root.js';
import { manager, paths, removeByPrefix } from '../support/sandboxes.js';
import { assertClear4xx, canary, mountedAnywhere, raw, startDaemonProcess, type Canary, type DaemonProc } from '../support/attack.js';

describe('attacks on ids and names over the API (real daemon)', rootOnly(), () => {
  const prefix = testPrefix('atk-id');
  const m = manager();
  let d: DaemonProc;
  let host: Canary;
  const victim = `${prefix}-b`;
  const sock = () => ({ socketPath: d.socket });
  before(async () => {
    host = canary(prefix);
    d = await startDaemonProcess(`/tmp/${prefix}.sock`);
    await d.api.createSandbox({ name: victim, env: { API_KEY: 'sk-victim' } });
  });
  after(async () => {
    await d?.stop();
    await removeByPrefix(m, prefix);
    host?.remove();
  });

  test('path traversal, NUL, 10 kB and percent-encoded ids in routes: 400 INVALID_NAME, nothing read', async () => {
    const ids = [
      '..%2F..%2Fetc%2Fpasswd',
      `a%2F..%2F${victim}`,
      `${victim}%00`,
      `..%2F..%2F..%2F..%2Ftmp%2F${prefix}-canary`,
      'a'.repeat(10_000),
      `${victim.toUpperCase()}`,
      '%E0%A4%A',
    ];
    for (const id of ids) {
      for (const [method, route, body] of [
        ['GET', `/v1/sandboxes/${id}`],
        ['GET', `/v1/sandboxes/${id}/checkpoints`],
        ['POST', `/v1/sandboxes/${id}/exec`, '{"cmd":"cat /etc/hostname"}'],
        ['DELETE', `/v1/sandboxes/${id}`],
        ['POST', `/v1/checkpoints/${id}/restore`, '{}'],
        ['POST', `/v1/checkpoints/${id}/fork`, '{"count":1}'],
      ] as const) {
        const a = await raw(sock(), method, route, body);
        assertClear4xx(a, 400, 'INVALID_NAME');
        assert.ok(!a.text.includes('sk-victim'), `${method} ${route.slice(0, 60)}: another sandbox's record leaked`);
        assert.ok(a.text.length < 2000, 'the 10 kB id is not echoed back');
      }
    }
    // `%2e%2e` is `..` to the URL parser: the route moves up within /v1 and matches nothing.
    for (const p of [`/v1/sandboxes/%2e%2e`, `/v1/sandboxes/%2E%2e/%2e%2e/%2e%2e/etc/passwd`, `/v1/sandboxes/x/%2e%2e/%2e%2e/%2e%2e/%2e%2e/tmp`]) {
      const a = await raw(sock(), 'DELETE', p);
      assert.ok(a.status === 404 || a.status === 400, `${p}: ${a.status} ${a.text}`);
      assertClear4xx(a, a.status, /API_NO_ROUTE|INVALID_NAME/);
    }
    host.check();
    assert.ok(fs.existsSync(path.join(paths.sandboxes, victim, 'sandbox.json')), 'DELETE through a traversal removed nothing');
  });

  test('ids and names in bodies: restore --as, rollback, session, image, a NUL in cwd answered at once', async () => {
    const bad = ['../../tmp/x', 'a\u0000b', 'a'.repeat(10_000), '..', '/etc'];
    for (const v of bad) {
      assertClear4xx(await raw(sock(), 'POST', '/v1/sandboxes', JSON.stringify({ name: v })), 400);
      assertClear4xx(await raw(sock(), 'POST', '/v1/sandboxes', JSON.stringify({ image: v })), 400);
      assertClear4xx(await raw(sock(), 'POST', `/v1/sandboxes/${victim}/exec`, JSON.stringify({ cmd: 'true', session: v })), 400);
      assertClear4xx(await raw(sock(), 'POST', `/v1/sandboxes/${victim}/rollback`, JSON.stringify({ checkpoint: v })), 400);
      assertClear4xx(await raw(sock(), 'POST', '/v1/checkpoints/ck-000000000000/restore', JSON.stringify({ as: v })), 400);
    }
    for (const cwd of ['/tmp\u0000', '/tmp/../..', 'tmp', `/${'a'.repeat(5000)}`, '/a\nb']) {
      const a = await raw(sock(), 'POST', `/v1/sandboxes/${victim}/exec`, JSON.stringify({ cmd: 'pwd', cwd }));
      assertClear4xx(a, 400, 'API_INVALID_REQUEST');
      assert.ok(a.ms < 2000, `answered in ${Math.round(a.ms)} ms (a NUL in cwd hung 7 s)`);
    }
    assertClear4xx(await raw(sock(), 'POST', `/v1/sandboxes/${victim}/exec`, JSON.stringify({ cmd: 'true', env: { A: 'x\u0000y' } })), 400);
    assertClear4xx(await raw(sock(), 'POST', `/v1/sandboxes/${victim}/exec`, JSON.stringify({ cmd: 'echo a\u0000b' })), 400);
    // The sandbox still works for honest requests.
    const ok = await raw(sock(), 'POST', `/v1/sandboxes/${victim}/exec`, JSON.stringify({ cmd: 'pwd', cwd: '/tmp' }));
    assert.equal(ok.status, 200, ok.text);
    assert.equal((ok.json as { stdout?: string }).stdout, '/tmp\n');
    host.check();
  });

  test("row 7: an image.json planted in a sandbox's upper cannot be named as an image", async () => {
    // The sandbox writes an image that makes the host's canary dir a lower layer.
    const evil = JSON.stringify({ name: 'evil', base: null, packages: [], source: 'oci-import', createdAt: '', lowerDirs: [host.dir], sizeBytes: 0 });
    const w = await d.api.exec(victim, `mkdir -p /evil && printf '%s' '${evil}' > /evil/image.json && ls /evil`, {});
    assert.equal(w.exitCode, 0, w.stderr);
    const before = (await d.api.listSandboxes()).map((s) => s.id).sort();
    for (const image of [`../sandboxes/${victim}/upper/evil`, `..%2Fsandboxes%2F${victim}%2Fupper%2Fevil`, `../../../${host.dir}`]) {
      assertClear4xx(await raw(sock(), 'POST', '/v1/sandboxes', JSON.stringify({ name: `${prefix}-evil`, image })), 400, /INVALID_NAME|API_INVALID_REQUEST/);
    }
    assert.deepEqual((await d.api.listSandboxes()).map((s) => s.id).sort(), before, 'no sandbox was made');
    assert.equal(mountedAnywhere(host.dir), false, 'the host dir is no lower layer of any mount');
    host.check();
  });

  test('an image.json in the images dir naming a host directory is refused when read', async () => {
    const name = `${prefix}-img`;
    const dir = path.join(paths.images, name);
    fs.mkdirSync(dir, { recursive: true });
    try {
      fs.writeFileSync(path.join(dir, 'image.json'), JSON.stringify({ name, base: null, packages: [], source: 'oci-import', createdAt: '', lowerDirs: [host.dir], sizeBytes: 0 }));
      const a = await raw(sock(), 'POST', '/v1/sandboxes', JSON.stringify({ name: `${prefix}-img-sb`, image: name }));
      assert.equal(a.status, 412, a.text);
      assert.equal(a.json.error?.code, 'IMAGE_BAD_LOWER');
      assert.ok(!fs.existsSync(path.join(paths.sandboxes, `${prefix}-img-sb`)), 'no sandbox dir left');
      assert.equal(mountedAnywhere(host.dir), false);
      host.check();
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
