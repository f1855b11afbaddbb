/**
 * @module The daemon's HTTP API (Hono). Bodies are size-limited per route and validated with zod;
 * ids in the path are checked against the one id pattern before anything else sees them; every
 * error becomes `{ error: { code, kind, message, hint } }` with a 4xx/5xx status, never a crash.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import { Hono, type Context, type MiddlewareHandler } from 'hono';
import { bodyLimit } from 'hono/body-limit';
import type { z } from 'zod';
import { CrabError, HTTP_STATUS_BY_KIND, asCrabError, invalid } from '../core/errors.js';
import { checkId, type IdKind } from '../core/ids.js';
import type { Logger } from '../core/log.js';
import { resolveBind, resolveHostPath, type HostPathPolicy } from '../sandbox/bind-policy.js';
import {
  BoundaryBody,
  BuildImageBody,
  CheckpointBody,
  CreateSandboxBody,
  ExecBody,
  ForkBody,
  ImportImageBody,
  ModeBody,
  PreemptBody,
  RecordQuery,
  RestoreBody,
  RollbackBody,
  parseInput,
} from './schemas.js';
import type { CrabService } from './service.js';

import type { CrabHost } from '../daemon/host.js';

export interface AppOptions {
  /** The daemon's runtime (turn boundaries, inspector, engine, proxy); absent in tests of the plain service. */
  host?: CrabHost;
  /** When set, every request must carry `Authorization: Bearer <token>` (TCP listeners). */
  token?: string;
  /**
   * Host paths clients of this listener may name (bind sources, image archives). Default: anywhere
   * but CRAB_HOME, `/` and the kernel trees (the root-only unix socket without --bind-allow).
   */
  hostPaths?: HostPathPolicy;
  log: Logger;
}

/** Largest request bodies, by route: a command may be long (1 MB of shell text), a checkpoint's hint list longer. */
export const BODY_LIMITS = {
  default: 64 * 1024,
  createSandbox: 1024 * 1024,
  exec: 8 * 1024 * 1024,
  checkpoint: 16 * 1024 * 1024,
} as const;

/** Which of BODY_LIMITS a request gets. Pure. */
export function bodyLimitFor(method: string, path: string): keyof typeof BODY_LIMITS {
  if (method === 'POST' && path === '/v1/sandboxes') return 'createSandbox';
  if (/^\/v1\/sandboxes\/[^/]+\/exec$/.test(path)) return 'exec';
  if (/^\/v1\/sandboxes\/[^/]+\/checkpoints$/.test(path)) return 'checkpoint';
  return 'default';
}

async function body<T extends z.ZodTypeAny>(c: Context, schema: T): Promise<z.infer<T>> {
  let raw: unknown;
  try {
    const text = await c.req.text();
    raw = text ? JSON.parse(text) : {};
  } catch {
    throw invalid('API_BAD_JSON', 'request body is not valid JSON', 'Send a JSON object (Content-Type: application/json).');
  }
  return parseInput(schema, raw, 'body');
}

/** A path parameter, checked against the id pattern (Hono has already percent-decoded it: `..%2F` is `../` here). */
function param(c: Context, name: 'id' | 'ck', kind: IdKind): string {
  return checkId(kind, c.req.param(name));
}

const sha256 = (s: string) => createHash('sha256').update(s).digest();

/**
 * Bearer-token check in constant time: both sides are hashed first, so the comparison takes the
 * same time whatever the length or the content of what the client sent.
 */
export function tokenMatcher(token: string): (header: string | undefined) => boolean {
  const want = sha256(`Bearer ${token}`);
  return (header) => timingSafeEqual(sha256(header ?? ''), want);
}

export function createApp(service: CrabService, opts: AppOptions): Hono {
  const app = new Hono();
  const limit = (maxSize: number): MiddlewareHandler =>
    bodyLimit({
      maxSize,
      onError: (c) => c.json({ error: { code: 'API_BODY_TOO_LARGE', kind: 'invalid', message: `request body larger than ${maxSize} bytes`, hint: 'Send less (a long command: put it in a file in the sandbox).', details: { maxBytes: maxSize } } }, 413),
    });

  app.onError((err, c) => {
    const e = err instanceof CrabError ? err : asCrabError(err);
    if (e.kind === 'internal') opts.log.error({ err }, 'request failed');
    const status = HTTP_STATUS_BY_KIND[e.kind] as 400 | 404 | 409 | 412 | 500 | 503;
    return c.json({ error: e.toJSON() }, status);
  });
  app.notFound((c) => c.json({ error: { code: 'API_NO_ROUTE', kind: 'not-found', message: `no route ${c.req.method} ${c.req.path.slice(0, 200)}`, hint: 'See the API reference in the README.' } }, 404));

  if (opts.token) {
    const matches = tokenMatcher(opts.token);
    app.use('*', async (c, next) => {
      if (!matches(c.req.header('authorization'))) {
        return c.json({ error: { code: 'API_UNAUTHORIZED', kind: 'invalid', message: 'missing or wrong bearer token', hint: 'Send Authorization: Bearer <token> (crab: CRAB_TOKEN or CRAB_TOKEN_FILE).' } }, 401);
      }
      await next();
    });
  }
  // Every body is read through a limit: the route's own, or the small default.
  const limits = Object.fromEntries(Object.entries(BODY_LIMITS).map(([k, v]) => [k, limit(v)])) as Record<keyof typeof BODY_LIMITS, MiddlewareHandler>;
  app.use('*', (c, next) => limits[bodyLimitFor(c.req.method, c.req.path)](c, next));

  const hostPaths = opts.hostPaths;

  app.get('/v1/health', (c) => c.json({ ok: true, pid: process.pid }));

  app.get('/v1/images', async (c) => c.json(await service.listImages()));
  app.post('/v1/images', async (c) => {
    const b = await body(c, BuildImageBody);
    return c.json(await service.buildImage(b.base, b.packages), 201);
  });
  app.post('/v1/images/import', async (c) => {
    const b = await body(c, ImportImageBody);
    const archive = hostPaths ? resolveHostPath(b.archivePath, hostPaths, 'image archive', { regularFile: true }) : b.archivePath;
    return c.json(await service.importImage(b.name, archive), 201);
  });

  app.get('/v1/sandboxes', async (c) => c.json(await service.listSandboxes()));
  app.post('/v1/sandboxes', async (c) => {
    const b = await body(c, CreateSandboxBody);
    const binds = hostPaths && b.binds ? b.binds.map((x) => resolveBind(x, hostPaths)) : b.binds;
    return c.json(await service.createSandbox({ ...b, binds }), 201);
  });
  app.get('/v1/sandboxes/:id', async (c) => c.json(await service.getSandbox(param(c, 'id', 'sandbox'))));
  app.post('/v1/sandboxes/:id/exec', async (c) => {
    const id = param(c, 'id', 'sandbox');
    const b = await body(c, ExecBody);
    return c.json(await service.exec(id, b.cmd, b));
  });
  app.post('/v1/sandboxes/:id/stop', async (c) => {
    await service.stopSandbox(param(c, 'id', 'sandbox'));
    return c.json({ ok: true });
  });
  app.delete('/v1/sandboxes/:id', async (c) => {
    await service.removeSandbox(param(c, 'id', 'sandbox'));
    return c.json({ ok: true });
  });
  app.post('/v1/gc', async (c) => c.json(await service.gc()));

  const host = opts.host;
  if (host) {
    app.post('/v1/sandboxes/:id/boundary', async (c) => {
      const id = param(c, 'id', 'sandbox');
      return c.json(await host.boundary(id, (await body(c, BoundaryBody)).turn));
    });
    app.put('/v1/sandboxes/:id/mode', async (c) => {
      const id = param(c, 'id', 'sandbox');
      host.setMode(id, (await body(c, ModeBody)).mode);
      return c.json({ ok: true });
    });
    app.get('/v1/sandboxes/:id/inspect', async (c) => c.json(await host.inspect(param(c, 'id', 'sandbox'))));
    app.post('/v1/sandboxes/:id/recover', async (c) => c.json(await host.recover(param(c, 'id', 'sandbox'))));
    app.post('/v1/sandboxes/:id/preempt', async (c) => {
      const id = param(c, 'id', 'sandbox');
      return c.json(await host.preempt(id, (await body(c, PreemptBody)).graceMs));
    });
    app.get('/v1/sandboxes/:id/record', (c) => {
      const id = param(c, 'id', 'sandbox');
      const q = parseInput(RecordQuery, c.req.query(), 'query');
      return c.text(host.record(id, { name: q.name }), 200, { 'content-type': 'application/jsonl' });
    });
    app.get('/metrics', (c) => c.text(host.metrics(), 200, { 'content-type': 'text/plain; version=0.0.4' }));
    // ?sandbox=ID: that sandbox's turns only (a bench of 64 sandboxes asks per sandbox)
    app.get('/v1/proxy', (c) => c.json({ url: host.proxyUrl, turns: host.proxy?.turns(c.req.query('sandbox')) ?? [] }));
    // After a recovery the agent re-runs turns without LLM requests: its next request is this boundary.
    app.put('/v1/sandboxes/:id/next-turn', async (c) => {
      const id = c.req.param('id');
      const { turn } = await body(c, BoundaryBody);
      host.service.sandboxes.record(id);
      host.proxy?.setNextTurnIndex(id, turn);
      return c.json({ ok: true });
    });
  }

  app.post('/v1/sandboxes/:id/checkpoints', async (c) => {
    const id = param(c, 'id', 'sandbox');
    return c.json(await service.checkpoint(id, await body(c, CheckpointBody)), 201);
  });
  app.get('/v1/sandboxes/:id/checkpoints', async (c) => c.json(await service.listCheckpoints(param(c, 'id', 'sandbox'))));
  app.post('/v1/sandboxes/:id/rollback', async (c) => {
    const id = param(c, 'id', 'sandbox');
    const b = await body(c, RollbackBody);
    return c.json(await service.rollback(id, b.checkpoint, b));
  });
  app.post('/v1/checkpoints/:ck/restore', async (c) => {
    const ck = param(c, 'ck', 'checkpoint');
    return c.json(await service.restore(ck, await body(c, RestoreBody)));
  });
  app.post('/v1/checkpoints/:ck/fork', async (c) => {
    const ck = param(c, 'ck', 'checkpoint');
    return c.json(await service.fork(ck, (await body(c, ForkBody)).count), 201);
  });
  app.get('/v1/store/stats', async (c) => c.json(await service.storeStats()));
  app.post('/v1/store/verify', async (c) => c.json(await service.storeVerify()));
  app.post('/v1/store/gc', async (c) => c.json(await service.storeGc()));
  return app;
}
