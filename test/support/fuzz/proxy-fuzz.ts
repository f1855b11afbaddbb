/**
 * Fuzzing of the LLM proxy: raw HTTP/1.1 requests (methods, paths with `/s/<id>` prefixes and
 * hostile ids, the X-Crab-Sandbox header once or many times, random headers, bodies, framing)
 * written byte for byte to the real proxy on a socket. The proxy's hooks are the real host
 * scheduler (a counted request becomes a checkpoint job; the job is an empty one: no sandbox
 * exists); the upstream is a local fake that answers everything (it is what is replaced, not Crab).
 *
 * Every case must: be answered or closed by Node's HTTP parser (never hang, never crash the
 * process), never get a 5xx from the proxy, get a 4xx for a sandbox id that is not an id, keep
 * Crab's own header and the `/s/<id>` prefix away from the upstream, and settle every counted
 * turn's gate.
 */
import fc from 'fast-check';
import net from 'node:net';
import { pino } from 'pino';
import { createLlmProxy, type LlmProxy } from '../../../src/coordinator/proxy.js';
import { schedulerTurnHooks } from '../../../src/coordinator/scheduler-hooks.js';
import { createScheduler, type HostScheduler } from '../../../src/engine/scheduler.js';
import { ID_PATTERN } from '../../../src/core/ids.js';
import { startFakeUpstream, type FakeUpstream } from '../fake-upstream.js';
import { anyId } from './arbitraries.js';

export const KNOWN_SANDBOXES = ['sb1', 'sb2'];

export interface ProxyCase {
  method: string;
  target: string;
  headers: Array<[string, string]>;
  body: Buffer;
  framing: 'length' | 'chunked' | 'none';
  /** Bytes no well-formed HTTP request has (CR/LF or NUL in a header, a raw space in the target): Node's parser may refuse or close. */
  malformed: boolean;
  /** The sandbox ids the request names (path prefix, headers), raw. */
  ids: string[];
}

export interface ProxyFuzzTarget {
  url: string;
  proxy: LlmProxy;
  upstream: FakeUpstream;
  scheduler: HostScheduler<unknown>;
  run(c: ProxyCase): Promise<number | 'closed'>;
  /** A plain counted chat request still gets its answer (the proxy is alive and sane). */
  healthy(): Promise<void>;
  seen: Map<string, number>;
  close(): Promise<void>;
}

interface RawResponse {
  status: number | null;
  head: string;
  body: Buffer;
}

function sendRaw(port: number, bytes: Buffer, maxMs: number): Promise<RawResponse> {
  return new Promise((resolve, reject) => {
    const sock = net.connect(port, '127.0.0.1');
    const chunks: Buffer[] = [];
    const timer = setTimeout(() => {
      sock.destroy();
      reject(new Error(`no answer and no close within ${maxMs} ms`));
    }, maxMs);
    sock.on('data', (b: Buffer) => chunks.push(b));
    sock.on('error', () => undefined); // a reset after the answer (or instead of one) is judged below
    sock.on('close', () => {
      clearTimeout(timer);
      let all = Buffer.concat(chunks);
      // Interim answers (100 Continue to an Expect header) come before the real one.
      while (/^HTTP\/1\.[01] 1\d\d/.test(all.subarray(0, 16).toString('latin1')) && all.indexOf('\r\n\r\n') >= 0) all = all.subarray(all.indexOf('\r\n\r\n') + 4);
      const end = all.indexOf('\r\n\r\n');
      const head = (end < 0 ? all : all.subarray(0, end)).toString('latin1');
      const m = /^HTTP\/1\.[01] (\d{3})/.exec(head);
      resolve({ status: m ? Number(m[1]) : null, head, body: end < 0 ? Buffer.alloc(0) : all.subarray(end + 4) });
    });
    // No half-close: Node's server takes a client's FIN as an abort. Connection: close ends it.
    sock.write(bytes);
  });
}

function encode(c: ProxyCase): Buffer {
  const lines = [`${c.method} ${c.target} HTTP/1.1`, 'Host: proxy.test'];
  for (const [k, v] of c.headers) lines.push(`${k}: ${v}`);
  if (c.framing === 'length') lines.push(`Content-Length: ${c.body.length}`);
  if (c.framing === 'chunked') lines.push('Transfer-Encoding: chunked');
  lines.push('Connection: close');
  const head = Buffer.from(lines.join('\r\n') + '\r\n\r\n', 'latin1');
  if (c.framing === 'length') return Buffer.concat([head, c.body]);
  if (c.framing === 'chunked') return Buffer.concat([head, c.body.length ? Buffer.from(`${c.body.length.toString(16)}\r\n`) : Buffer.alloc(0), c.body, Buffer.from(c.body.length ? '\r\n0\r\n\r\n' : '0\r\n\r\n')]);
  return head;
}

/** Whether a raw sandbox id from a request could name a sandbox (as written, or percent-decoded). */
function couldBeId(raw: string): boolean {
  if (ID_PATTERN.test(raw.trim())) return true;
  try {
    return ID_PATTERN.test(decodeURIComponent(raw).trim());
  } catch {
    return false;
  }
}

export async function startProxyFuzzTarget(opts: { maxMs?: number } = {}): Promise<ProxyFuzzTarget> {
  const maxMs = opts.maxMs ?? 5000;
  const upstream = await startFakeUpstream();
  upstream.chunkDelayMs = 0;
  const log = pino({ level: 'silent' });
  const scheduler = createScheduler<unknown>({ maxConcurrentJobs: 2 }, { logger: log });
  const proxy = createLlmProxy(
    { upstreamUrl: upstream.url, gateMaxHoldMs: 2000, maxTurnRecords: 1000 },
    {
      hooks: schedulerTurnHooks(scheduler, () => async () => ({})),
      isKnownSandbox: (id) => KNOWN_SANDBOXES.includes(id),
      logger: log,
    },
  );
  const url = await proxy.listen();
  const port = Number(new URL(url).port);
  const seen = new Map<string, number>();

  const run = async (c: ProxyCase): Promise<number | 'closed'> => {
    const fail = (why: string): never => {
      throw new Error(`${why}\n  case: ${c.method} ${JSON.stringify(c.target.slice(0, 200))} headers=${JSON.stringify(c.headers).slice(0, 300)} framing=${c.framing} body=${c.body.length} B malformed=${c.malformed}`);
    };
    const before = upstream.received.length;
    let r: RawResponse;
    try {
      r = await sendRaw(port, encode(c), maxMs);
    } catch (err) {
      return fail((err as Error).message);
    }
    const forwarded = upstream.received.slice(before);
    let code = '';
    if (r.status !== null && r.status >= 400 && /content-type: application\/json/i.test(r.head)) {
      try {
        code = String((JSON.parse(r.body.toString()) as { error?: { code?: unknown } }).error?.code ?? '');
      } catch {
        code = 'not-json';
      }
    }
    const key = r.status === null ? 'closed' : `${r.status} ${forwarded.length ? 'upstream' : code || 'node'}`;
    seen.set(key, (seen.get(key) ?? 0) + 1);
    // One request in, at most one out, with the body as sent: nothing smuggled into the pooled upstream connection.
    if (forwarded.length > 1) fail(`the upstream received ${forwarded.length} requests: ${forwarded.map((f) => `${f.method} ${f.url}`.slice(0, 80)).join(' | ')}`);
    if (forwarded.length === 1 && !c.malformed && !forwarded[0]!.body.equals(c.body)) fail(`the upstream received a ${forwarded[0]!.body.length}-byte body for a ${c.body.length}-byte one`);
    for (const f of forwarded) {
      if (Object.keys(f.headers).some((h) => h.toLowerCase() === 'x-crab-sandbox')) fail('X-Crab-Sandbox was forwarded upstream');
      // The /s/<id> prefix is Crab's and stripped; the rest (which may itself start with /s/) goes as it came.
      const target = c.target.startsWith('/') ? c.target : `/${c.target}`; // the proxy roots a target that is not a path ('*', absolute-form)
      const m = /^\/s\/([^/?]*)(.*)$/s.exec(target);
      const want = m ? (m[2]!.startsWith('/') ? m[2]! : `/${m[2]!}`) : target;
      if (!c.malformed && f.url !== want) fail(`forwarded as ${JSON.stringify(f.url.slice(0, 100))}, not ${JSON.stringify(want.slice(0, 100))}`);
    }
    if (r.status === null) {
      // Node's parser closes on what it cannot parse (CONNECT, an upgrade, bad bytes); anything else must be answered.
      if (!c.malformed && c.method !== 'CONNECT' && !c.headers.some(([k]) => k.toLowerCase() === 'upgrade')) fail('closed without an answer');
      return 'closed';
    }
    if (r.status >= 500) fail(`the proxy answered ${r.status}: ${r.head.slice(0, 200)} ${r.body.subarray(0, 200).toString()}`);
    const badIds = c.ids.filter((id) => !couldBeId(id));
    if (badIds.length && !c.malformed && !(r.status >= 400 && r.status < 500)) fail(`sandbox id ${JSON.stringify(badIds[0]!.slice(0, 80))} got ${r.status}`);
    if (r.status >= 400 && c.method !== 'HEAD' && forwarded.length === 0 && /content-type: application\/json/i.test(r.head)) {
      let code: unknown;
      try {
        code = (JSON.parse(r.body.toString()) as { error?: { code?: unknown } }).error?.code;
      } catch {
        code = undefined;
      }
      if (typeof code !== 'string') fail(`a ${r.status} of the proxy without an error code: ${r.body.subarray(0, 200).toString()}`);
    }
    return r.status;
  };

  const healthy = async () => {
    const body = Buffer.from(JSON.stringify({ model: 'm', messages: [{ role: 'user', content: 'hi' }] }));
    const r = await sendRaw(port, encode({ method: 'POST', target: '/s/sb1/v1/chat/completions', headers: [['Content-Type', 'application/json']], body, framing: 'length', malformed: false, ids: ['sb1'] }), maxMs);
    if (r.status !== 200) throw new Error(`a plain chat request got ${r.status}: ${r.head}`);
    await scheduler.drain();
    const pending = proxy.turns().filter((t) => t.gate === 'pending' && t.end !== 'aborted' && t.status !== null);
    if (pending.length) throw new Error(`${pending.length} released turns still have a pending gate`);
  };

  return {
    url,
    proxy,
    upstream,
    scheduler,
    run,
    healthy,
    seen,
    async close() {
      await scheduler.drain();
      await proxy.close();
      await upstream.close();
    },
  };
}

// ----------------------------------------------------------------------------------------------
// Cases

const token = fc.stringMatching(/^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,20}$/);
const fieldValue = fc.stringMatching(/^[\x20-\x7e]{0,60}$/).map((s) => s.trim());
const ROUTES = ['/v1/chat/completions', '/v1/responses', '/v1/messages', '/v1/messages/count_tokens', '/v1/models', '/v1/models/x', '/v1/embeddings', '/', ''];

export function proxyCases(): fc.Arbitrary<ProxyCase> {
  const id = anyId([...KNOWN_SANDBOXES, 'sb-unknown']);
  const target = fc.oneof(
    { weight: 5, arbitrary: fc.tuple(id, fc.boolean(), fc.constantFrom(...ROUTES), fc.option(fc.stringMatching(/^[a-z=&0-9%]{0,20}$/))).map(([i, enc, r, q]) => ({ target: `/s/${enc ? encodeOr(i) : i}${r}${q ? `?${q}` : ''}`, ids: [enc ? encodeOr(i) : i] })) },
    { weight: 3, arbitrary: fc.tuple(fc.constantFrom(...ROUTES), fc.option(fc.stringMatching(/^[a-z=&0-9%]{0,20}$/))).map(([r, q]) => ({ target: `${r || '/'}${q ? `?${q}` : ''}`, ids: [] as string[] })) },
    { weight: 1, arbitrary: fc.array(fc.oneof(token, fc.constantFrom('..', '.', 's', '%2F', '%00', '')), { maxLength: 6 }).map((segs) => ({ target: `/${segs.join('/')}`, ids: [] as string[] })) },
    { weight: 1, arbitrary: fc.constantFrom('*', 'http://upstream.test/v1/chat/completions', '/s', '/s/', '//s/sb1/v1/chat/completions', '/S/sb1/v1/chat/completions').map((t) => ({ target: t, ids: [] as string[] })) },
  );
  // Mostly no header or one; sometimes several (the proxy must refuse conflicting ones).
  const sandboxHeader = fc.oneof({ weight: 6, arbitrary: fc.constant<string[]>([]) }, { weight: 3, arbitrary: id.map((i) => [i]) }, { weight: 1, arbitrary: fc.array(id, { minLength: 2, maxLength: 3 }) });
  const extra = fc.array(
    fc.oneof(
      fc.tuple(token, fieldValue),
      fc.tuple(fc.constantFrom('Authorization', 'X-Api-Key', 'Content-Type', 'Accept', 'Connection', 'Keep-Alive', 'TE', 'Trailer', 'Upgrade', 'Proxy-Authorization', 'Expect'), fieldValue),
    ),
    { maxLength: 5 },
  );
  const body = fc.oneof(
    fc.constant(Buffer.alloc(0)),
    fc.record({ model: fc.string({ maxLength: 10 }), stream: fc.boolean(), messages: fc.constant([{ role: 'user', content: 'hi' }]) }).map((o) => Buffer.from(JSON.stringify(o))),
    fc.uint8Array({ maxLength: 2048 }).map((a) => Buffer.from(a)),
  );
  const method = fc.oneof({ weight: 8, arbitrary: fc.constantFrom('GET', 'POST', 'PUT', 'DELETE', 'PATCH', 'OPTIONS', 'HEAD') }, { weight: 1, arbitrary: fc.constantFrom('CONNECT', 'TRACE', 'PROPFIND') }, { weight: 1, arbitrary: token });
  // One case in ten carries bytes no well-formed request has (CRLF injection, NUL, a raw space).
  const corrupt = fc.oneof({ weight: 9, arbitrary: fc.constant(null) }, { weight: 1, arbitrary: fc.constantFrom('\r\nX-Injected: 1', '\0', '\n', ' ', '\x7f', 'é') });
  return fc
    .record({ method, t: target, hdr: sandboxHeader, extra, body, framing: fc.constantFrom<ProxyCase['framing']>('length', 'chunked', 'none'), corrupt, corruptWhere: fc.nat() })
    .map(({ method, t, hdr, extra, body, framing, corrupt, corruptWhere }) => {
      const headers: Array<[string, string]> = [...hdr.map((h): [string, string] => ['X-Crab-Sandbox', h]), ...extra];
      // Framing is ours: a case's own Content-Length or Transfer-Encoding would make it a different request.
      const clean = headers.filter(([k]) => !/^(content-length|transfer-encoding|host|connection)$/i.test(k));
      let malformed = false;
      let tgt = t.target;
      if (corrupt !== null) {
        malformed = true;
        if (clean.length && corruptWhere % 2 === 0) {
          const i = corruptWhere % clean.length;
          clean[i] = [clean[i]![0], `${clean[i]![1]}${corrupt}`];
        } else tgt = `${tgt}${corrupt}x`;
      }
      // A header value or id holding a control character or a non-ASCII byte is not well-formed either.
      // eslint-disable-next-line no-control-regex
      if (clean.some(([, v]) => /[\u0000-\u001f\u007f-\uffff]/.test(v)) || /[\s\u0000-\u001f\u007f-\uffff]/.test(tgt)) malformed = true;
      return {
        method,
        target: tgt,
        headers: clean,
        body: framing === 'none' ? Buffer.alloc(0) : body,
        framing: method === 'GET' || method === 'HEAD' ? (body.length ? framing : 'none') : framing,
        malformed,
        // The id as the proxy reads it: the first segment after /s/ (a raw '/' in an id ends it).
        ids: [...(/^\/s\/([^/?]*)/.exec(tgt) ? [/^\/s\/([^/?]*)/.exec(tgt)![1]!] : []), ...clean.filter(([k]) => k.toLowerCase() === 'x-crab-sandbox').map(([, v]) => v)],
      };
    });
}

function encodeOr(s: string): string {
  try {
    return encodeURIComponent(s);
  } catch {
    return s;
  }
}
