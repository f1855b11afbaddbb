/**
 * 32 co-located real sandboxes run a synthetic agent loop through one proxy and one engine
 * (LLM latency 1–10 s, random effects): every counted turn gets exactly the checkpoint kind its
 * effects call for, checkpoints commit in turn order, and no response is released before its
 * checkpoint commits.
 */
import test, { after, before, describe } from 'node:test';
import assert from 'node:assert/strict';
import { rootOnly, testPrefix } from '../../support/root.js';
import { paths, removeByPrefix } from '../../support/sandboxes.js';
import { sendChatCompletion, startFakeUpstream, type FakeUpstream } from '../../support/fake-upstream.js';
import { rootLogger } from '../../../src/core/log.js';
import { seededRandom } from '../../../src/core/rng.js';
import { CrabHost } from '../../../src/daemon/host.js';
import { percentile } from '../../../src/bench/replay.js';

const SANDBOXES = 32;
const ACTIONS_PER_SANDBOX = 4;

/** Effects a turn can have, with the checkpoint kind the policy must choose at the next boundary. */
const EFFECTS = {
  read: { cmd: 'cat /etc/hostname >/dev/null; ls /work >/dev/null', kind: 'skip' },
  write: { cmd: 'echo $RANDOM >> /work/notes.txt', kind: 'fs' },
  // Waits until the job sleeps in clock_nanosleep (230), so the boundary sees it settled.
  spawn: { cmd: "sleep 100000 & until grep -qs '^230 ' /proc/$!/syscall; do :; done", kind: 'process' },
} as const;

describe(`${SANDBOXES} co-located sandboxes through one proxy and engine`, rootOnly(), () => {
  const prefix = testPrefix('coloc');
  let host: CrabHost;
  let upstream: FakeUpstream;
  before(async () => {
    upstream = await startFakeUpstream();
    // Answers after the latency the request asks for (the synthetic agent draws it).
    upstream.override = (_req, res, body) => {
      const ms = Number((JSON.parse(body.toString()) as { latency_ms?: number }).latency_ms ?? 0);
      setTimeout(() => sendChatCompletion(res, 'ok'), ms);
    };
    host = await CrabHost.start({ paths, log: rootLogger, policy: 'reactive', proxy: { upstreamUrl: upstream.url, link: false } });
  });
  after(async () => {
    await removeByPrefix(host.service.sandboxes, prefix);
    await host.close();
    await upstream.close();
  });

  test('each turn gets the kind its effects call for, in turn order, never released before commit', { timeout: 600_000 }, async () => {
    const rand = seededRandom(20261126);
    const ids = Array.from({ length: SANDBOXES }, (_, i) => `${prefix}-${i}`);
    for (const id of ids) {
      await host.service.createSandbox({ name: id });
      host.setMode(id, 'crab');
      await host.service.exec(id, 'mkdir -p /work', { session: 'agent' }); // the session shell exists before boundary 0
    }
    const plans = ids.map(() => Array.from({ length: ACTIONS_PER_SANDBOX }, () => (['read', 'read', 'write', 'spawn'] as const)[Math.floor(rand() * 4)]!));
    const latencies = ids.map(() => Array.from({ length: ACTIONS_PER_SANDBOX + 1 }, () => 1000 + Math.floor(rand() * 9000)));

    await Promise.all(
      ids.map(async (id, s) => {
        for (let t = 0; t <= ACTIONS_PER_SANDBOX; t++) {
          const res = await fetch(`${host.proxyUrl}/s/${id}/v1/chat/completions`, {
            method: 'POST',
            headers: { 'content-type': 'application/json' },
            body: JSON.stringify({ model: 'm', messages: [{ role: 'user', content: `turn ${t}` }], latency_ms: latencies[s]![t] }),
          });
          assert.equal(res.status, 200);
          await res.arrayBuffer();
          if (t < ACTIONS_PER_SANDBOX) {
            const r = await host.service.exec(id, EFFECTS[plans[s]![t]!].cmd, { session: 'agent' });
            assert.equal(r.exitCode, 0, r.stderr);
          }
        }
      }),
    );

    const waits: number[] = [];
    for (const [s, id] of ids.entries()) {
      const records = host.proxy!.turns(id);
      assert.equal(records.length, ACTIONS_PER_SANDBOX + 1, `${id}: every request counted`);
      const cks = await host.checkpointer.catalog.listCheckpoints(id);
      const byTurn = new Map(cks.map((c) => [c.turn, c]));
      const expected = ['full', ...plans[s]!.map((e) => EFFECTS[e].kind)];
      const got = records.map((r) => byTurn.get(r.turnIndex)?.kind ?? 'skip');
      const why = cks.map((c) => `${c.turn}:${c.kind}:${(c.effects as { reasons?: string[] } | null)?.reasons?.join('+')} ${JSON.stringify((c.effects as { probe?: unknown } | null)?.probe ?? '')}`).join(' ');
      assert.deepEqual(got, expected, `${id}: kinds per boundary (plan ${plans[s]!.join(',')}; ${why})`);
      const committed = records.filter((r) => byTurn.has(r.turnIndex)).map((r) => byTurn.get(r.turnIndex)!.createdAtMs);
      assert.deepEqual(committed, [...committed].sort((a, b) => a - b), `${id}: checkpoints commit in turn order`);
      for (const r of records) {
        assert.ok(r.gate === 'committed' || r.gate === 'skipped', `${id} turn ${r.turnIndex}: gate ${r.gate}`);
        const ck = byTurn.get(r.turnIndex);
        if (ck) assert.ok(ck.createdAtMs <= r.releasedAt!, `${id} turn ${r.turnIndex}: released before its checkpoint committed`);
        waits.push(r.gateWaitMs ?? 0);
      }
    }
    const kinds = plans.flat().reduce<Record<string, number>>((a, e) => ({ ...a, [EFFECTS[e].kind]: (a[EFFECTS[e].kind] ?? 0) + 1 }), {});
    console.log(`# ${SANDBOXES} sandboxes, ${waits.length} turns (${JSON.stringify(kinds)} + ${SANDBOXES} first fulls): gate wait p50 ${percentile(waits, 50).toFixed(0)} ms, p99 ${percentile(waits, 99).toFixed(0)} ms`);
  });
});
