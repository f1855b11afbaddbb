/**
 * An agent that lives inside its sandbox (created with a link to the proxy): its requests are
 * known by source address, it is left out of the process signal (read-only turns skip), and
 * after a kill `recover` brings it back through CRIU with its own memory; a fork's agent gets a
 * new address and carries on as the fork's.
 */
import test, { after, before, describe } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { rootOnly, testPrefix } from '../../support/root.js';
import { paths, removeByPrefix } from '../../support/sandboxes.js';
import { sendChatCompletion, startFakeUpstream, type FakeUpstream } from '../../support/fake-upstream.js';
import { rootLogger } from '../../../src/core/log.js';
import { CrabHost } from '../../../src/daemon/host.js';
import { LINK_GATEWAY, leases, linkNames } from '../../../src/sandbox/net-link.js';

const TURNS = 8;
/** What the fake LLM tells the agent to do after request `i` (0-based). */
const ACTIONS = ['write', 'read', 'read', 'write', 'read', 'read', 'write', 'read'];

/** The agent: keeps its progress in memory only; retries a request whose connection broke. */
const AGENT = `
import json, os, sys, time, urllib.request
base, turns = sys.argv[1], int(sys.argv[2])
done = []          # in memory only: comes back through CRIU or not at all
log = open('/work/agent.log', 'a', buffering=1)
while len(done) < turns:
    body = json.dumps({'model': 'm', 'messages': [{'role': 'user', 'content': 'turn %d' % len(done)}]}).encode()
    while True:
        try:
            req = urllib.request.Request(base + '/v1/chat/completions', body, {'content-type': 'application/json'})
            action = json.load(urllib.request.urlopen(req, timeout=120))['choices'][0]['message']['content']
            break
        except Exception as e:
            log.write('retry after %r\\n' % (e,))
            time.sleep(0.2)
    done.append(action)
    if action == 'write':
        with open('/work/out.txt', 'a') as f:
            f.write('%d\\n' % len(done))
    else:
        os.listdir('/work')
with open('/work/done', 'w') as f:
    f.write('%d %s\\n' % (len(done), ','.join(done)))
`;

const expectedOut = ACTIONS.map((a, i) => (a === 'write' ? `${i + 1}\n` : '')).join('');

describe('an in-sandbox agent over the proxy link', rootOnly(), () => {
  const prefix = testPrefix('link');
  let host: CrabHost;
  let upstream: FakeUpstream;
  before(async () => {
    upstream = await startFakeUpstream();
    // The answer to "turn i" is ACTIONS[i], after 1.2 s.
    upstream.override = (_req, res, body) => {
      const i = Number(/turn (\d+)/.exec(body.toString())?.[1] ?? 0);
      setTimeout(() => sendChatCompletion(res, ACTIONS[i] ?? 'read'), 1200);
    };
    host = await CrabHost.start({ paths, log: rootLogger, proxy: { upstreamUrl: upstream.url } });
  });
  after(async () => {
    await removeByPrefix(host.service.sandboxes, prefix);
    await host.close();
    await upstream.close();
  });

  const exec = (id: string, cmd: string) => host.service.exec(id, cmd, { timeoutMs: 30_000 });
  const waitFor = async (id: string, cmd: string, what: string, ms = 120_000) => {
    const until = Date.now() + ms;
    while (Date.now() < until) {
      if ((await exec(id, cmd)).exitCode === 0) return;
      await sleep(200);
    }
    throw new Error(`timed out waiting for ${what}: ${(await exec(id, 'cat /work/agent.log')).stdout}`);
  };

  test('source-address turns, agent left out of the signal, recover after a kill, fork with a new address', async () => {
    const id = `${prefix}-a`;
    const sb = await host.service.createSandbox({ name: id, packages: ['python3'], link: true });
    assert.ok(sb.link, 'the sandbox has a link');
    assert.equal(leases(host.service.sandboxes.linkLeaseDir, host.service.sandboxes.linkScope).get(sb.link.address), id);
    host.setMode(id, 'crab');
    const port = host.controller.agentEndpoint!.port;
    await exec(id, `mkdir -p /work && cat > /work/agent.py <<'EOF'\n${AGENT}\nEOF`);
    await exec(id, `cd /work; nohup python3 agent.py http://${LINK_GATEWAY}:${port} ${TURNS} >/dev/null 2>&1 &`);

    // Kill the sandbox while the agent waits for the LLM after its 5th turn.
    const until = Date.now() + 120_000;
    while (host.proxy!.turns(id).length < 6 && Date.now() < until) await sleep(100);
    await sleep(300); // the 6th request is in flight: kill mid-wait
    const before = host.proxy!.turns(id);
    assert.ok(before.length >= 5, `turns counted by source address: ${before.length}`);
    await host.service.stopSandbox(id);
    const rec = await host.recover(id);
    assert.ok(rec.turn !== null && rec.turn >= 1, `recovered at turn ${rec.turn}`);
    await waitFor(id, 'test -f /work/done', 'the recovered agent to finish');

    const done = (await exec(id, 'cat /work/done')).stdout.trim();
    assert.equal(done, `${TURNS} ${ACTIONS.join(',')}`, 'the agent finished every turn exactly once in its own memory');
    assert.equal((await exec(id, 'cat /work/out.txt')).stdout, expectedOut, 'files hold each write once');
    const log = (await exec(id, 'cat /work/agent.log')).stdout;
    assert.match(log, /retry after/, 'the restored agent retried its broken request');

    // The decisions before the kill: read-only turns skip although the agent ran and its memory changed.
    const cks = await host.checkpointer.catalog.listCheckpoints(id);
    const kinds = new Map(cks.map((c) => [c.turn, c.kind]));
    const firstTurn = before[0]!.turnIndex;
    assert.equal(kinds.get(firstTurn), 'full', 'first boundary: full');
    // Boundary firstTurn+k judges the agent's k-th action (ACTIONS[k-1]).
    for (let k = 1; k <= 4; k++) {
      const kind = kinds.get(firstTurn + k) ?? 'skip';
      // A write takes a process checkpoint: the agent's memory must match the files it wrote.
      const allowed = ACTIONS[k - 1] === 'write' ? ['process'] : ['skip'];
      assert.ok(allowed.includes(kind), `boundary after action ${k} (${ACTIONS[k - 1]}): ${kind}; ${cks.map((c) => `${c.turn}:${c.kind}:${(c.effects as { reasons?: string[] })?.reasons?.join('+')}`).join(' ')}`);
    }
    for (const r of host.proxy!.turns(id)) assert.notEqual(r.gate, 'failed', `turn ${r.turnIndex}: gate failed`);

    // A fork of the recovered checkpoint (the agent mid-request in it): new sandbox, new address; the
    // agent's connection comes back closed, it retries, and the proxy knows it as the fork's.
    const [fork] = await host.checkpointer.fork(rec.checkpointId, 1, { prefix: `${prefix}-f` });
    const forkId = fork!.sandboxId;
    const forkRec = host.service.sandboxes.record(forkId);
    assert.ok(forkRec.link && forkRec.link.address !== sb.link.address, 'the fork has its own address');
    await waitFor(forkId, 'test -f /work/done', "the fork's agent to finish");
    assert.equal((await exec(forkId, 'cat /work/done')).stdout.trim(), done, "the fork's agent finished the same session");
    assert.ok(host.proxy!.turns(forkId).length > 0, "the fork's requests count as the fork's turns");

    // Removing the sandboxes releases their links.
    await host.service.removeSandbox(forkId);
    await host.service.removeSandbox(id);
    assert.ok(![...leases(host.service.sandboxes.linkLeaseDir, host.service.sandboxes.linkScope).values()].some((o) => o === id || o === forkId), 'leases released');
    assert.ok(!fs.existsSync(`/run/netns/${linkNames(id).netns}`), 'namespace removed');
    assert.ok(!fs.existsSync(`/sys/class/net/${linkNames(id).hostIf}`), 'veth removed');
  });
});
