import test, { after, before, describe } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI from 'openai';
import { rootOnly, testPrefix } from '../../support/root.js';
import { paths, removeByPrefix } from '../../support/sandboxes.js';
import { startFakeUpstream, type FakeUpstream } from '../../support/fake-upstream.js';
import { rootLogger } from '../../../src/core/log.js';
import { CrabHost } from '../../../src/daemon/host.js';

describe('turn boundaries through the LLM proxy (real sandboxes, inspector, CRIU)', rootOnly(), () => {
  const prefix = testPrefix('turns');
  let host: CrabHost;
  let upstream: FakeUpstream;
  before(async () => {
    upstream = await startFakeUpstream();
    upstream.headDelayMs = 300;
    host = await CrabHost.start({ paths, log: rootLogger, proxy: { upstreamUrl: upstream.url } });
  });
  after(async () => {
    await removeByPrefix(host.service.sandboxes, prefix);
    await host.close();
    await upstream.close();
  });

  test('crab mode: each boundary gets the checkpoint its turn needs, and the gate holds the response until it commits', async () => {
    const id = `${prefix}-crab`;
    await host.service.createSandbox({ name: id });
    host.setMode(id, 'crab');
    const client = new OpenAI({ apiKey: 'k', baseURL: `${host.proxyUrl}/s/${id}/v1` });
    const ask = () => client.chat.completions.create({ model: 'm', messages: [{ role: 'user', content: 'next' }] });
    const s = (cmd: string) => host.service.exec(id, cmd, { session: 'main' });
    // Boundary i judges the turn before it. `expected[i]`: the kinds allowed at boundary i.
    const turns = ['mkdir -p /work && cd /work && echo a > a.txt', 'ls; cat a.txt; grep -r a .', 'echo b >> a.txt', 'sleep 600 &', 'ls', 'kill %1', 'cat a.txt'];
    const expected = [
      ['full'], // first boundary
      ['process'], // a new session shell (and files)
      ['skip'], // only reads
      ['fs'], // only a file write
      ['process'], // a background job started
      ['skip', 'process'], // the job may still have been starting (exec) at the last freeze: it ran since
      ['process'], // the job was killed
      ['skip', 'process'], // the shell reports the killed job once (its job table changes)
      ['skip'], // only reads
    ];
    turns.push('cat a.txt');
    for (const cmd of turns) {
      await ask();
      await s(cmd);
    }
    await ask();
    const cks = await host.checkpointer.catalog.listCheckpoints(id);
    const records = host.proxy!.turns(id);
    assert.equal(records.length, expected.length);
    const kindAt = (i: number) => cks.find((c) => c.turn === i)?.kind ?? 'skip';
    const why = cks.map((c) => `${c.turn}:${c.kind}:${(c.effects as { reasons?: string[] })?.reasons?.join('+')}`).join(' ');
    expected.forEach((allowed, i) => assert.ok(allowed.includes(kindAt(i)), `boundary ${i}: ${kindAt(i)} not in ${allowed} (${why})`));
    for (const r of records) {
      assert.ok(r.gate === 'committed' || r.gate === 'skipped', `turn ${r.turnIndex}: gate ${r.gate}`);
      assert.ok(r.releasedAt! >= r.gateSettledAt!, `turn ${r.turnIndex}: released after its gate settled`);
      const ck = cks.find((c) => c.turn === r.turnIndex);
      if (ck) assert.ok(ck.createdAtMs <= r.releasedAt!, `turn ${r.turnIndex}: checkpoint committed before release`);
    }
  });

  test('crab mode: a turn that only changes the shell takes an fs checkpoint and a replay script; recovery and rollback bring the shell back exactly', async () => {
    const id = `${prefix}-shell`;
    await host.service.createSandbox({ name: id });
    host.setMode(id, 'crab');
    const client = new OpenAI({ apiKey: 'k', baseURL: `${host.proxyUrl}/s/${id}/v1` });
    const s = (cmd: string) => host.service.exec(id, cmd, { session: 'main' });
    const turns = [
      'mkdir -p /work && cd /work', // a new session shell: in the process image
      "export A=1; f() { echo hi from f; }; alias ll='ls -l'", // shell only: replayed
      'echo x > /work/x', // files only, the shell still not the image's: replayed again
      'cd /tmp; A=2; set -o pipefail', // shell only: replayed
      'arr=(1 2)', // an array: not replayable, so a process checkpoint
      'cat /work/x', // reads: skip
    ];
    for (const cmd of turns) {
      await client.chat.completions.create({ model: 'm', messages: [{ role: 'user', content: cmd }] });
      await s(cmd);
    }
    await client.chat.completions.create({ model: 'm', messages: [{ role: 'user', content: 'last' }] });
    const cks = await host.checkpointer.catalog.listCheckpoints(id);
    const at = (turn: number) => cks.find((c) => c.turn === turn);
    const why = cks.map((c) => `${c.turn}:${c.kind}:${(c.effects as { reasons?: string[] })?.reasons?.join('+')}`).join(' ');
    const replayOf = (turn: number) => (at(turn)?.meta as { shellReplay?: Record<string, string> } | undefined)?.shellReplay;
    assert.deepEqual([2, 3, 4, 5, 6].map((t) => at(t)?.kind ?? 'skip'), ['fs', 'fs', 'fs', 'process', 'skip'], why);
    assert.ok(replayOf(2)?.main && replayOf(3)?.main && replayOf(4)?.main, `fs checkpoints carry the shell's digest (${why})`);
    assert.equal(replayOf(5), undefined);
    const shellAt = (t: number) => (at(t)!.meta as { shellReplay: Record<string, string> }).shellReplay.main;

    // killed after turn 5's boundary was taken: back to turn 5 (a process image: no replay needed)
    await host.service.stopSandbox(id);
    await host.recover(id);
    assert.deepEqual((await s('pwd; echo $A ${arr[1]}; f; alias ll; cat /work/x')).stdout.trim().split('\n'), ['/tmp', '2 2', 'hi from f', "alias ll='ls -l'", 'x']);
    // roll back to turn 4 (the image of turn 1 and a script): exactly the shell turn 4 left
    await host.service.rollback(id, at(4)!.id, { force: true });
    const ch = host.service.sandboxes.channel(id);
    assert.equal(ch.sessionState('main'), shellAt(4));
    assert.deepEqual((await s('pwd; echo "$A" "${arr[*]}"; f; shopt -o pipefail | cut -f2; cat /work/x')).stdout.trim().split('\n'), ['/tmp', '2 ', 'hi from f', 'on', 'x']);
    // and to turn 2, in a new sandbox: the script runs there too
    const other = `${prefix}-shell-as`;
    await host.service.restore(at(2)!.id, { as: other });
    assert.deepEqual((await host.service.exec(other, 'pwd; echo $A; f; test -e /work/x || echo no-x', { session: 'main' })).stdout.trim().split('\n'), ['/work', '1', 'hi from f', 'no-x']);
  });

  for (const mode of ['full', 'crab', 'chat-only'] as const) {
    test(`recover after a kill at a random turn (${mode} mode)`, async () => {
      const id = `${prefix}-rec-${mode}`;
      await host.service.createSandbox({ name: id });
      host.setMode(id, mode);
      const client = new OpenAI({ apiKey: 'k', baseURL: `${host.proxyUrl}/s/${id}/v1` });
      const s = (cmd: string) => host.service.exec(id, cmd, { session: 'main' });
      const killAt = 2 + Math.floor(Math.random() * 3);
      for (let turn = 1; turn <= killAt; turn++) {
        await client.chat.completions.create({ model: 'm', messages: [{ role: 'user', content: `turn ${turn}` }] });
        await s(`cd /root; export T=${turn}; echo ${turn} >> log; sleep ${600 + turn} &`);
      }
      // The last boundary: what recovery must bring back.
      await client.chat.completions.create({ model: 'm', messages: [{ role: 'user', content: 'last' }] });
      await host.service.stopSandbox(id);
      if (mode === 'chat-only') {
        await assert.rejects(host.recover(id), { code: 'RECOVER_NO_CHECKPOINT' });
        return;
      }
      const r = await host.recover(id);
      assert.equal(r.turn, killAt);
      const out = await s('pwd; echo $T; tail -1 log; jobs | wc -l');
      assert.deepEqual(out.stdout.trim().split('\n'), ['/root', String(killAt), String(killAt), String(killAt)]);
    });
  }

  test('metrics expose queue, job and gate figures', () => {
    const text = host.metrics();
    assert.match(text, /gate/);
  });
});
