import test from 'node:test';
import assert from 'node:assert/strict';
import { pino } from 'pino';
import OpenAI from 'openai';
import { createLlmProxy } from '../../../src/coordinator/proxy.js';
import { schedulerTurnHooks } from '../../../src/coordinator/scheduler-hooks.js';
import { createScheduler } from '../../../src/engine/scheduler.js';
import { startFakeUpstream } from '../../support/fake-upstream.js';

const quiet = pino({ level: 'silent' });
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

test('proxy + scheduler: responses wait for their checkpoint jobs; skipped turns pass; metrics see gate waits', async (t) => {
  const upstream = await startFakeUpstream();
  const sched = createScheduler<string>({ maxConcurrentJobs: 1, policy: 'reactive' }, { logger: quiet });
  const committedAt = new Map<string, number>();
  const hooks = schedulerTurnHooks(sched, (b) => {
    if (b.turnIndex === 1) return null; // a read-only turn: no checkpoint
    return async () => {
      await sleep(80);
      committedAt.set(`${b.sandboxId}:${b.turnIndex}`, performance.now());
      return 'ckpt';
    };
  });
  const proxy = createLlmProxy(
    { upstreamUrl: upstream.url },
    { hooks, isKnownSandbox: () => true, logger: quiet },
  );
  const url = await proxy.listen();
  t.after(async () => {
    await proxy.close();
    await upstream.close();
  });
  const client = new OpenAI({ baseURL: `${url}/s/sb1/v1`, apiKey: 'k', maxRetries: 0 });
  for (let turn = 0; turn < 3; turn++) {
    const stream = await client.chat.completions.create({ model: 'fake', stream: true, messages: [] });
    const gotAt = performance.now();
    for await (const _ of stream) void _;
    const c = committedAt.get(`sb1:${turn}`);
    if (turn === 1) assert.equal(c, undefined);
    else assert.ok(c !== undefined && gotAt >= c, `turn ${turn} released before its checkpoint committed`);
  }
  assert.deepEqual(
    proxy.turns().map((r) => r.gate),
    ['committed', 'skipped', 'committed'],
  );
  assert.ok(proxy.turns()[0]!.gateWaitMs! > 40);
  const text = sched.renderMetrics();
  assert.match(text, /^crab_gate_wait_seconds_count 3$/m);
  assert.match(text, /^crab_gate_releases_total\{outcome="skipped"\} 1$/m);
});
