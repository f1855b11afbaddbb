import test, { after, describe } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { rootOnly, testPrefix } from '../../support/root.js';
import { leftovers, manager, removeByPrefix } from '../../support/sandboxes.js';
import { HttpService } from '../../../src/api/http-service.js';
import { REPO_ROOT } from '../../../src/core/paths.js';

const MAIN = path.join(REPO_ROOT, 'dist/src/cli/main.js');

function startDaemon(socket: string, extra: string[] = [], env: Record<string, string> = {}): ChildProcess {
  return spawn(process.execPath, [MAIN, 'daemon', ...extra], {
    env: { ...process.env, CRAB_SOCKET: socket, CRAB_LOG_LEVEL: 'warn', ...env },
    stdio: ['ignore', 'ignore', 'inherit'],
  });
}

async function waitUp(api: HttpService): Promise<void> {
  for (let i = 0; i < 100; i++) {
    if (await api.ping()) return;
    await sleep(50);
  }
  throw new Error('daemon did not come up');
}

function raw(socketPath: string, method: string, p: string, body?: string): Promise<{ status: number; json: { error?: { code: string } } }> {
  return new Promise((resolve, reject) => {
    const req = http.request({ socketPath, method, path: p, headers: { 'content-type': 'application/json' } }, (res) => {
      let text = '';
      res.on('data', (b) => (text += b));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, json: JSON.parse(text) }));
    });
    req.on('error', reject);
    req.end(body);
  });
}

describe('crab daemon (real runc)', rootOnly(), () => {
  const prefix = testPrefix('dm');
  const m = manager();
  const socket = `/tmp/${prefix}.sock`;
  const children: ChildProcess[] = [];
  after(async () => {
    for (const c of children) if (c.pid && c.pid > 1 && c.exitCode === null) c.kill('SIGKILL');
    await removeByPrefix(m, prefix);
  });

  test('API: sandboxes through the socket; bad input is a 4xx, never a crash', async () => {
    const d = startDaemon(socket);
    children.push(d);
    const api = new HttpService({ socketPath: socket });
    await waitUp(api);
    assert.equal(fs.statSync(socket).mode & 0o777, 0o600, 'socket is 0600');
    const sb = await api.createSandbox({ name: `${prefix}-a` });
    assert.equal((await api.exec(sb.id, 'cd /tmp; Y=2', { session: 's' })).exitCode, 0);
    assert.equal((await api.exec(sb.id, 'echo $PWD $Y', { session: 's' })).stdout, '/tmp 2\n');
    assert.equal((await raw(socket, 'POST', '/v1/sandboxes', '{"name":"Bad Name"}')).status, 400);
    assert.equal((await raw(socket, 'POST', '/v1/sandboxes', '{not json')).status, 400);
    assert.equal((await raw(socket, 'POST', '/v1/sandboxes', '{"bogus":1}')).status, 400);
    assert.equal((await raw(socket, 'POST', `/v1/sandboxes/${prefix}-a/exec`, '{"cmd":""}')).status, 400);
    const missing = await raw(socket, 'GET', `/v1/sandboxes/${prefix}-none`);
    assert.equal(missing.status, 404);
    assert.equal(missing.json.error?.code, 'SANDBOX_NOT_FOUND');
    assert.ok(await api.ping(), 'daemon still up after bad requests');
    await api.removeSandbox(sb.id);
    d.kill('SIGTERM');
  });

  test('TCP listener requires the bearer token', async () => {
    const port = 20000 + Math.floor(Math.random() * 20000);
    const d = startDaemon(`${socket}.tcp`, ['--tcp', `127.0.0.1:${port}`], { CRAB_TOKEN: 'sekrit' });
    children.push(d);
    await waitUp(new HttpService({ socketPath: `${socket}.tcp` }));
    await assert.rejects(new HttpService({ url: `http://127.0.0.1:${port}`, token: 'wrong' }).listSandboxes());
    assert.ok(Array.isArray(await new HttpService({ url: `http://127.0.0.1:${port}`, token: 'sekrit' }).listSandboxes()));
    d.kill('SIGTERM');
  });

  test('crab gc cleans up after kill -9 of the daemon', async () => {
    const d = startDaemon(`${socket}.gc`);
    children.push(d);
    const api = new HttpService({ socketPath: `${socket}.gc` });
    await waitUp(api);
    const ids = [0, 1, 2].map((i) => `${prefix}-k${i}`);
    await Promise.all(ids.slice(0, 2).map((name) => api.createSandbox({ name, ephemeral: true })));
    await api.exec(ids[0]!, 'sleep 300 &', { session: 's' });
    // Kill the daemon in the middle of a third create, so half-made state is left too.
    const pending = api.createSandbox({ name: ids[2]!, ephemeral: true }).catch(() => undefined);
    await sleep(15);
    d.kill('SIGKILL');
    await pending;
    await sleep(100);
    const rep = await m.gc();
    // Only this test's sandboxes: gc also reports whatever other runs left on this host.
    assert.deepEqual(rep.problems.filter((p) => p.includes(prefix)), []);
    for (const id of ids) assert.deepEqual(await leftovers(m, id), [], id);
  });
});
