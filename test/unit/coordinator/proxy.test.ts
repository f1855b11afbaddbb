import test, { type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import net from 'node:net';
import OpenAI from 'openai';
import Anthropic from '@anthropic-ai/sdk';
import { pino } from 'pino';
import { createLlmProxy, type LlmProxyConfig, type LlmProxy } from '../../../src/coordinator/proxy.js';
import type { TurnBoundary, TurnGate } from '../../../src/coordinator/turn-hooks.js';
import { rawRequest, startFakeUpstream, type FakeUpstream } from '../../support/fake-upstream.js';

interface Harness {
  upstream: FakeUpstream;
  proxy: LlmProxy;
  url: string;
  boundaries: TurnBoundary[];
  arrivals: Array<{ sandboxId: string; turnIndex: number; at: number }>;
  /** Turns whose gate hit the hold limit (onHoldLimit). */
  holdLimits: Array<{ sandboxId: string; turnIndex: number; gate: string }>;
  /** What onTurnBoundary returns (default: an already resolved gate). */
  gate: (b: TurnBoundary) => TurnGate;
}

const quiet = pino({ level: 'silent' });
const KNOWN = new Set(['sb1', 'sb2', 'sb-addr']);

async function harness(
  t: TestContext,
  opts: { config?: Partial<LlmProxyConfig>; byAddress?: (a: string) => string | undefined } = {},
): Promise<Harness> {
  const upstream = await startFakeUpstream();
  const h = {
    upstream,
    boundaries: [],
    arrivals: [],
    holdLimits: [],
    gate: () => Promise.resolve(),
  } as unknown as Harness;
  h.proxy = createLlmProxy(
    { upstreamUrl: upstream.url, ...opts.config },
    {
      hooks: {
        onTurnBoundary: (b) => {
          h.boundaries.push(b);
          return h.gate(b);
        },
        onResponseArrived: (sandboxId, turnIndex) =>
          h.arrivals.push({ sandboxId, turnIndex, at: performance.now() }),
        onHoldLimit: (r) => h.holdLimits.push({ sandboxId: r.sandboxId, turnIndex: r.turnIndex, gate: r.gate }),
      },
      isKnownSandbox: (id) => KNOWN.has(id),
      sandboxByAddress: opts.byAddress,
      logger: quiet,
    },
  );
  h.url = await h.proxy.listen();
  t.after(async () => {
    await h.proxy.close();
    await upstream.close();
  });
  return h;
}

function deferred<T = void>() {
  let resolve!: (v: T) => void;
  let reject!: (e: unknown) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const chatBody = (stream: boolean) =>
  JSON.stringify({ model: 'fake', stream, messages: [{ role: 'user', content: 'hi' }] });

test('openai SDK, non-streaming chat through /s/<sandbox>/v1: unmodified, counted once', async (t) => {
  const h = await harness(t);
  const client = new OpenAI({ baseURL: `${h.url}/s/sb1/v1`, apiKey: 'sk-test', maxRetries: 0 });
  const out = await client.chat.completions.create({
    model: 'fake',
    messages: [{ role: 'user', content: 'hi' }],
  });
  assert.equal(out.choices[0]!.message.content, 'Hello from the fake upstream ✓');
  assert.equal(h.boundaries.length, 1);
  assert.equal(h.boundaries[0]!.sandboxId, 'sb1');
  assert.equal(h.boundaries[0]!.turnIndex, 0);
  const got = h.upstream.received[0]!;
  assert.equal(got.url, '/v1/chat/completions');
  assert.equal(got.headers.host, new URL(h.upstream.url).host);
  assert.equal(got.headers.authorization, 'Bearer sk-test');
  assert.equal(got.headers['x-crab-sandbox'], undefined);
  assert.equal(h.arrivals.length, 1);
  const [rec] = h.proxy.turns('sb1');
  assert.equal(rec!.gate, 'committed');
  assert.equal(rec!.status, 200);
  assert.equal(rec!.end, 'completed');
});

test('openai SDK, streaming chat: deltas arrive and the raw bytes equal what the upstream sent', async (t) => {
  const h = await harness(t);
  const client = new OpenAI({ baseURL: `${h.url}/s/sb1/v1`, apiKey: 'sk-test', maxRetries: 0 });
  const stream = await client.chat.completions.create({
    model: 'fake',
    stream: true,
    messages: [{ role: 'user', content: 'hi' }],
  });
  let text = '';
  for await (const chunk of stream) text += chunk.choices[0]?.delta.content ?? '';
  assert.equal(text, 'Hello from the fake upstream ✓');

  const raw = await rawRequest(`${h.url}/s/sb1/v1/chat/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: chatBody(true),
  });
  assert.equal(raw.status, 200);
  assert.equal(raw.headers['content-type'], 'text/event-stream');
  assert.ok(raw.body.equals(h.upstream.sent[1]!.body), 'SSE bytes differ');
  assert.deepEqual(
    h.boundaries.map((b) => b.turnIndex),
    [0, 1],
  );
});

test('openai SDK: responses counted, models.list not (header identification)', async (t) => {
  const h = await harness(t);
  const client = new OpenAI({
    baseURL: `${h.url}/v1`,
    apiKey: 'sk-test',
    maxRetries: 0,
    defaultHeaders: { 'X-Crab-Sandbox': 'sb2' },
  });
  const models = await client.models.list();
  assert.equal(models.data[0]!.id, 'fake');
  assert.equal(h.boundaries.length, 0, 'GET /v1/models must not call the hook');
  const r = await client.responses.create({ model: 'fake', input: 'hi' });
  assert.equal(r.output_text, 'Hello from the fake upstream ✓');
  assert.equal(h.boundaries.length, 1);
  assert.equal(h.boundaries[0]!.sandboxId, 'sb2');
  assert.equal(h.upstream.received[1]!.headers['x-crab-sandbox'], undefined);
});

test('anthropic SDK: messages (plain and streaming) counted, count_tokens not', async (t) => {
  const h = await harness(t);
  const client = new Anthropic({ baseURL: `${h.url}/s/sb1`, apiKey: 'sk-ant-test', maxRetries: 0 });
  const tokens = await client.messages.countTokens({
    model: 'fake',
    messages: [{ role: 'user', content: 'hi' }],
  });
  assert.equal(tokens.input_tokens, 7);
  assert.equal(h.boundaries.length, 0, 'count_tokens must not call the hook');

  const msg = await client.messages.create({
    model: 'fake',
    max_tokens: 10,
    messages: [{ role: 'user', content: 'hi' }],
  });
  assert.deepEqual(msg.content, [{ type: 'text', text: 'Hello from the fake upstream ✓' }]);
  const sentHeaders = h.upstream.received[1]!.headers;
  assert.ok(
    sentHeaders['x-api-key'] === 'sk-ant-test' || sentHeaders.authorization === 'Bearer sk-ant-test',
    'credentials forwarded',
  );
  assert.ok(sentHeaders['anthropic-version'], 'anthropic-version forwarded');

  const stream = client.messages.stream({
    model: 'fake',
    max_tokens: 10,
    messages: [{ role: 'user', content: 'hi' }],
  });
  let text = '';
  stream.on('text', (d) => (text += d));
  const final = await stream.finalMessage();
  assert.equal(text, 'Hello from the fake upstream ✓');
  assert.equal(final.stop_reason, 'end_turn');
  assert.deepEqual(
    h.boundaries.map((b) => `${b.sandboxId}:${b.turnIndex}`),
    ['sb1:0', 'sb1:1'],
  );

  const raw = await rawRequest(`${h.url}/s/sb1/v1/messages`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'x-api-key': 'k' },
    body: JSON.stringify({ model: 'fake', max_tokens: 10, stream: true, messages: [] }),
  });
  assert.ok(raw.body.equals(h.upstream.sent.at(-1)!.body), 'Anthropic SSE bytes differ');
});

test('request bodies reach the upstream byte for byte (odd JSON, chunked upload, query string)', async (t) => {
  const h = await harness(t);
  const body = '{ "model" :"fake",\n  "messages":[ ],  "x":"\u00e9\u{1F980}" }  ';
  await rawRequest(`${h.url}/s/sb1/v1/chat/completions?api-version=2024-01-01`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body,
  });
  assert.equal(h.upstream.received[0]!.url, '/v1/chat/completions?api-version=2024-01-01');
  assert.ok(h.upstream.received[0]!.body.equals(Buffer.from(body)));
  assert.equal(h.boundaries.length, 1, 'the query string does not stop a turn from counting');

  // chunked upload (no content-length)
  const { port } = new URL(h.url);
  const got = await new Promise<number>((resolve, reject) => {
    const req = http.request(
      { host: '127.0.0.1', port, method: 'POST', path: '/s/sb1/v1/echo', headers: { 'x-custom': 'kept' } },
      (res) => {
        res.resume();
        res.on('end', () => resolve(res.statusCode ?? 0));
      },
    );
    req.on('error', reject);
    req.write('part-1;');
    setTimeout(() => req.end('part-2'), 10);
  });
  assert.equal(got, 200);
  assert.equal(h.upstream.received[1]!.body.toString(), 'part-1;part-2');
  assert.equal(h.upstream.received[1]!.headers['x-custom'], 'kept');
});

test('the gate holds the response until the checkpoint promise resolves; forwarding does not wait', async (t) => {
  const h = await harness(t);
  for (const stream of [false, true]) {
    const d = deferred();
    h.gate = () => d.promise;
    const before = h.upstream.received.length;
    const pending = rawRequest(`${h.url}/s/sb1/v1/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: chatBody(stream),
    });
    // the request reaches the upstream and its response arrives while the gate is closed
    for (let i = 0; i < 1000 && !(h.upstream.received.length === before + 1 && h.arrivals.length === (stream ? 2 : 1)); i++) await sleep(5);
    assert.equal(h.upstream.received.length, before + 1, 'request must reach the upstream while the gate is closed');
    assert.equal(h.arrivals.length, stream ? 2 : 1, 'onResponseArrived is called while the response is held');
    const heldFrom = performance.now();
    await sleep(100); // the response stays held while the gate is closed
    const resolvedAt = performance.now();
    d.resolve();
    const res = await pending;
    assert.ok(
      res.headAt >= resolvedAt,
      `head released ${resolvedAt - res.headAt} ms before the gate resolved`,
    );
    assert.ok(res.firstByteAt >= resolvedAt, 'first body byte released before the gate resolved');
    assert.ok(res.body.equals(h.upstream.sent.at(-1)!.body));
    const rec = h.proxy.turns('sb1').at(-1)!;
    assert.equal(rec.gate, 'committed');
    assert.ok(rec.gateWaitMs! >= resolvedAt - heldFrom, `gate wait ${rec.gateWaitMs} ms, held at least ${resolvedAt - heldFrom} ms`);
    assert.ok(rec.releasedAt! >= rec.gateSettledAt!);
  }
});

test('gate failure (rejection or throw) still releases the response and is recorded', async (t) => {
  const h = await harness(t);
  h.gate = () => Promise.reject(new Error('criu exploded'));
  const a = await rawRequest(`${h.url}/s/sb1/v1/chat/completions`, { method: 'POST', body: chatBody(false) });
  assert.equal(a.status, 200);
  h.gate = () => {
    throw new Error('hook threw');
  };
  const b = await rawRequest(`${h.url}/s/sb1/v1/chat/completions`, { method: 'POST', body: chatBody(false) });
  assert.equal(b.status, 200);
  h.gate = () => Promise.resolve({ outcome: 'skipped' as const, detail: 'no effects' });
  await rawRequest(`${h.url}/s/sb1/v1/chat/completions`, { method: 'POST', body: chatBody(false) });
  const recs = h.proxy.turns('sb1');
  assert.deepEqual(
    recs.map((r) => [r.gate, r.gateDetail]),
    [
      ['failed', 'criu exploded'],
      ['failed', 'hook threw'],
      ['skipped', 'no effects'],
    ],
  );
});

test('gateMaxHoldMs releases a response whose gate never settles', async (t) => {
  const h = await harness(t, { config: { gateMaxHoldMs: 50 } });
  h.gate = () => new Promise(() => undefined);
  const res = await rawRequest(`${h.url}/s/sb1/v1/messages`, { method: 'POST', body: '{}' });
  assert.equal(res.status, 200);
  assert.equal(h.proxy.turns()[0]!.gate, 'timeout');
  assert.match(h.proxy.turns()[0]!.gateDetail ?? '', /within 50 ms/);
  assert.deepEqual(h.holdLimits, [{ sandboxId: 'sb1', turnIndex: 0, gate: 'timeout' }], 'onHoldLimit called once, before the release');
});

test('the gate hold limit defaults to 30 s, and a gate that settles in time is not cut short', async (t) => {
  const h = await harness(t);
  const d = deferred();
  h.gate = () => d.promise;
  const pending = rawRequest(`${h.url}/s/sb1/v1/messages`, { method: 'POST', body: '{}' });
  while (h.arrivals.length === 0) await sleep(5);
  d.resolve();
  assert.equal((await pending).status, 200);
  assert.equal(h.proxy.turns()[0]!.gate, 'committed');
  assert.deepEqual(h.holdLimits, []);
  assert.throws(() => createLlmProxy({ upstreamUrl: h.upstream.url, gateMaxHoldMs: 0 }, { hooks: { onTurnBoundary: () => Promise.resolve(), onResponseArrived: () => undefined }, isKnownSandbox: () => true }), /hold limit/);
});

test('upstream 429 and 500 pass through with the same status and body', async (t) => {
  const h = await harness(t);
  for (const status of [429, 500]) {
    const body = JSON.stringify({ error: { message: `status ${status}`, type: 'x', code: null } });
    h.upstream.override = (_req, res) => {
      res.writeHead(status, { 'content-type': 'application/json', 'retry-after': '0' });
      res.end(body);
    };
    const raw = await rawRequest(`${h.url}/s/sb1/v1/chat/completions`, {
      method: 'POST',
      body: chatBody(false),
    });
    assert.equal(raw.status, status);
    assert.equal(raw.body.toString(), body);
    const client = new OpenAI({ baseURL: `${h.url}/s/sb1/v1`, apiKey: 'k', maxRetries: 0 });
    await assert.rejects(
      client.chat.completions.create({ model: 'fake', messages: [] }),
      (e: unknown) => e instanceof OpenAI.APIError && e.status === status,
    );
  }
  assert.deepEqual(
    h.proxy.turns().map((r) => r.status),
    [429, 429, 500, 500],
  );
});

test('unknown routes and unknown sandboxes are forwarded but not counted', async (t) => {
  const h = await harness(t);
  const a = await rawRequest(`${h.url}/s/sb1/v1/embeddings`, { method: 'POST', body: '{"input":"x"}' });
  assert.equal(a.status, 200);
  assert.equal(JSON.parse(a.body.toString()).echo.url, '/v1/embeddings');
  const b = await rawRequest(`${h.url}/s/ghost/v1/chat/completions`, {
    method: 'POST',
    body: chatBody(false),
  });
  assert.equal(b.status, 200);
  const c = await rawRequest(`${h.url}/v1/chat/completions`, { method: 'POST', body: chatBody(false) });
  assert.equal(c.status, 200);
  const d = await rawRequest(`${h.url}/s/sb1/v1/responses/resp_1`, { method: 'GET' });
  assert.equal(d.status, 200);
  assert.equal(h.boundaries.length, 0);
  assert.equal(h.arrivals.length, 0);
  assert.equal(h.upstream.received.length, 4);
});

test('a malformed or conflicting sandbox id is refused with 400 and not forwarded', async (t) => {
  const h = await harness(t);
  const cases: Array<[string, Record<string, string>]> = [
    ['/s/Bad!Id/v1/chat/completions', {}],
    ['/s//v1/chat/completions', {}],
    ['/v1/chat/completions', { 'x-crab-sandbox': '../etc' }],
    ['/s/sb1/v1/chat/completions', { 'x-crab-sandbox': 'sb2' }],
  ];
  for (const [path, headers] of cases) {
    const res = await rawRequest(`${h.url}${path}`, { method: 'POST', headers, body: chatBody(false) });
    assert.equal(res.status, 400, path);
    const err = JSON.parse(res.body.toString()).error;
    assert.match(err.code, /^PROXY_SANDBOX_(INVALID|CONFLICT)$/);
  }
  assert.equal(h.upstream.received.length, 0);
  assert.equal(h.boundaries.length, 0);
});

test('source-address map identifies the sandbox when neither path nor header does', async (t) => {
  const h = await harness(t, {
    byAddress: (a) => (a === '127.0.0.1' || a === '::ffff:127.0.0.1' ? 'sb-addr' : undefined),
  });
  await rawRequest(`${h.url}/v1/messages`, { method: 'POST', body: '{}' });
  await rawRequest(`${h.url}/s/sb1/v1/messages`, { method: 'POST', body: '{}' });
  assert.deepEqual(
    h.boundaries.map((b) => `${b.sandboxId}:${b.turnIndex}`),
    ['sb-addr:0', 'sb1:0'],
  );
});

test('upstream unreachable -> 502, upstream timeout -> 504, both JSON and both gated', async (t) => {
  const h = await harness(t, { config: { upstreamTimeoutMs: 100 } });
  h.upstream.headDelayMs = 400;
  const d = deferred();
  h.gate = () => d.promise;
  setTimeout(() => d.resolve(), 200);
  const started = performance.now();
  const timeout = await rawRequest(`${h.url}/s/sb1/v1/chat/completions`, {
    method: 'POST',
    body: chatBody(false),
  });
  assert.equal(timeout.status, 504);
  assert.equal(JSON.parse(timeout.body.toString()).error.code, 'PROXY_UPSTREAM_TIMEOUT');
  assert.ok(timeout.headAt - started >= 190, 'the 504 is held by the gate too');

  // A closed port: bind one, learn its number, close it.
  const s = http.createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const deadPort = (s.address() as { port: number }).port;
  await new Promise<void>((r) => s.close(() => r()));
  const dead = createLlmProxy(
    { upstreamUrl: `http://127.0.0.1:${deadPort}` },
    {
      hooks: { onTurnBoundary: () => Promise.resolve(), onResponseArrived: () => undefined },
      isKnownSandbox: () => true,
    },
  );
  const deadUrl = await dead.listen();
  t.after(() => dead.close());
  const bad = await rawRequest(`${deadUrl}/s/sb1/v1/chat/completions`, {
    method: 'POST',
    body: chatBody(false),
  });
  assert.equal(bad.status, 502);
  assert.equal(JSON.parse(bad.body.toString()).error.code, 'PROXY_UPSTREAM_UNREACHABLE');
  assert.equal(dead.turns()[0]!.upstreamError, 'unreachable');
  const client = new OpenAI({ baseURL: `${deadUrl}/s/sb1/v1`, apiKey: 'k', maxRetries: 0 });
  await assert.rejects(
    client.models.list(),
    (e: unknown) => e instanceof OpenAI.APIError && e.status === 502,
  );
});

test('custom turn rules replace the defaults', async (t) => {
  const h = await harness(t, {
    config: { turnRules: [{ method: 'POST', path: '/v1/embeddings', counts: true }] },
  });
  await rawRequest(`${h.url}/s/sb1/v1/chat/completions`, { method: 'POST', body: chatBody(false) });
  await rawRequest(`${h.url}/s/sb1/v1/embeddings`, { method: 'POST', body: '{}' });
  assert.deepEqual(
    h.proxy.turns().map((r) => r.path),
    ['/v1/embeddings'],
  );
});

test('streams are passed through as they come, not buffered', async (t) => {
  const h = await harness(t);
  let lastSentAt = 0;
  h.upstream.override = (_req, res) => {
    res.writeHead(200, { 'content-type': 'text/event-stream' });
    let i = 0;
    const tick = () => {
      res.write(`data: ${i}\n\n`);
      if (++i < 4) setTimeout(tick, 60);
      else {
        lastSentAt = performance.now();
        res.end();
      }
    };
    tick();
  };
  const res = await rawRequest(`${h.url}/s/sb1/v1/chat/completions`, {
    method: 'POST',
    body: chatBody(true),
  });
  assert.equal(res.body.toString(), 'data: 0\n\ndata: 1\n\ndata: 2\n\ndata: 3\n\n');
  assert.ok(
    lastSentAt - res.firstByteAt > 100,
    'the first event reached the client long before the last was sent',
  );
});

test('an agent that hangs up while its response is held cancels the upstream request', async (t) => {
  const h = await harness(t);
  const d = deferred();
  h.gate = () => d.promise;
  let upstreamClosed = false;
  h.upstream.override = (req, res) => {
    res.writeHead(200, { 'content-type': 'text/event-stream' });
    res.write('data: 0\n\n');
    req.socket.on('close', () => (upstreamClosed = true));
  };
  const { port } = new URL(h.url);
  const req = http.request({ host: '127.0.0.1', port, method: 'POST', path: '/s/sb1/v1/chat/completions' });
  req.on('error', () => undefined); // we hang up on purpose
  req.end(chatBody(true));
  await sleep(100);
  assert.equal(h.arrivals.length, 1);
  req.destroy();
  await sleep(100);
  assert.ok(upstreamClosed, 'upstream connection closed');
  d.resolve();
  await sleep(20);
  const rec = h.proxy.turns()[0]!;
  assert.equal(rec.end, 'aborted');
  assert.equal(rec.releasedAt, null);
});

test('a chunked body on a DELETE is forwarded chunked: its bytes never reach the upstream as a request of their own', async (t) => {
  const h = await harness(t);
  const smuggled = 'GET /smuggled HTTP/1.1\r\nHost: upstream\r\n\r\n';
  const port = Number(new URL(h.url).port);
  const answer = await new Promise<string>((resolve, reject) => {
    const sock = net.connect(port, '127.0.0.1');
    let text = '';
    sock.on('data', (b: Buffer) => (text += b.toString()));
    sock.on('close', () => resolve(text));
    sock.on('error', reject);
    sock.write(
      `DELETE /s/sb1/v1/files/x HTTP/1.1\r\nHost: proxy\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n${smuggled.length.toString(16)}\r\n${smuggled}\r\n0\r\n\r\n`,
    );
  });
  assert.match(answer, /^HTTP\/1\.1 200/);
  // The upstream's pooled connection is free again: a second request must get its own answer.
  const next = await rawRequest(`${h.url}/s/sb1/v1/models`);
  assert.equal(next.status, 200);
  assert.deepEqual(
    h.upstream.received.map((r) => [r.method, r.url, r.body.toString()]),
    [
      ['DELETE', '/v1/files/x', smuggled],
      ['GET', '/v1/models', ''],
    ],
  );
});
