/**
 * Fuzzing of the daemon's HTTP API: random routes, methods, ids (valid, missing, hostile),
 * bodies (derived from the zod schemas, mutated, not JSON, too large) through the real Hono app
 * in-process (`app.fetch`), on a real CrabHost (no inspector, no proxy) over a CRAB_HOME of its
 * own in a temp dir. Operations that would build an image or start a sandbox are answered by the
 * harness after the real validation ran (10,000 real sandboxes are not a fuzz case); everything
 * else is the real service: lookups, exec/stop/remove/checkpoint/rollback/restore/fork of present
 * and missing sandboxes and checkpoints, gc, store, boundaries, modes, preempt, record, metrics.
 *
 * Every case must: answer (no crash, no hang past `maxMs`), never 5xx (but a 503 with a code:
 * the inspector is off), give a JSON error with a code for every 4xx, a 4xx for every input known
 * to be bad, no validation error for an input known to be valid, and leave the host untouched
 * (canary files beside CRAB_HOME, the victim sandbox's record).
 */
import fc from 'fast-check';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pino } from 'pino';
import type { Hono } from 'hono';
import { createApp, BODY_LIMITS } from '../../../src/api/app.js';
import { CreateSandboxBody, parseInput } from '../../../src/api/schemas.js';
import type { CrabService } from '../../../src/api/service.js';
import type { LocalService } from '../../../src/api/local-service.js';
import { crabPaths, type CrabPaths } from '../../../src/core/paths.js';
import { ID_PATTERN } from '../../../src/core/ids.js';
import { CrabHost } from '../../../src/daemon/host.js';
import { BASE_IMAGE } from '../../../src/image/image-store.js';
import { CHECKPOINT_MODES } from '../../../src/coordinator/turn-controller.js';
import type { CreateSandboxOptions, SandboxInfo } from '../../../src/sandbox/sandbox.js';
import { anyId, badPath, goodPath, mutated, notJson, validId, type Label } from './arbitraries.js';

/** Error codes of a refused input (what a valid input must never get). */
const VALIDATION_CODES = new Set(['API_INVALID_REQUEST', 'API_BAD_JSON', 'INVALID_NAME', 'API_BODY_TOO_LARGE', 'INVALID_PATH']);
/** 5xx a case may explain: the inspector is off in this harness. */
const EXPLAINED_5XX = new Set(['INSPECTOR_UNAVAILABLE']);

export const VICTIM = 'victim';

export interface ApiCase {
  method: string;
  path: string;
  headers: Record<string, string>;
  body: string | undefined;
  /** What the body (or a stray request) is known to be. */
  label: Label;
  /** Where the id is among the path's segments, and how many segments the route has. */
  idSegment?: number;
  segments?: number;
  why: string;
}

const combine = (a: Label, b: Label): Label => (a === 'bad' || b === 'bad' ? 'bad' : a === 'unknown' || b === 'unknown' ? 'unknown' : 'valid');

/**
 * The label of a request as the app receives it: the URL parser has already dropped tabs and
 * newlines and resolved `.`/`..` segments; an id that moved the route is judged by nobody.
 */
function labelOf(c: ApiCase, url: string): Label {
  if (c.idSegment === undefined) return c.label;
  const segs = new URL(url).pathname.split('/');
  if (segs.length !== c.segments) return 'unknown';
  return combine(c.label, ID_PATTERN.test(decoded(segs[c.idSegment]!)) ? 'valid' : 'bad');
}

export interface ApiFuzzTarget {
  app: Hono;
  base: string;
  /** The one directory API clients may name host paths under (as with --bind-allow). */
  allowed: string;
  paths: CrabPaths;
  /** Runs one case; throws (with the case) when a property is broken. Returns the status. */
  run(c: ApiCase): Promise<number>;
  /** Statuses seen, by status and code. */
  seen: Map<string, number>;
  close(): Promise<void>;
}

/** Service calls the harness answers itself (after the real validation): building images and starting sandboxes. */
class FuzzService implements CrabService {
  readonly violations: string[] = [];
  constructor(
    private readonly real: LocalService,
    private readonly allowed: string,
  ) {}
  listImages = () => this.real.listImages();
  async buildImage(base: string, packages: string[]) {
    const exists = (await this.real.listImages()).some((i) => i.name === base);
    if (packages.length > 0 && exists) {
      if (!ID_PATTERN.test(base)) this.violations.push(`buildImage got base ${JSON.stringify(base)}`);
      return { name: `${base}+fuzz`, base, packages, source: 'packages' as const, createdAt: '', lowerDirs: [], sizeBytes: 0 };
    }
    return this.real.buildImage(base, packages);
  }
  async importImage(name: string, archivePath: string) {
    this.violations.push(`importImage reached the service with ${JSON.stringify(archivePath)} (nothing under the allowed dir is a file)`);
    return this.real.listImages().then(() => ({ name, base: null, packages: [], source: 'oci-import' as const, createdAt: '', lowerDirs: [], sizeBytes: 0 }));
  }
  async createSandbox(opts: CreateSandboxOptions): Promise<SandboxInfo> {
    const b = parseInput(CreateSandboxBody, JSON.parse(JSON.stringify(opts)), 'sandbox');
    for (const x of b.binds ?? []) {
      if (!x.source.startsWith(this.allowed)) this.violations.push(`a bind source outside the allowed dir reached the service: ${x.source}`);
    }
    if (b.name !== undefined && !ID_PATTERN.test(b.name)) this.violations.push(`createSandbox got name ${JSON.stringify(b.name)}`);
    return { id: b.name ?? 'sb-fuzz', image: b.image ?? BASE_IMAGE, lowerDirs: [], memoryLimitBytes: 0, pidsLimit: 0, env: {}, createdAt: '', ephemeral: false, ownerPid: 0, ownerStartTicks: 0, status: 'missing', initPid: null, sessions: [] };
  }
  listSandboxes = () => this.real.listSandboxes();
  getSandbox = (id: string) => this.real.getSandbox(id);
  exec = (...a: Parameters<LocalService['exec']>) => this.real.exec(...a);
  stopSandbox = (id: string) => this.real.stopSandbox(id);
  removeSandbox = (id: string) => this.real.removeSandbox(id);
  gc = () => this.real.gc();
  checkpoint = (...a: Parameters<LocalService['checkpoint']>) => this.real.checkpoint(...a);
  listCheckpoints = (id: string) => this.real.listCheckpoints(id);
  restore = (...a: Parameters<LocalService['restore']>) => this.real.restore(...a);
  rollback = (...a: Parameters<LocalService['rollback']>) => this.real.rollback(...a);
  fork = (...a: Parameters<LocalService['fork']>) => this.real.fork(...a);
  storeStats = () => this.real.storeStats();
  storeVerify = () => this.real.storeVerify();
  storeGc = () => this.real.storeGc();
}

function writeVictim(paths: CrabPaths): string {
  const dir = path.join(paths.sandboxes, VICTIM);
  fs.mkdirSync(dir, { recursive: true });
  const rec = JSON.stringify({ id: VICTIM, image: BASE_IMAGE, lowerDirs: [path.join(paths.images, BASE_IMAGE, 'rootfs')], memoryLimitBytes: 1 << 28, pidsLimit: 64, env: { SECRET: 'canary' }, binds: [], createdAt: '2026-01-01T00:00:00.000Z', ephemeral: false, ownerPid: 1, ownerStartTicks: 0 });
  fs.writeFileSync(path.join(dir, 'sandbox.json'), rec, { mode: 0o600 });
  return rec;
}

/** Files beside CRAB_HOME where a traversal out of it would land; each must stay as it is. */
const CANARIES = ['etc/passwd', 'canary/secret', 'home-sibling/sandbox.json'];

function snapshotOutside(base: string): string {
  const out: string[] = [];
  const walk = (d: string) => {
    for (const n of fs.readdirSync(d).sort()) {
      const p = path.join(d, n);
      if (p === path.join(base, 'home')) continue;
      const st = fs.lstatSync(p);
      out.push(`${path.relative(base, p)} ${st.mode.toString(8)} ${st.size} ${st.mtimeMs}`);
      if (st.isDirectory()) walk(p);
    }
  };
  walk(base);
  return out.join('\n');
}

export async function startApiFuzzTarget(opts: { maxMs?: number } = {}): Promise<ApiFuzzTarget> {
  const maxMs = opts.maxMs ?? 5000;
  const base = fs.realpathSync(fs.mkdtempSync(path.join(os.tmpdir(), 'crab-fuzz-api-')));
  const paths = crabPaths(path.join(base, 'home'));
  for (const c of CANARIES) {
    fs.mkdirSync(path.dirname(path.join(base, c)), { recursive: true });
    fs.writeFileSync(path.join(base, c), `canary ${c}\n`);
  }
  const allowed = path.join(base, 'allowed');
  fs.mkdirSync(path.join(allowed, 'proj'), { recursive: true });
  fs.symlinkSync(path.join(base, 'canary'), path.join(allowed, 'escape'));
  // An image whose lower dir is real and empty: lookups find it, nothing builds one.
  fs.mkdirSync(path.join(paths.images, BASE_IMAGE, 'rootfs'), { recursive: true });
  fs.writeFileSync(
    path.join(paths.images, BASE_IMAGE, 'image.json'),
    JSON.stringify({ name: BASE_IMAGE, base: null, packages: [], source: 'debootstrap', createdAt: '', lowerDirs: [path.join(paths.images, BASE_IMAGE, 'rootfs')], sizeBytes: 0 }),
  );
  fs.mkdirSync(paths.sandboxes, { recursive: true });
  const victimRec = writeVictim(paths);
  const host = await CrabHost.start({ paths, log: pino({ level: 'silent' }), inspector: false });
  const service = new FuzzService(host.service, allowed);
  const app = createApp(service, { host, hostPaths: { allow: [allowed], home: paths.home }, log: pino({ level: 'silent' }) });
  const outside = snapshotOutside(base);
  const seen = new Map<string, number>();

  const run = async (c: ApiCase): Promise<number> => {
    const fail = (why: string): never => {
      throw new Error(`${why}\n  case: ${c.method} ${JSON.stringify(c.path.slice(0, 300))} label=${c.label}/${c.idSegment ?? '-'} (${c.why}) body=${JSON.stringify(c.body?.slice(0, 300))}${(c.body?.length ?? 0) > 300 ? `…(${c.body!.length} chars)` : ''}`);
    };
    let req: Request;
    try {
      req = new Request(`http://localhost${c.path}`, { method: c.method, headers: c.headers, body: c.body });
    } catch {
      seen.set('undeliverable', (seen.get('undeliverable') ?? 0) + 1);
      return 0; // not a request Node's HTTP server would hand to the app either (bad URL or method)
    }
    const label = labelOf(c, req.url);
    const t0 = performance.now();
    let res: Response;
    let timer: NodeJS.Timeout | undefined;
    try {
      res = await Promise.race([
        Promise.resolve(app.fetch(req)),
        new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`no answer in ${maxMs} ms`)), maxMs))),
      ]);
    } catch (err) {
      return fail(`the app threw or hung: ${(err as Error).message}`);
    } finally {
      clearTimeout(timer);
    }
    const ms = performance.now() - t0;
    const text = await res.text();
    let code = '';
    if (res.status >= 400 && c.method !== 'HEAD') {
      let json: { error?: { code?: unknown; kind?: unknown; message?: unknown } };
      try {
        json = JSON.parse(text) as typeof json;
      } catch {
        return fail(`status ${res.status} without a JSON error: ${text.slice(0, 200)}`);
      }
      const e = json.error;
      if (!e || typeof e.code !== 'string' || typeof e.kind !== 'string' || typeof e.message !== 'string') return fail(`status ${res.status}: error lacks code/kind/message: ${text.slice(0, 200)}`);
      if (e.message.length > 2000) return fail(`status ${res.status}: a ${e.message.length}-character message`);
      code = e.code;
    }
    seen.set(`${res.status} ${code}`.trim(), (seen.get(`${res.status} ${code}`.trim()) ?? 0) + 1);
    if (res.status >= 500 && !EXPLAINED_5XX.has(code)) fail(`unexplained ${res.status} ${code}: ${text.slice(0, 300)}`);
    if (label === 'bad' && !(res.status >= 400 && res.status < 500)) fail(`a bad input got ${res.status}`);
    if (label === 'valid' && VALIDATION_CODES.has(code)) fail(`a valid input was refused: ${code} ${text.slice(0, 300)}`);
    if (service.violations.length) fail(`the service got what validation should have stopped: ${service.violations.join('; ')}`);
    if (ms > maxMs) fail(`took ${Math.round(ms)} ms`);
    // The host beside CRAB_HOME and the victim's record are untouched (DELETE may remove the victim: it is put back).
    if (snapshotOutside(base) !== outside) fail('something beside CRAB_HOME changed');
    const recFile = path.join(paths.sandboxes, VICTIM, 'sandbox.json');
    if (!fs.existsSync(recFile)) {
      if (!(c.method === 'DELETE' && res.status === 200)) fail('the victim sandbox vanished');
      writeVictim(paths);
    } else if (fs.readFileSync(recFile, 'utf8') !== victimRec) fail("the victim sandbox's record changed");
    return res.status;
  };

  return {
    app,
    base,
    allowed,
    paths,
    run,
    seen,
    async close() {
      await host.scheduler.drain();
      await host.close();
      fs.rmSync(base, { recursive: true, force: true });
    },
  };
}

// ----------------------------------------------------------------------------------------------
// Cases

const pkg = fc.stringMatching(/^[a-z0-9][a-z0-9+.-]{1,20}$/);
const envArb = fc.dictionary(fc.stringMatching(/^[A-Za-z_][A-Za-z0-9_]{0,10}$/), fc.string({ maxLength: 20 }).filter((s) => !s.includes('\0')), { maxKeys: 4 });
const opt = <T>(a: fc.Arbitrary<T>) => fc.option(a, { nil: undefined });
const clean = <T extends object>(o: T): Record<string, unknown> => Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined));

function bodies(allowed: string) {
  return {
    createSandbox: fc
      .record({
        name: opt(validId),
        image: opt(fc.oneof(fc.constant(BASE_IMAGE), validId)),
        packages: opt(fc.array(pkg, { maxLength: 3 })),
        memoryLimitBytes: opt(fc.integer({ min: 16 * 1024 * 1024, max: 2 ** 40 })),
        pidsLimit: opt(fc.integer({ min: 16, max: 1_000_000 })),
        env: opt(envArb),
        ephemeral: opt(fc.boolean()),
        binds: opt(fc.array(fc.record({ source: fc.oneof(fc.constant(`${allowed}/proj`), fc.constant(`${allowed}/escape`), goodPath), target: goodPath, readonly: opt(fc.boolean()) }).map(clean), { maxLength: 2 })),
      })
      .map(clean),
    exec: fc
      .record({
        cmd: fc.string({ minLength: 1, maxLength: 200 }).filter((s) => !s.includes('\0')),
        session: opt(validId),
        timeoutMs: opt(fc.integer({ min: 1, max: 24 * 3600 * 1000 })),
        cwd: opt(goodPath),
        env: opt(envArb),
      })
      .map(clean),
    buildImage: fc.record({ base: fc.oneof(fc.constant(BASE_IMAGE), validId), packages: fc.array(pkg, { maxLength: 3 }) }),
    importImage: fc.record({ name: validId, archivePath: fc.oneof(goodPath, fc.constant(`${allowed}/proj`), fc.constant(`${allowed}/escape/secret`)) }),
    checkpoint: fc.record({ kind: opt(fc.constantFrom('full', 'fs', 'process')), turn: opt(fc.oneof(fc.nat(), fc.constant(null))), hintPaths: opt(fc.array(goodPath, { maxLength: 5 })) }).map(clean),
    restore: fc.record({ as: opt(validId), force: opt(fc.boolean()) }).map(clean),
    rollback: fc.record({ checkpoint: validId, force: opt(fc.boolean()) }).map(clean),
    fork: fc.record({ count: fc.integer({ min: 1, max: 64 }) }),
    boundary: fc.record({ turn: fc.nat(1000) }),
    mode: fc.record({ mode: fc.constantFrom(...CHECKPOINT_MODES) }),
    preempt: fc.record({ graceMs: fc.integer({ min: 1, max: 2000 }) }),
    empty: fc.constant({}),
  };
}

type BodyKind = keyof ReturnType<typeof bodies>;
interface Route {
  method: string;
  path: string;
  body?: BodyKind;
  /** A template whose `:id`/`:ck` takes an id. */
  idKind?: 'id' | 'ck';
}

const ROUTES: Route[] = [
  { method: 'GET', path: '/v1/health' },
  { method: 'GET', path: '/v1/images' },
  { method: 'POST', path: '/v1/images', body: 'buildImage' },
  { method: 'POST', path: '/v1/images/import', body: 'importImage' },
  { method: 'GET', path: '/v1/sandboxes' },
  { method: 'POST', path: '/v1/sandboxes', body: 'createSandbox' },
  { method: 'GET', path: '/v1/sandboxes/:id', idKind: 'id' },
  { method: 'DELETE', path: '/v1/sandboxes/:id', idKind: 'id' },
  { method: 'POST', path: '/v1/sandboxes/:id/exec', body: 'exec', idKind: 'id' },
  { method: 'POST', path: '/v1/sandboxes/:id/stop', idKind: 'id' },
  { method: 'POST', path: '/v1/gc' },
  { method: 'POST', path: '/v1/sandboxes/:id/boundary', body: 'boundary', idKind: 'id' },
  { method: 'PUT', path: '/v1/sandboxes/:id/mode', body: 'mode', idKind: 'id' },
  { method: 'GET', path: '/v1/sandboxes/:id/inspect', idKind: 'id' },
  { method: 'POST', path: '/v1/sandboxes/:id/recover', idKind: 'id' },
  { method: 'POST', path: '/v1/sandboxes/:id/preempt', body: 'preempt', idKind: 'id' },
  { method: 'GET', path: '/v1/sandboxes/:id/record', idKind: 'id' },
  { method: 'GET', path: '/metrics' },
  { method: 'GET', path: '/v1/proxy' },
  { method: 'POST', path: '/v1/sandboxes/:id/checkpoints', body: 'checkpoint', idKind: 'id' },
  { method: 'GET', path: '/v1/sandboxes/:id/checkpoints', idKind: 'id' },
  { method: 'POST', path: '/v1/sandboxes/:id/rollback', body: 'rollback', idKind: 'id' },
  { method: 'POST', path: '/v1/checkpoints/:ck/restore', body: 'restore', idKind: 'ck' },
  { method: 'POST', path: '/v1/checkpoints/:ck/fork', body: 'fork', idKind: 'ck' },
  { method: 'GET', path: '/v1/store/stats' },
  { method: 'POST', path: '/v1/store/verify' },
  { method: 'POST', path: '/v1/store/gc' },
];

/** What Hono does to a path parameter: percent-decoding where it decodes. */
function decoded(raw: string): string {
  try {
    return decodeURIComponent(raw);
  } catch {
    return raw;
  }
}

/** encodeURIComponent, or the text itself where it cannot (a lone surrogate). */
function encodeOr(s: string): string {
  try {
    return encodeURIComponent(s);
  } catch {
    return s;
  }
}

/** The limit a route's body is read under. */
function limitOf(r: Route): number {
  if (r.body === 'exec') return BODY_LIMITS.exec;
  if (r.body === 'checkpoint') return BODY_LIMITS.checkpoint;
  if (r.body === 'createSandbox') return BODY_LIMITS.createSandbox;
  return BODY_LIMITS.default;
}

/** Random API requests, each labelled valid / bad / unknown. `allowed`: the dir bind sources may lie under. */
export function apiCases(allowed: string): fc.Arbitrary<ApiCase> {
  const B = bodies(allowed);
  const id = anyId([VICTIM, 'victim2', 'ck-000000000000']);
  const routed = fc
    .tuple(fc.constantFrom(...ROUTES), id, fc.boolean(), fc.integer({ min: 0, max: 99 }), fc.boolean())
    .chain(([r, rawId, encode, dice, withLength]) => {
      const idText = encode ? encodeOr(rawId) : rawId;
      const p = r.path.replace(`:${r.idKind ?? 'none'}`, idText);
      const where = r.idKind ? { idSegment: r.path.split('/').indexOf(`:${r.idKind}`), segments: r.path.split('/').length } : {};
      const headers = (body: string | undefined): Record<string, string> => (body !== undefined && withLength ? { 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(body)) } : { 'content-type': 'application/json' });
      const noBody = r.method === 'GET' || r.method === 'HEAD';
      if (noBody) return fc.constant<ApiCase>({ method: r.method, path: p, headers: {}, body: undefined, label: 'valid', ...where, why: `route ${r.path}` });
      if (dice < 2) {
        // Over the route's limit (rarely: up to 16 MiB each).
        const text = `{"cmd":"${'x'.repeat(limitOf(r))}"}`;
        return fc.constant<ApiCase>({ method: r.method, path: p, headers: headers(text), body: text, label: 'bad', ...where, why: 'body over the limit' });
      }
      // Not a JSON object: refused where the route reads a body (an empty one reads as {}), ignored elsewhere.
      if (dice < 12) return notJson.map((text): ApiCase => ({ method: r.method, path: p, headers: headers(text), body: text, label: r.body && text !== '' ? 'bad' : 'unknown', ...where, why: 'not a JSON object' }));
      const valid = B[r.body ?? 'empty'] as fc.Arbitrary<Record<string, unknown>>;
      if (dice < 20 && r.body === 'exec') {
        return fc.tuple(valid, badPath).map(([v, cwd]) => {
          const text = JSON.stringify({ ...v, cwd });
          return { method: r.method, path: p, headers: headers(text), body: text, label: 'bad' as Label, ...where, why: 'a bad cwd' };
        });
      }
      return mutated(valid).map(({ text, label }): ApiCase => ({ method: r.method, path: p, headers: headers(text), body: text, label: r.body ? label : 'unknown', ...where, why: `route ${r.path}` }));
    });
  const stray = fc.tuple(fc.constantFrom('GET', 'POST', 'PUT', 'DELETE', 'PATCH', 'OPTIONS', 'HEAD', 'TRACE', 'FOO'), fc.array(fc.oneof(validId, fc.string({ maxLength: 12 })), { maxLength: 5 })).map(
    ([method, segs]): ApiCase => ({ method, path: `/${segs.map(encodeOr).join('/')}`, headers: {}, body: undefined, label: 'unknown', why: 'a stray path' }),
  );
  return fc.oneof({ weight: 9, arbitrary: routed }, { weight: 1, arbitrary: stray });
}
