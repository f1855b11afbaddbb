/**
 * Escape suite, host I/O: a sandbox plants symlinks, FIFOs and huge files where the host reads and
 * writes (the exec channel, fs capture hints, rollback's file reuse, manifests), and the host must
 * not follow them. Each test names the attack (rows of issue 19's table where it says so) and
 * asserts the host file or directory is untouched.
 */
import test, { after, before, describe } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { CrabError } from '../../src/core/errors.js';
import { loadManifest, materialize, type Manifest } from '../../src/fssnap/index.js';
import type { Checkpointer } from '../../src/checkpoint/checkpointer.js';
import { makeCanary, type Canary } from '../support/canary.js';
import { checkpointer } from '../support/cr.js';
import { rootOnly, testPrefix } from '../support/root.js';
import { manager, removeByPrefix } from '../support/sandboxes.js';

const codeOf = (e: unknown) => (e instanceof CrabError ? e.code : (e as NodeJS.ErrnoException).code);

/** Waits (polling the host's view of the rootfs, which the test trusts) until `rel` in the sandbox is a symlink. */
async function untilSymlink(rootfs: string, rel: string): Promise<void> {
  for (let i = 0; i < 500; i++) {
    if (fs.lstatSync(path.join(rootfs, rel), { throwIfNoEntry: false })?.isSymbolicLink()) return;
    await sleep(10);
  }
  throw new Error(`${rel} never became a symlink`);
}

describe('escape suite: host I/O on sandbox paths follows nothing the sandbox planted', rootOnly(), () => {
  const prefix = testPrefix('esc-io');
  const m = manager();
  let cr: Checkpointer;
  let canary: Canary;
  before(async () => {
    cr = await checkpointer();
    canary = makeCanary(prefix);
  });
  after(async () => {
    await removeByPrefix(m, prefix);
    canary.remove();
  });

  test('row 1: rollback does not hard-link a host file through a directory replaced by a symlink', async () => {
    const id = `${prefix}-r1`;
    await m.create({ name: id });
    // a file whose bytes equal the host file's, checkpointed; then its directory becomes a link to the host directory
    await m.exec(id, `mkdir -p /a && printf %s '${canary.secret.trim()}' > /a/secret && echo >> /a/secret`);
    const ck = await cr.take(id, { kind: 'full' });
    await m.exec(id, `rm -rf /a && ln -s ${canary.dir} /a`);
    await cr.rollback(id, ck.checkpoint.id);
    canary.assertUntouched('after the rollback');
    assert.equal((await m.exec(id, 'cat /a/secret')).stdout, canary.secret, 'the sandbox has its own copy back');
    await m.exec(id, 'echo overwritten > /a/secret');
    canary.assertUntouched('after the sandbox wrote its copy');
  });

  test('row 3: a command that replaces its own stdout/stderr file by a symlink to a host file gets no host bytes back', async () => {
    const id = `${prefix}-r3`;
    await m.create({ name: id });
    const planted = (stream: string) => `ln -sf ${canary.file} "\${BASH_SOURCE[0]%.cmd}.${stream}"; echo done`;
    for (const session of [undefined, 's']) {
      for (const stream of ['out', 'err']) {
        const r = await m.exec(id, planted(stream), { session });
        assert.ok(!r.stdout.includes(canary.secret.trim()) && !r.stderr.includes(canary.secret.trim()), `${session ?? 'one-shot'} ${stream}: no host bytes`);
        const replaced = stream === 'out' ? r.stdout : r.stderr;
        assert.match(replaced, /is not a regular file \(the command replaced it\); not read/);
      }
    }
    canary.assertUntouched('after the exec results were read');
  });

  test('an output file replaced by a FIFO or made 100 GiB sparse neither blocks nor floods the host', async () => {
    const id = `${prefix}-fifo`;
    await m.create({ name: id });
    const fifo = await m.exec(id, 'o="${BASH_SOURCE[0]%.cmd}.out"; rm -f "$o"; mkfifo "$o"; echo gone');
    assert.match(fifo.stdout, /is not a regular file/);
    const big = await m.exec(id, 'o="${BASH_SOURCE[0]%.cmd}.out"; echo start; truncate -s 100G "$o"');
    assert.ok(big.stdout.length <= 8 * 1024 * 1024 + 200, `capped (${big.stdout.length} bytes)`);
    assert.match(big.stdout, /output cut at 8388608 of 107374182400 bytes/);
  });

  test('row 4: the control FIFO replaced by a symlink to a host file: the next exec fails, the host file is unwritten', async () => {
    const id = `${prefix}-r4`;
    await m.create({ name: id });
    await m.exec(id, `rm /run/crab/ctl && ln -s ${canary.file} /run/crab/ctl`);
    await assert.rejects(m.exec(id, 'true'), (e: unknown) => codeOf(e) === 'HOSTFS_NOT_A_FIFO');
    canary.assertUntouched('after an exec through a planted ctl');
  });

  test("row 4: a session's input FIFO replaced by a symlink to a host file: the next command fails, the host file is unwritten", async () => {
    const id = `${prefix}-r4s`;
    await m.create({ name: id });
    await m.exec(id, `rm /run/crab/s/s/in && ln -s ${canary.file} /run/crab/s/s/in`, { session: 's' });
    await assert.rejects(m.exec(id, 'echo hi', { session: 's' }), (e: unknown) => codeOf(e) === 'HOSTFS_NOT_A_FIFO');
    canary.assertUntouched('after a session command through a planted in FIFO');
  });

  test('row 5: the request directory replaced by a symlink to a host directory: no file is created there', async () => {
    const id = `${prefix}-r5`;
    await m.create({ name: id });
    const rootfs = m.dirs(id).rootfs;
    // in the background: the command's own result files live in the directory it replaces
    await m.exec(id, `(sleep 0.2; rm -rf /run/crab/r; ln -s ${canary.dir} /run/crab/r) >/dev/null 2>&1 &`);
    await untilSymlink(rootfs, 'run/crab/r');
    await assert.rejects(m.exec(id, 'true'), (e: unknown) => codeOf(e) === 'SANDBOX_CHANNEL_FAILED');
    await assert.rejects(m.exec(id, 'true', { session: 'x' }), (e: unknown) => e instanceof CrabError);
    canary.assertUntouched('after execs through a planted request directory');
  });

  test('row 5: the session directory replaced by a symlink to a host directory: not listed, no session created there', async () => {
    const id = `${prefix}-r5s`;
    await m.create({ name: id });
    await m.exec(id, `rm -rf /run/crab/s && ln -s ${canary.dir} /run/crab/s`);
    assert.deepEqual((await m.info(id)).sessions, [], 'the host directory is not listed as sessions');
    await assert.rejects(m.exec(id, 'true', { session: 'new' }), (e: unknown) => e instanceof CrabError);
    canary.assertUntouched('after a session was opened through a planted session directory');
  });

  test("a session's replay script and state files replaced by symlinks to a host file: written and read as the sandbox's own", async () => {
    const id = `${prefix}-replay`;
    await m.create({ name: id });
    await m.exec(id, 'cd /tmp', { session: 's' });
    const ch = m.channel(id);
    await m.exec(id, `ln -sf ${canary.file} /run/crab/s/s/replay.sh`);
    ch.writeReplayScript('s', 'cd /\n');
    assert.equal(ch.readReplayScript('s'), 'cd /\n');
    canary.assertUntouched('after a replay script was written');
    // state files: the session rewrites them after every command, so plant them from a one-shot exec and read at once
    await m.exec(id, `rm -f /run/crab/s/s/state /run/crab/s/s/state.raw; ln -s ${canary.file} /run/crab/s/s/state; ln -s ${canary.file} /run/crab/s/s/state.raw`);
    assert.equal(ch.sessionState('s'), null, 'an unknown state, not the host file');
    assert.equal(ch.sessionStateText('s'), null);
    canary.assertUntouched('after the session state was read');
  });

  test('row 6: a hint path through a planted directory symlink does not read a host file into the checkpoint', async () => {
    const id = `${prefix}-r6`;
    await m.create({ name: id });
    const first = await cr.take(id, { kind: 'full' });
    await m.exec(id, `ln -sfn ${canary.dir} /bar`);
    // what the inspector reports after `chmod 644 /bar/secret`: the path the sandbox named
    const ck = await cr.take(id, { kind: 'fs', hintPaths: ['/bar/secret', '/bar'] });
    assert.notEqual(ck.checkpoint.parentId, null);
    assert.equal(first.checkpoint.id, ck.checkpoint.parentId);
    const manifest = await loadManifest(cr.store, ck.checkpoint.fsManifest!);
    assert.equal(manifest.entries.find((e) => e.path === 'bar')?.type, 'symlink');
    assert.equal(manifest.entries.find((e) => e.path.startsWith('bar/')), undefined, 'nothing below the link');
    const forks = await cr.fork(ck.checkpoint.id, 1, { prefix: `${prefix}-r6f` });
    assert.equal((await m.exec(forks[0]!.sandboxId, 'readlink /bar')).stdout.trim(), canary.dir);
    canary.assertUntouched('after capture and restore');
  });

  test('a manifest with an entry below a symlink (as a tampered or stale one could have) is refused before anything is written', async () => {
    const target = fs.mkdtempSync(path.join(os.tmpdir(), `${prefix}-mat-`));
    fs.rmdirSync(target);
    const base = { mode: 0o755, uid: 0, gid: 0, mtimeNs: '0', size: 0, ino: 1, ctimeNs: '0' };
    const evil: Manifest = {
      format: 'crab-manifest/1',
      createdAtMs: 0,
      sourceDev: 0,
      sourceIno: 0,
      logicalBytes: 0,
      entries: [
        { ...base, path: '', type: 'dir' },
        { ...base, path: 'a', type: 'symlink', target: canary.dir, ino: 2 },
        { ...base, path: 'a/secret', type: 'file', size: 1, ino: 3, recipe: { size: 1, chunks: [] } },
      ],
    } as Manifest;
    try {
      await assert.rejects(materialize(evil, cr.store, target), (e: unknown) => codeOf(e) === 'FSSNAP_BAD_MANIFEST');
      canary.assertUntouched('after materializing a manifest with a file below a symlink');
    } finally {
      fs.rmSync(target, { recursive: true, force: true });
    }
  });
});
