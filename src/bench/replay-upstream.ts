/**
 * @module The replayed LLM: an OpenAI-compatible upstream that answers each chat request with the
 * recorded response after the recorded latency. The replay agent puts both into the request body
 * (`crab_replay`), which the proxy forwards byte for byte.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';

export interface ReplayPayload {
  latency_ms: number;
  response: string;
  prompt_tokens: number;
  completion_tokens: number;
}

export interface ReplayUpstream {
  url: string;
  close(): Promise<void>;
}

export async function startReplayUpstream(): Promise<ReplayUpstream> {
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (b: Buffer) => chunks.push(b));
    req.on('end', () => {
      let p: ReplayPayload = { latency_ms: 0, response: 'ok', prompt_tokens: 0, completion_tokens: 0 };
      try {
        const body = JSON.parse(Buffer.concat(chunks).toString() || '{}') as { crab_replay?: ReplayPayload };
        if (body.crab_replay) p = body.crab_replay;
      } catch {
        res.writeHead(400, { 'content-type': 'application/json' });
        res.end('{"error":{"message":"replay upstream: body is not JSON"}}');
        return;
      }
      const timer = setTimeout(() => {
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(
          JSON.stringify({
            id: 'chatcmpl-replay',
            object: 'chat.completion',
            created: 0,
            model: 'replay',
            choices: [{ index: 0, finish_reason: 'stop', message: { role: 'assistant', content: p.response } }],
            usage: { prompt_tokens: p.prompt_tokens, completion_tokens: p.completion_tokens, total_tokens: p.prompt_tokens + p.completion_tokens },
          }),
        );
      }, p.latency_ms);
      res.on('close', () => clearTimeout(timer));
    });
  });
  // The proxy keeps connections alive between turns; a short server keep-alive would race with a
  // reused socket (the request then fails with a reset: 502).
  server.keepAliveTimeout = 10 * 60_000;
  server.headersTimeout = 10 * 60_000 + 1000;
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return {
    url,
    close: () =>
      new Promise<void>((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
}
