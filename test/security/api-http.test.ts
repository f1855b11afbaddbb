/**
 * Attacks on the HTTP layer of the API: oversized bodies (with and without a Content-Length),
 * malformed JSON, a missing or wrong bearer token over TCP, a token compared in constant time,
 * a token file others can read. A real daemon; each gets a clear 4xx and the daemon stays up.
 */
import test, { after, before, describe } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import http from 'node:http';
import { randomBytes } from 'node:crypto';
import { rootOnly, testPrefix } from '../support/root.js';
import { manager, removeByPrefix } from '../support/sandboxes.js';
import { assertClear4xx, canary, daemonRefuses, raw, startDaemonProcess, type Canary, type DaemonProc } from '../support/attack.js';
import { BODY_LIMITS, tokenMatcher } from '../../src/api/app.js';
import { HttpService } from '../../src/api/http-service.js';

/** Sends `total` bytes of body in chunks without a Content-Length (chunked), as a client that lies about nothing but sends too much. */
function chunkedPost(socketPath: string, p: string, total: number): Promise<{ status: number; text: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request({ socketPath, method: 'POST', path: p, headers: { 'content-type': 'application/json', 'transfer-encoding': 'chunked' } }, (res) => {
      let text = '';
      res.on('data', (b: Buffer) => (text += b.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, text }));
    });
    req.on('error', (e: NodeJS.ErrnoException) => (e.code === 'EPIPE' || e.code === 'ECONNRESET' ? undefined : reject(e)));
    const block = Buffer.alloc(256 * 1024, 'a');
    let sent = 0;
    const pump = () => {
      while (sent < total) {
        sent += block.length;
        if (!req.write(block)) return void req.once('drain', pump);
      }
      req.end();
    };
    req.write('{"cmd":"');
    pump();
  });
}

describe('attacks on the HTTP layer of the API (real daemon)', rootOnly(), () => {
  const prefix = testPrefix('atk-http');
  const m = manager();
  let d: DaemonProc;
  let host: Canary;
  const port = 20000 + Math.floor(Math.random() * 20000);
  const tokenFile = `/tmp/${prefix}.token`;
  const token = randomBytes(24).toString('hex');
  before(async () => {
    host = canary(prefix);
    fs.writeFileSync(tokenFile, `${token}\n`, { mode: 0o600 });
    d = await startDaemonProcess(`/tmp/${prefix}.sock`, ['--tcp', `127.0.0.1:${port}`, '--token-file', tokenFile]);
    await d.api.createSandbox({ name: `${prefix}-a` });
  });
  after(async () => {
    await d?.stop();
    await removeByPrefix(m, prefix);
    fs.rmSync(tokenFile, { force: true });
    host?.remove();
  });

  test('bodies over the route limit: 413 before the body is read, with or without a Content-Length', async () => {
    const sock = { socketPath: d.socket };
    const big = (n: number) => `{"cmd":"${'a'.repeat(n)}"}`;
    for (const [route, limit] of [
      [`/v1/sandboxes/${prefix}-a/exec`, BODY_LIMITS.exec],
      [`/v1/sandboxes/${prefix}-a/rollback`, BODY_LIMITS.default],
      ['/v1/sandboxes', BODY_LIMITS.createSandbox],
      ['/v1/gc', BODY_LIMITS.default],
    ] as const) {
      assertClear4xx(await raw(sock, 'POST', route, big(limit + 1)), 413, 'API_BODY_TOO_LARGE');
      const c = await chunkedPost(d.socket, route, limit + 512 * 1024);
      assert.equal(c.status, 413, `${route} chunked: ${c.text.slice(0, 200)}`);
    }
    // Under the limit, a long command is fine.
    const ok = await raw(sock, 'POST', `/v1/sandboxes/${prefix}-a/exec`, JSON.stringify({ cmd: `: ${'a'.repeat(500_000)}; echo ok` }));
    assert.equal(ok.status, 200, ok.text.slice(0, 300));
    assert.ok(await d.api.ping(), 'the daemon is still up');
    host.check();
  });

  test('malformed bodies: clear 400s, never a 500', async () => {
    const sock = { socketPath: d.socket };
    for (const body of ['{', '{"cmd":', 'null', '[]', '"x"', '{"cmd":"ls",}', '\u0000', '{"cmd":"ls","extra":1}', '{"cmd":5}', '{"cmd":"ls","timeoutMs":-1}', Buffer.from([0xff, 0xfe, 0x00])]) {
      const a = await raw(sock, 'POST', `/v1/sandboxes/${prefix}-a/exec`, body);
      assertClear4xx(a, 400, /API_BAD_JSON|API_INVALID_REQUEST/);
    }
    assert.ok(await d.api.ping());
  });

  test('TCP: no token, a wrong one, one of another length, a Basic one: 401; the right one (from the file) works', async () => {
    const tcp = { host: '127.0.0.1', port };
    const tries: Array<Record<string, string>> = [
      {},
      { authorization: 'Bearer' },
      { authorization: `Bearer ${token.slice(0, -1)}` },
      { authorization: `Bearer ${token}x` },
      { authorization: `Bearer ${'0'.repeat(token.length)}` },
      { authorization: `Basic ${Buffer.from(`u:${token}`).toString('base64')}` },
      { authorization: `bearer ${token}` },
    ];
    for (const h of tries) assertClear4xx(await raw(tcp, 'GET', '/v1/sandboxes', undefined, h), 401, 'API_UNAUTHORIZED');
    // Unauthenticated, even a huge body is refused before it is read.
    assertClear4xx(await raw(tcp, 'POST', '/v1/sandboxes', `{"name":"${'a'.repeat(2 * 1024 * 1024)}"}`), 401, 'API_UNAUTHORIZED');
    const list = await new HttpService({ url: `http://127.0.0.1:${port}`, token }).listSandboxes();
    assert.ok(list.some((s) => s.id === `${prefix}-a`));
    assert.ok(!fs.readFileSync(`/proc/${d.child.pid}/cmdline`, 'utf8').includes(token), 'the token is not in the daemon argv');
  });

  test('TCP: binds are refused without --bind-allow (and the unix socket still binds read-only)', async () => {
    const tcp = { host: '127.0.0.1', port };
    const a = await raw(tcp, 'POST', '/v1/sandboxes', JSON.stringify({ name: `${prefix}-tcpbind`, binds: [{ source: host.dir, target: '/mnt' }] }), { 'content-type': 'application/json', authorization: `Bearer ${token}` });
    assertClear4xx(a, 400, 'HOST_PATH_NOT_ALLOWED');
    assert.ok(!(await d.api.listSandboxes()).some((s) => s.id === `${prefix}-tcpbind`));
    host.check();
  });

  test('the token is compared in constant time: a near miss costs what a far miss costs', () => {
    // 64 KiB tokens: a plain string compare would stop at the first byte for the far miss and
    // read all of it for the near miss (microseconds apart); hashing both sides costs the same.
    const secret = randomBytes(32 * 1024).toString('hex');
    const matches = tokenMatcher(secret);
    const far = `Bearer x${secret.slice(1)}`;
    const near = `Bearer ${secret.slice(0, -1)}x`;
    const time = (h: string) => {
      const t0 = process.hrtime.bigint();
      for (let i = 0; i < 20; i++) matches(h);
      return Number(process.hrtime.bigint() - t0);
    };
    const a: number[] = [];
    const b: number[] = [];
    for (let i = 0; i < 200; i++) {
      a.push(time(far));
      b.push(time(near));
    }
    const med = (xs: number[]) => xs.sort((x, y) => x - y)[xs.length >> 1]!;
    const ratio = med(b) / med(a);
    assert.ok(ratio > 0.7 && ratio < 1.4, `near/far miss time ratio ${ratio.toFixed(2)}`);
    assert.equal(matches(`Bearer ${secret}`), true);
  });

  test('a token file others may read, an empty one, or --token with --token-file: the daemon refuses to start', async () => {
    const loose = `/tmp/${prefix}.loose`;
    const empty = `/tmp/${prefix}.empty`;
    fs.writeFileSync(loose, `${token}\n`, { mode: 0o644 });
    fs.chmodSync(loose, 0o644);
    fs.writeFileSync(empty, '', { mode: 0o600 });
    try {
      const args = (f: string) => ['--tcp', `127.0.0.1:${port + 1}`, '--token-file', f];
      const r1 = await daemonRefuses(`/tmp/${prefix}-r1.sock`, args(loose));
      assert.equal(r1.code, 2, r1.stderr);
      assert.match(r1.stderr, /CRAB_TOKEN_FILE.*mode 644|mode 644.*CRAB_TOKEN_FILE/s);
      const r2 = await daemonRefuses(`/tmp/${prefix}-r2.sock`, args(empty));
      assert.equal(r2.code, 2, r2.stderr);
      assert.match(r2.stderr, /empty/);
      const r3 = await daemonRefuses(`/tmp/${prefix}-r3.sock`, [...args(tokenFile), '--token', 'x']);
      assert.equal(r3.code, 2, r3.stderr);
      assert.match(r3.stderr, /CLI_TOKEN_TWICE/);
    } finally {
      fs.rmSync(loose, { force: true });
      fs.rmSync(empty, { force: true });
    }
  });
});
