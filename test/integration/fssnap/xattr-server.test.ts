import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { CrabError } from '../../../src/core/errors.js';
import { XattrServer, readXattrs } from '../../../src/fssnap/host-helper.js';
import { rootOnly, testPrefix } from '../../support/root.js';

describe('crab-xattr serve (the long-lived metadata helper)', rootOnly(), () => {
  test('requests one after another and at once; a failed request ends that helper, the next starts another', async () => {
    const dir = await fs.mkdtemp(path.join(os.tmpdir(), testPrefix('xattr') + '-'));
    try {
      const files = Array.from({ length: 8 }, (_, i) => `f${i}`);
      for (const f of files) await fs.writeFile(path.join(dir, f), '');
      const server = new XattrServer();
      // apply: a value per file (hex), then read them back, 8 requests at once
      await server.request('apply', dir, files.map((f, i) => `x\0${f}\0user.crab\0${Buffer.from(`v${i}`).toString('hex')}\0`).join(''), 'apply');
      const replies = await Promise.all(files.map((f) => server.request('get', dir, `${f}\0`, 'get')));
      assert.deepEqual(replies.map((r) => r.toString()), files.map((_, i) => `0\0user.crab\0${Buffer.from(`v${i}`).toString('hex')}\0`));
      assert.equal(server.pending, 0);
      const pid = server.pid;
      assert.ok(pid !== undefined && pid > 1);

      const missing = 'missing';
      await assert.rejects(server.request('apply', dir, `x\0${missing}\0user.crab\0aa\0`, 'apply'), (e: unknown) => e instanceof CrabError && e.code === 'FSSNAP_HELPER_FAILED' && e.message.includes(missing));
      const again = await server.request('get', dir, `${files[3]}\0${missing}\0`, 'get');
      assert.equal(again.toString(), `0\0user.crab\0${Buffer.from('v3').toString('hex')}\0`, 'a missing path is skipped');
      assert.notEqual(server.pid, pid, 'a new helper after the failure');

      // a helper that cannot start: a typed error every time, never a hang
      const absent = new XattrServer(path.join(dir, 'no-such-helper'));
      for (let i = 0; i < 2; i++) {
        await assert.rejects(absent.request('get', dir, `${files[0]}\0`, 'get'), (e: unknown) => e instanceof CrabError && e.code === 'FSSNAP_HELPER_UNAVAILABLE');
      }

      // the module's own servers, through the public API
      const all = await readXattrs(dir, files);
      assert.equal(all.size, 8);
      assert.deepEqual(all.get(files[5]!), { 'user.crab': Buffer.from('v5').toString('hex') });
    } finally {
      await fs.rm(dir, { recursive: true, force: true });
    }
  });
});
