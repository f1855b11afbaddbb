/** A local fake LLM upstream (OpenAI + Anthropic shapes) that records what it received and sent. */
import http from 'node:http';

export interface Received {
  method: string;
  url: string;
  headers: http.IncomingHttpHeaders;
  body: Buffer;
  at: number; // performance.now() when the request head arrived
}

export interface Sent {
  url: string;
  status: number;
  body: Buffer; // exact body bytes written
}

type Override = (req: http.IncomingMessage, res: http.ServerResponse, body: Buffer) => boolean | void;

export interface FakeUpstream {
  url: string;
  received: Received[];
  sent: Sent[];
  /** Handles matching requests instead of the default routes (return false to fall through). */
  override: Override | undefined;
  /** Delay between SSE chunks, ms. */
  chunkDelayMs: number;
  /** Delay before the response head, ms. */
  headDelayMs: number;
  close(): Promise<void>;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Answers with a minimal non-streaming chat completion whose message is `content` (for overrides). */
export function sendChatCompletion(res: http.ServerResponse, content: string): void {
  res.writeHead(200, { 'content-type': 'application/json' });
  res.end(JSON.stringify({ id: 'x', object: 'chat.completion', created: 0, model: 'm', choices: [{ index: 0, finish_reason: 'stop', message: { role: 'assistant', content } }] }));
}

export async function startFakeUpstream(): Promise<FakeUpstream> {
  const fake: FakeUpstream = {
    url: '',
    received: [],
    sent: [],
    override: undefined,
    chunkDelayMs: 5,
    headDelayMs: 0,
    close: async () => undefined,
  };
  const server = http.createServer((req, res) => {
    const at = performance.now();
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks);
      fake.received.push({ method: req.method ?? '', url: req.url ?? '', headers: req.headers, body, at });
      void respond(fake, req, res, body);
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const addr = server.address() as { port: number };
  fake.url = `http://127.0.0.1:${addr.port}`;
  fake.close = () =>
    new Promise<void>((r) => {
      server.close(() => r());
      server.closeAllConnections();
    });
  return fake;
}

async function respond(
  fake: FakeUpstream,
  req: http.IncomingMessage,
  res: http.ServerResponse,
  body: Buffer,
) {
  // Received before the head delay: a test can tell forwarding from answering.
  if (fake.override && fake.override(req, res, body) !== false) return;
  if (fake.headDelayMs) await sleep(fake.headDelayMs);
  const path = (req.url ?? '').split('?')[0];
  let json: Record<string, unknown>;
  try {
    json = body.length ? (JSON.parse(body.toString()) as Record<string, unknown>) : {};
  } catch {
    json = {}; // not JSON: the echo route still answers
  }
  const sent: Sent = { url: req.url ?? '', status: 200, body: Buffer.alloc(0) };
  fake.sent.push(sent);
  const sendJson = (status: number, obj: unknown) => {
    const b = Buffer.from(JSON.stringify(obj));
    sent.status = status;
    sent.body = b;
    res.writeHead(status, { 'content-type': 'application/json', 'x-request-id': 'req_fake' });
    res.end(b);
  };
  const sendSse = async (events: string[]) => {
    res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
    const parts: Buffer[] = [];
    for (const e of events) {
      const b = Buffer.from(e);
      parts.push(b);
      sent.body = Buffer.concat(parts);
      res.write(b);
      await sleep(fake.chunkDelayMs);
    }
    res.end();
  };
  const words = ['Hello', ' from', ' the', ' fake', ' upstream', ' ✓'];
  if (req.method === 'POST' && path === '/v1/chat/completions') {
    if (json.stream) {
      const ev = words.map(
        (w, i) =>
          `data: ${JSON.stringify({ id: 'chatcmpl-1', object: 'chat.completion.chunk', created: 1, model: 'fake', choices: [{ index: 0, delta: i === 0 ? { role: 'assistant', content: w } : { content: w }, finish_reason: null }] })}\n\n`,
      );
      ev.push(
        `data: ${JSON.stringify({ id: 'chatcmpl-1', object: 'chat.completion.chunk', created: 1, model: 'fake', choices: [{ index: 0, delta: {}, finish_reason: 'stop' }] })}\n\n`,
        'data: [DONE]\n\n',
      );
      return sendSse(ev);
    }
    return sendJson(200, {
      id: 'chatcmpl-1',
      object: 'chat.completion',
      created: 1,
      model: 'fake',
      choices: [{ index: 0, message: { role: 'assistant', content: words.join('') }, finish_reason: 'stop' }],
      usage: { prompt_tokens: 3, completion_tokens: 6, total_tokens: 9 },
    });
  }
  if (req.method === 'POST' && path === '/v1/responses') {
    return sendJson(200, {
      id: 'resp_1',
      object: 'response',
      created_at: 1,
      status: 'completed',
      model: 'fake',
      output: [
        {
          type: 'message',
          id: 'msg_1',
          role: 'assistant',
          status: 'completed',
          content: [{ type: 'output_text', text: words.join(''), annotations: [] }],
        },
      ],
    });
  }
  if (req.method === 'GET' && path === '/v1/models') {
    return sendJson(200, {
      object: 'list',
      data: [{ id: 'fake', object: 'model', created: 1, owned_by: 'crab' }],
    });
  }
  if (req.method === 'POST' && path === '/v1/messages/count_tokens')
    return sendJson(200, { input_tokens: 7 });
  if (req.method === 'POST' && path === '/v1/messages') {
    const message = {
      id: 'msg_1',
      type: 'message',
      role: 'assistant',
      model: 'fake',
      content: [] as unknown[],
      stop_reason: null as string | null,
      stop_sequence: null,
      usage: { input_tokens: 3, output_tokens: 0 },
    };
    if (json.stream) {
      const ev = (name: string, data: unknown) => `event: ${name}\ndata: ${JSON.stringify(data)}\n\n`;
      return sendSse([
        ev('message_start', { type: 'message_start', message }),
        ev('content_block_start', {
          type: 'content_block_start',
          index: 0,
          content_block: { type: 'text', text: '' },
        }),
        ...words.map((w) =>
          ev('content_block_delta', {
            type: 'content_block_delta',
            index: 0,
            delta: { type: 'text_delta', text: w },
          }),
        ),
        ev('content_block_stop', { type: 'content_block_stop', index: 0 }),
        ev('message_delta', {
          type: 'message_delta',
          delta: { stop_reason: 'end_turn', stop_sequence: null },
          usage: { output_tokens: 6 },
        }),
        ev('message_stop', { type: 'message_stop' }),
      ]);
    }
    return sendJson(200, {
      ...message,
      content: [{ type: 'text', text: words.join('') }],
      stop_reason: 'end_turn',
      usage: { input_tokens: 3, output_tokens: 6 },
    });
  }
  // Anything else: echo what arrived.
  return sendJson(200, { echo: { method: req.method, url: req.url, bodyBytes: body.length } });
}

/** A plain HTTP request that returns the raw body bytes and the time the head arrived. */
export function rawRequest(
  url: string,
  opts: { method?: string; headers?: Record<string, string>; body?: string | Buffer } = {},
): Promise<{
  status: number;
  headers: http.IncomingHttpHeaders;
  body: Buffer;
  headAt: number;
  firstByteAt: number;
}> {
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method: opts.method ?? 'GET', headers: opts.headers }, (res) => {
      const headAt = performance.now();
      let firstByteAt = NaN;
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => {
        if (Number.isNaN(firstByteAt)) firstByteAt = performance.now();
        chunks.push(c);
      });
      res.on('end', () =>
        resolve({
          status: res.statusCode ?? 0,
          headers: res.headers,
          body: Buffer.concat(chunks),
          headAt,
          firstByteAt,
        }),
      );
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(opts.body);
  });
}
