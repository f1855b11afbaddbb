import test, { after, describe } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { rootOnly, testPrefix } from '../../support/root.js';
import { manager, paths, removeByPrefix } from '../../support/sandboxes.js';
import { checkpointer } from '../../support/cr.js';
import { REPO_ROOT } from '../../../src/core/paths.js';
import { loadManifest, manifestDigests } from '../../../src/fssnap/index.js';
import { dirRecipeDigests, type DirRecipe } from '../../../src/store/content-store.js';
import { isAlive, ownerFromName } from '../../../src/core/owner.js';
import { freezerState } from '../../../src/checkpoint/freezer.js';

const LOOP = path.join(REPO_ROOT, 'dist/test/support/checkpoint-loop.js');
const TARGET_ATTEMPTS = Number(process.env.CRAB_CRASH_CHECKPOINTS ?? 200);
const tmpDir = path.join(paths.store, 'tmp');

describe('kill -9 of the checkpointing daemon at random points', rootOnly(), () => {
  const prefix = testPrefix('crash');
  const m = manager();
  after(() => removeByPrefix(m, prefix));

  test(`${TARGET_ATTEMPTS} checkpoints: no partial checkpoint is visible, every visible one restores`, async () => {
    const id = `${prefix}-sb`;
    await m.create({ name: id });
    await m.exec(id, 'sleep 10000 &', { session: 'main' });
    let attempts = 0;
    let kills = 0;
    while (attempts < TARGET_ATTEMPTS) {
      const child = spawn(process.execPath, [LOOP, id, String(TARGET_ATTEMPTS - attempts)], { stdio: ['ignore', 'pipe', 'inherit'] });
      child.stdout.on('data', (b: Buffer) => (attempts += (b.toString().match(/^start /gm) ?? []).length));
      const exited = new Promise((r) => child.once('exit', r));
      const killAfterMs = 200 + Math.random() * 1500;
      const timedOut = await Promise.race([exited.then(() => false), sleep(killAfterMs).then(() => true)]);
      if (timedOut && child.pid && child.pid > 1) {
        child.kill('SIGKILL');
        kills++;
      }
      await exited;
    }
    assert.ok(kills >= 3, `killed the daemon ${kills} times`);

    // What the kills added up to in store/tmp (issue 19 measured 76 MB after 70 kills: each child
    // here thaws its sandbox but leaves the store's temp files), and what remains once the next
    // Crab process has looked: nothing of a dead owner.
    const deadTmp = () =>
      fs.readdirSync(tmpDir).filter((n) => {
        const o = ownerFromName(n);
        return o && !isAlive(o);
      });
    const deadScratch = () => (fs.existsSync(m.dirs(id).ckpt) ? fs.readdirSync(m.dirs(id).ckpt) : []).filter((n) => !isAlive(ownerFromName(n) ?? { pid: 0, startTicks: 0 }));
    const leftBytes = deadTmp().reduce((sum, n) => sum + fs.statSync(path.join(tmpDir, n)).size, 0);
    const leftScratch = deadScratch().length;
    const cr = await checkpointer();
    await cr.recoverAfterCrash();
    assert.deepEqual(deadTmp(), []);
    assert.deepEqual(deadScratch(), []);
    assert.equal(freezerState(id), 'THAWED');
    console.log(`# ${kills} kills left ${(leftBytes / 2 ** 20).toFixed(1)} MiB in store/tmp and ${leftScratch} CRIU scratch dirs; after the next Crab process looked: none`);

    const visible = await cr.catalog.listCheckpoints(id);
    assert.ok(visible.length > 0);
    for (const ck of visible) {
      const manifest = await loadManifest(cr.store, ck.fsManifest!);
      for (const d of manifestDigests(manifest)) assert.ok(await cr.store.has(d), `${ck.id}: chunk ${d} of its files is stored`);
      const recipe = await cr.store.getJson<DirRecipe>(ck.processImage!);
      for (const d of dirRecipeDigests(recipe)) assert.ok(await cr.store.has(d), `${ck.id}: chunk ${d} of its process image is stored`);
    }
    // A daemon that died mid-checkpoint may leave the sandbox frozen: the next checkpoint recovers it.
    await cr.take(id, { kind: 'fs' });
    // Restore a sample for real: the newest, the oldest and a few in between.
    const sample = [visible[0]!, visible[visible.length - 1]!, ...visible.filter((_, i) => i % Math.ceil(visible.length / 4) === 1)];
    for (const ck of sample) {
      await cr.rollback(id, ck.id);
      const r = await m.exec(id, 'tail -1 /root/log; jobs | wc -l', { session: 'main' });
      assert.equal(r.stdout.trim().split('\n')[1], '1', `${ck.id}: the background job is back`);
    }
    console.log(`# ${attempts} checkpoint attempts, ${kills} kills, ${visible.length} visible, ${sample.length} restored`);
  });
});
