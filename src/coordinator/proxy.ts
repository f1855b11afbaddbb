/**
 * @module The LLM API proxy. Forwards OpenAI- and Anthropic-compatible requests to an upstream
 * byte for byte (node:http, bodies piped, never parsed), marks turn boundaries through
 * `TurnHooks`, and holds each counted turn's response until its gate settles.
 */
import http from 'node:http';
import https from 'node:https';
import { pipeline } from 'node:stream';
import { CrabError } from '../core/errors.js';
import { rootLogger, type Logger } from '../core/log.js';
import { filterRawHeaders, SANDBOX_HEADER } from './http-headers.js';
import { resolveSandbox, type ResolvedRequest } from './sandbox-resolver.js';
import type { GateSettlement, GateState, TurnHooks, TurnRecord } from './turn-hooks.js';
import { DEFAULT_TURN_RULES, isTurnRequest, type TurnRule } from './turn-rules.js';

export interface LlmProxyConfig {
  /**
   * Where requests go: `http(s)://host:port[/prefix]`. The forwarded path (`/v1/…`) is appended
   * to the prefix, so use the origin for api.openai.com and api.anthropic.com.
   */
  upstreamUrl: string;
  /** Default DEFAULT_TURN_RULES. */
  turnRules?: readonly TurnRule[];
  /** No upstream response head within this time: 504. Default 600 000 (long non-streamed completions). */
  upstreamTimeoutMs?: number;
  /**
   * Longest a response is held by its gate; then it is released, the turn recorded as 'timeout'
   * and `hooks.onHoldLimit` called. Default DEFAULT_GATE_MAX_HOLD_MS; Infinity: no limit.
   */
  gateMaxHoldMs?: number;
  /** Turn records kept (oldest dropped first). Default 10 000. */
  maxTurnRecords?: number;
}

export interface LlmProxyDeps {
  hooks: TurnHooks;
  /** Whether a well-formed sandbox id belongs to a live sandbox. Unknown ones are forwarded, not counted. */
  isKnownSandbox: (sandboxId: string) => boolean;
  /** Source-address map, used when neither the path nor the header names a sandbox. */
  sandboxByAddress?: (remoteAddress: string) => string | undefined;
  logger?: Logger;
  /** Epoch ms clock for record timestamps (default Date.now). */
  now?: () => number;
}

interface Gate {
  record: TurnRecord;
  settled: Promise<void>;
}

/** Default hold limit of a gate: a checkpoint that takes longer is not worth an agent stuck for longer. */
export const DEFAULT_GATE_MAX_HOLD_MS = 30_000;

const DROP_REQUEST_HEADERS: ReadonlySet<string> = new Set(['host', SANDBOX_HEADER]);

export class LlmProxy {
  readonly server: http.Server;
  private readonly upstream: URL;
  private readonly upstreamPrefix: string;
  private readonly agent: http.Agent;
  private readonly rules: readonly TurnRule[];
  private readonly timeoutMs: number;
  private readonly maxHoldMs: number;
  private readonly maxRecords: number;
  private readonly log: Logger;
  private readonly now: () => number;
  private readonly nextTurn = new Map<string, number>();
  private readonly records: TurnRecord[] = [];
  private readonly extraServers: http.Server[] = [];

  constructor(
    config: LlmProxyConfig,
    private readonly deps: LlmProxyDeps,
  ) {
    this.upstream = new URL(config.upstreamUrl);
    if (this.upstream.protocol !== 'http:' && this.upstream.protocol !== 'https:') {
      throw new CrabError('CONFIG_INVALID', 'invalid', `upstream URL must be http(s): ${config.upstreamUrl}`);
    }
    this.upstreamPrefix = this.upstream.pathname.replace(/\/+$/, '');
    this.agent =
      this.upstream.protocol === 'https:'
        ? new https.Agent({ keepAlive: true })
        : new http.Agent({ keepAlive: true });
    this.rules = config.turnRules ?? DEFAULT_TURN_RULES;
    this.timeoutMs = config.upstreamTimeoutMs ?? 600_000;
    this.maxHoldMs = config.gateMaxHoldMs ?? DEFAULT_GATE_MAX_HOLD_MS;
    if (!(this.maxHoldMs > 0)) throw new CrabError('CONFIG_INVALID', 'invalid', `gate hold limit must be a positive number of ms, got ${config.gateMaxHoldMs}`);
    this.maxRecords = config.maxTurnRecords ?? 10_000;
    this.log = (deps.logger ?? rootLogger).child({ component: 'proxy' });
    this.now = deps.now ?? Date.now;
    this.server = http.createServer((req, res) => this.handle(req, res));
  }

  /** Listens (default 127.0.0.1, port 0) and returns the base URL, e.g. http://127.0.0.1:41234. */
  async listen(port = 0, host = '127.0.0.1'): Promise<string> {
    return listenOn(this.server, port, host);
  }

  /** Also serves on another address (e.g. the sandbox link gateway), same handler; returns its base URL. */
  async listenAlso(port: number, host: string): Promise<string> {
    const server = http.createServer((req, res) => this.handle(req, res));
    const url = await listenOn(server, port, host);
    this.extraServers.push(server);
    return url;
  }

  /** Stops listening, drops open connections and the upstream connection pool. Idempotent. */
  async close(): Promise<void> {
    await Promise.all(
      [this.server, ...this.extraServers].map(
        (server) =>
          new Promise<void>((resolve) => {
            server.close(() => resolve());
            server.closeAllConnections();
          }),
      ),
    );
    this.agent.destroy();
  }

  /** Copies of the turn records, oldest first (optionally for one sandbox). */
  turns(sandboxId?: string): TurnRecord[] {
    return this.records
      .filter((r) => sandboxId === undefined || r.sandboxId === sandboxId)
      .map((r) => ({ ...r }));
  }

  /** Sets the next turn index of a sandbox (after a restore or rollback). */
  setNextTurnIndex(sandboxId: string, turnIndex: number): void {
    this.nextTurn.set(sandboxId, turnIndex);
  }

  /** The request handler, for mounting in another node:http server. */
  readonly handle = (req: http.IncomingMessage, res: http.ServerResponse): void => {
    let target: ResolvedRequest;
    try {
      target = resolveSandbox(
        req.url ?? '/',
        req.headers[SANDBOX_HEADER],
        req.socket.remoteAddress,
        this.deps.sandboxByAddress,
      );
    } catch (err) {
      const e = err instanceof CrabError ? err : new CrabError('PROXY_BAD_REQUEST', 'invalid', String(err));
      req.resume();
      sendJsonError(res, 400, 'invalid_request_error', e.code, e.message);
      return;
    }
    const method = req.method ?? 'GET';
    const { sandboxId } = target;
    const counted =
      sandboxId !== undefined &&
      isTurnRequest(this.rules, method, target.routePath) &&
      this.isKnown(sandboxId);

    // Forward first: the hook below must never delay the request.
    const mod = this.upstream.protocol === 'https:' ? https : http;
    const upReq = mod.request({
      protocol: this.upstream.protocol,
      hostname: this.upstream.hostname.replace(/^\[|\]$/g, ''),
      port: this.upstream.port || undefined,
      method,
      path: this.upstreamPrefix + target.forwardPath,
      headers: [...filterRawHeaders(req.rawHeaders, DROP_REQUEST_HEADERS), 'Host', this.upstream.host, ...bodyFraming(req)],
      agent: this.agent,
    });
    // pipe, not pipeline: a failed upstream must not destroy the agent's socket before the 502 is sent.
    req.pipe(upReq);

    const gate = counted ? this.openGate(sandboxId, method, target.routePath) : undefined;

    let responded = false;
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      upReq.destroy(new Error(`no upstream response within ${this.timeoutMs} ms`));
    }, this.timeoutMs);
    res.on('close', () => {
      clearTimeout(timer);
      if (!res.writableFinished) {
        upReq.destroy();
        if (gate && gate.record.end === null) this.finish(gate.record, 'aborted');
      }
    });

    upReq.on('response', (upRes) => {
      clearTimeout(timer);
      responded = true;
      void this.release(gate, res, () => {
        res.sendDate = false; // the upstream's Date is forwarded
        res.writeHead(upRes.statusCode ?? 502, upRes.statusMessage, filterRawHeaders(upRes.rawHeaders));
        return upRes.statusCode ?? 502;
      }).then((released) => {
        if (!released) {
          upRes.destroy();
          return;
        }
        pipeline(upRes, res, (err) => {
          if (gate)
            this.finish(gate.record, err ? (res.writableFinished ? 'completed' : 'error') : 'completed');
          if (err && !res.writableFinished) this.log.warn({ err, sandboxId }, 'upstream response broke off');
        });
      });
    });

    upReq.on('error', (err) => {
      clearTimeout(timer);
      if (responded) return; // handled by the response pipeline
      if (res.destroyed) return; // the agent went away; that is why upReq was destroyed
      const kind = timedOut ? 'timeout' : 'unreachable';
      if (gate) gate.record.upstreamError = kind;
      this.log.warn({ err, sandboxId, kind }, 'upstream request failed');
      void this.release(gate, res, () => {
        const status = timedOut ? 504 : 502;
        writeJsonError(
          res,
          status,
          timedOut ? 'upstream_timeout' : 'upstream_unreachable',
          timedOut ? 'PROXY_UPSTREAM_TIMEOUT' : 'PROXY_UPSTREAM_UNREACHABLE',
          timedOut
            ? `upstream did not answer within ${this.timeoutMs} ms`
            : `cannot reach upstream: ${err.message}`,
        );
        return status;
      }).then((released) => {
        if (released && gate) this.finish(gate.record, 'completed');
      });
    });
  };

  private isKnown(sandboxId: string): boolean {
    try {
      return this.deps.isKnownSandbox(sandboxId);
    } catch (err) {
      this.log.warn({ err, sandboxId }, 'isKnownSandbox threw; request not counted');
      return false;
    }
  }

  /** Assigns the turn index, records the turn and calls onTurnBoundary. */
  private openGate(sandboxId: string, method: string, path: string): Gate {
    const turnIndex = this.nextTurn.get(sandboxId) ?? 0;
    this.nextTurn.set(sandboxId, turnIndex + 1);
    const record: TurnRecord = {
      sandboxId,
      turnIndex,
      method,
      path,
      receivedAt: this.now(),
      responseArrivedAt: null,
      gateSettledAt: null,
      releasedAt: null,
      gateWaitMs: null,
      gate: 'pending',
      gateDetail: null,
      status: null,
      upstreamError: null,
      end: null,
      completedAt: null,
    };
    this.records.push(record);
    if (this.records.length > this.maxRecords) this.records.splice(0, this.records.length - this.maxRecords);

    const settle = (state: GateState, detail: string | null) => {
      if (record.gate !== 'pending') return;
      record.gate = state;
      record.gateDetail = detail;
      record.gateSettledAt = this.now();
      if (state === 'failed')
        this.log.warn({ sandboxId, turnIndex, detail }, 'checkpoint gate failed; releasing');
    };
    let settled: Promise<void>;
    try {
      const g = this.deps.hooks.onTurnBoundary({ sandboxId, turnIndex, receivedAt: record.receivedAt });
      settled = Promise.resolve(g).then(
        (s: GateSettlement | void) => settle(s ? s.outcome : 'committed', s?.detail ?? null),
        (err: unknown) => settle('failed', err instanceof Error ? err.message : String(err)),
      );
    } catch (err) {
      settle('failed', err instanceof Error ? err.message : String(err));
      settled = Promise.resolve();
    }
    return { record, settled };
  }

  /**
   * Holds the response until the gate settles (or gateMaxHoldMs), then calls `writeHead`.
   * Returns false if the agent went away meanwhile (nothing written).
   */
  private async release(
    gate: Gate | undefined,
    res: http.ServerResponse,
    writeHead: () => number,
  ): Promise<boolean> {
    if (!gate) {
      if (res.destroyed) return false;
      writeHead();
      return true;
    }
    const { record } = gate;
    record.responseArrivedAt = this.now();
    const heldFrom = performance.now();
    try {
      this.deps.hooks.onResponseArrived(record.sandboxId, record.turnIndex);
    } catch (err) {
      this.log.warn({ err, sandboxId: record.sandboxId }, 'onResponseArrived threw');
    }
    if (record.gate === 'pending') {
      if (this.maxHoldMs === Infinity) {
        await gate.settled;
      } else {
        let t: NodeJS.Timeout | undefined;
        const limit = new Promise<'timeout'>(
          (resolve) => (t = setTimeout(() => resolve('timeout'), this.maxHoldMs)),
        );
        const won = await Promise.race([gate.settled, limit]);
        clearTimeout(t);
        if (won === 'timeout' && record.gate === 'pending') {
          record.gate = 'timeout';
          record.gateDetail = `gate did not settle within ${this.maxHoldMs} ms`;
          this.log.warn(
            { sandboxId: record.sandboxId, turnIndex: record.turnIndex, maxHoldMs: this.maxHoldMs },
            'gate hold limit reached; releasing',
          );
          try {
            this.deps.hooks.onHoldLimit?.(record);
          } catch (err) {
            this.log.warn({ err, sandboxId: record.sandboxId }, 'onHoldLimit threw');
          }
        }
      }
    }
    record.gateWaitMs = performance.now() - heldFrom;
    if (res.destroyed) return false;
    record.status = writeHead();
    record.releasedAt = this.now();
    try {
      this.deps.hooks.onTurnReleased?.(record);
    } catch (err) {
      this.log.warn({ err, sandboxId: record.sandboxId }, 'onTurnReleased threw');
    }
    return true;
  }

  private finish(record: TurnRecord, end: 'completed' | 'aborted' | 'error'): void {
    if (record.end !== null) return;
    record.end = end;
    record.completedAt = this.now();
  }
}

/**
 * The framing a forwarded body needs. Transfer-Encoding is hop-by-hop, so it is dropped with the
 * others; but node:http sends the body of a GET, DELETE or OPTIONS without any framing unless
 * told, and the upstream would read a chunked body's bytes as the next request on the pooled
 * connection (found by fuzzing: a sandbox could smuggle a request into a connection other
 * sandboxes' requests reuse). A chunked body is forwarded chunked.
 */
function bodyFraming(req: http.IncomingMessage): string[] {
  return req.headers['transfer-encoding'] !== undefined && req.headers['content-length'] === undefined ? ['Transfer-Encoding', 'chunked'] : [];
}

/** Factory: creates the proxy (not yet listening). */
export function createLlmProxy(config: LlmProxyConfig, deps: LlmProxyDeps): LlmProxy {
  return new LlmProxy(config, deps);
}

/** A JSON error both SDK families can parse (`error.message`, `error.type`). */
function writeJsonError(
  res: http.ServerResponse,
  status: number,
  type: string,
  code: string,
  message: string,
): void {
  const body = JSON.stringify({ type: 'error', error: { type, code, message } });
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
  res.end(body);
}

function sendJsonError(
  res: http.ServerResponse,
  status: number,
  type: string,
  code: string,
  message: string,
): void {
  if (!res.headersSent) writeJsonError(res, status, type, code, message);
  else res.destroy();
}

async function listenOn(server: http.Server, port: number, host: string): Promise<string> {
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const addr = server.address();
  if (addr === null || typeof addr === 'string') throw new Error('proxy is not listening on TCP');
  return `http://${addr.family === 'IPv6' ? `[${addr.address}]` : addr.address}:${addr.port}`;
}
