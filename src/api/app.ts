/**
 * @module The daemon's HTTP API (Hono). Bodies are validated with zod; every error becomes
 * `{ error: { code, kind, message, hint } }` with a 4xx/5xx status, never a crash.
 */
import { Hono, type Context } from 'hono';
import type { z } from 'zod';
import { CrabError, HTTP_STATUS_BY_KIND, asCrabError, invalid } from '../core/errors.js';
import type { Logger } from '../core/log.js';
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
  RestoreBody,
  RollbackBody,
} from './schemas.js';
import type { CrabService } from './service.js';

import type { CrabHost } from '../daemon/host.js';

export interface AppOptions {
  /** The daemon's runtime (turn boundaries, inspector, engine, proxy); absent in tests of the plain service. */
  host?: CrabHost;
  /** When set, every request must carry `Authorization: Bearer <token>` (TCP listeners). */
  token?: string;
  log: Logger;
}

async function body<T extends z.ZodTypeAny>(c: Context, schema: T): Promise<z.infer<T>> {
  let raw: unknown;
  try {
    const text = await c.req.text();
    raw = text ? JSON.parse(text) : {};
  } catch {
    throw invalid('API_BAD_JSON', 'request body is not valid JSON');
  }
  const parsed = schema.safeParse(raw);
  if (!parsed.success) {
    const first = parsed.error.issues[0];
    throw invalid('API_INVALID_REQUEST', `invalid request: ${first?.path.join('.') || 'body'}: ${first?.message}`, undefined, {
      issues: parsed.error.issues,
    });
  }
  return parsed.data;
}

export function createApp(service: CrabService, opts: AppOptions): Hono {
  const app = new Hono();

  app.onError((err, c) => {
    const e = err instanceof CrabError ? err : asCrabError(err);
    if (e.kind === 'internal') opts.log.error({ err }, 'request failed');
    const status = HTTP_STATUS_BY_KIND[e.kind] as 400 | 404 | 409 | 412 | 500 | 503;
    return c.json({ error: e.toJSON() }, status);
  });
  app.notFound((c) => c.json({ error: { code: 'API_NO_ROUTE', kind: 'not-found', message: `no route ${c.req.method} ${c.req.path}` } }, 404));

  if (opts.token) {
    app.use('*', async (c, next) => {
      if (c.req.header('authorization') !== `Bearer ${opts.token}`) {
        return c.json({ error: { code: 'API_UNAUTHORIZED', kind: 'invalid', message: 'missing or wrong bearer token' } }, 401);
      }
      await next();
    });
  }

  app.get('/v1/health', (c) => c.json({ ok: true, pid: process.pid }));

  app.get('/v1/images', async (c) => c.json(await service.listImages()));
  app.post('/v1/images', async (c) => {
    const b = await body(c, BuildImageBody);
    return c.json(await service.buildImage(b.base, b.packages), 201);
  });
  app.post('/v1/images/import', async (c) => {
    const b = await body(c, ImportImageBody);
    return c.json(await service.importImage(b.name, b.archivePath), 201);
  });

  app.get('/v1/sandboxes', async (c) => c.json(await service.listSandboxes()));
  app.post('/v1/sandboxes', async (c) => c.json(await service.createSandbox(await body(c, CreateSandboxBody)), 201));
  app.get('/v1/sandboxes/:id', async (c) => c.json(await service.getSandbox(c.req.param('id'))));
  app.post('/v1/sandboxes/:id/exec', async (c) => {
    const b = await body(c, ExecBody);
    return c.json(await service.exec(c.req.param('id'), b.cmd, b));
  });
  app.post('/v1/sandboxes/:id/stop', async (c) => {
    await service.stopSandbox(c.req.param('id'));
    return c.json({ ok: true });
  });
  app.delete('/v1/sandboxes/:id', async (c) => {
    await service.removeSandbox(c.req.param('id'));
    return c.json({ ok: true });
  });
  app.post('/v1/gc', async (c) => c.json(await service.gc()));

  const host = opts.host;
  if (host) {
    app.post('/v1/sandboxes/:id/boundary', async (c) => c.json(await host.boundary(c.req.param('id'), (await body(c, BoundaryBody)).turn)));
    app.put('/v1/sandboxes/:id/mode', async (c) => {
      host.setMode(c.req.param('id'), (await body(c, ModeBody)).mode);
      return c.json({ ok: true });
    });
    app.get('/v1/sandboxes/:id/inspect', async (c) => c.json(await host.inspect(c.req.param('id'))));
    app.post('/v1/sandboxes/:id/recover', async (c) => c.json(await host.recover(c.req.param('id'))));
    app.post('/v1/sandboxes/:id/preempt', async (c) => c.json(await host.preempt(c.req.param('id'), (await body(c, PreemptBody)).graceMs)));
    app.get('/v1/sandboxes/:id/record', (c) => c.text(host.record(c.req.param('id'), { name: c.req.query('name') }), 200, { 'content-type': 'application/jsonl' }));
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

  app.post('/v1/sandboxes/:id/checkpoints', async (c) => c.json(await service.checkpoint(c.req.param('id'), await body(c, CheckpointBody)), 201));
  app.get('/v1/sandboxes/:id/checkpoints', async (c) => c.json(await service.listCheckpoints(c.req.param('id'))));
  app.post('/v1/sandboxes/:id/rollback', async (c) => {
    const b = await body(c, RollbackBody);
    return c.json(await service.rollback(c.req.param('id'), b.checkpoint, b));
  });
  app.post('/v1/checkpoints/:ck/restore', async (c) => c.json(await service.restore(c.req.param('ck'), await body(c, RestoreBody))));
  app.post('/v1/checkpoints/:ck/fork', async (c) => c.json(await service.fork(c.req.param('ck'), (await body(c, ForkBody)).count), 201));
  app.get('/v1/store/stats', async (c) => c.json(await service.storeStats()));
  app.post('/v1/store/verify', async (c) => c.json(await service.storeVerify()));
  app.post('/v1/store/gc', async (c) => c.json(await service.storeGc()));
  return app;
}
