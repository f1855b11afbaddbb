/**
 * A gate held past its limit (issue 19 part 7): a checkpoint that really takes longer than a small
 * configured hold limit. The agent gets its response at the limit, before the checkpoint commits;
 * the turn's record says 'timeout', /metrics counts it, the checkpoint still commits, and the
 * sandbox's next boundary takes a full checkpoint. Real sandbox, inspector, CRIU and proxy.
 */
import test, { after, before, describe } from 'node:test';
import assert from 'node:assert/strict';
import { pino } from 'pino';
import { rootOnly, testPrefix } from '../support/root.js';
import { paths, removeByPrefix } from '../support/sandboxes.js';
import { startFakeUpstream, type FakeUpstream } from '../support/fake-upstream.js';
import { CrabHost } from '../../src/daemon/host.js';

const LIMIT_MS = 50;

describe('gate hold limit (real checkpoint slower than the limit)', rootOnly(), () => {
  const prefix = testPrefix('atk-gate');
  let host: CrabHost;
  let upstream: FakeUpstream;
  before(async () => {
    upstream = await startFakeUpstream();
    host = await CrabHost.start({ paths, log: pino({ level: 'silent' }), proxy: { upstreamUrl: upstream.url, link: false }, gateLimitMs: LIMIT_MS });
  });
  after(async () => {
    await host?.scheduler.drain();
    await removeByPrefix(host.service.sandboxes, prefix);
    await host?.close();
    await upstream?.close();
  });

  test('released at the limit, recorded as timeout, counted in /metrics; the next boundary is full', async () => {
    const id = `${prefix}-g`;
    await host.service.createSandbox({ name: id });
    host.setMode(id, 'crab');
    // 24 MiB that do not compress: the first (full) checkpoint stores them, far longer than 50 ms.
    const w = await host.service.exec(id, 'head -c 24M /dev/urandom > /root/big && echo done', { timeoutMs: 120_000 });
    assert.equal(w.stdout, 'done\n', w.stderr);
    const ask = async () => {
      const t0 = performance.now();
      const r = await fetch(`${host.proxyUrl}/s/${id}/v1/chat/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ model: 'm', messages: [{ role: 'user', content: 'next' }] }) });
      const body = (await r.json()) as { choices: Array<{ message: { content: string } }> };
      return { status: r.status, content: body.choices[0]!.message.content, ms: performance.now() - t0 };
    };

    const first = await ask();
    assert.equal(first.status, 200);
    assert.equal(first.content, 'Hello from the fake upstream ✓', 'the held response is released whole');
    const r0 = host.proxy!.turns(id)[0]!;
    assert.equal(r0.gate, 'timeout', `turn 0's record: ${JSON.stringify(r0)}`);
    assert.match(r0.gateDetail ?? '', new RegExp(`within ${LIMIT_MS} ms`));
    assert.ok(r0.gateWaitMs! >= LIMIT_MS - 5, `held ${r0.gateWaitMs} ms, about the limit`);

    // The checkpoint goes on and commits after the release.
    await host.scheduler.drain();
    const ck0 = (await host.checkpointer.catalog.listCheckpoints(id)).find((c) => c.turn === 0);
    assert.ok(ck0, 'turn 0 was checkpointed all the same');
    assert.ok(ck0.createdAtMs > r0.releasedAt!, `committed ${ck0.createdAtMs - r0.releasedAt!} ms after the release: the checkpoint really took longer than the limit`);
    const metrics = host.metrics();
    assert.match(metrics, /^crab_gate_hold_limit_exceeded_total 1$/m, metrics);
    assert.match(metrics, /^crab_gate_releases_total\{outcome="timeout"\} 1$/m);

    // A read-only turn would skip; after a hold limit it is full.
    assert.equal((await host.service.exec(id, 'ls /root >/dev/null', {})).exitCode, 0);
    await ask();
    await host.scheduler.drain();
    const ck1 = (await host.checkpointer.catalog.listCheckpoints(id)).find((c) => c.turn === 1);
    assert.ok(ck1, 'turn 1 took a checkpoint');
    assert.equal(ck1.kind, 'full');
    const reasons = (ck1.effects as { reasons?: string[] } | null)?.reasons ?? [];
    assert.ok(reasons.includes('gate-hold-limit 0'), `reasons: ${reasons.join(', ')}`);
    assert.equal((await host.service.sandboxes.status(id)).status, 'running', 'not left frozen');
  });
});
