/**
 * @module Request bodies of the HTTP API, validated with zod. Every id and name is checked against
 * the one pattern (`core/ids.ts`), every path for NUL, control characters, `..` and length, before
 * any of it reaches the runtime. The in-process CLI runs the same schemas (`LocalService`).
 */
import { z } from 'zod';
import { invalid } from '../core/errors.js';
import { CHECKPOINT_MODES } from '../coordinator/turn-controller.js';
import { ID_PATTERN, ID_RULE, quoteForMessage } from '../core/ids.js';
import { MAX_PATH_BYTES } from '../sandbox/bind-policy.js';

/** Any id or name: sandbox, checkpoint, session, image, `as`. */
export const idSchema = z.string().regex(ID_PATTERN, ID_RULE);
const pkg = z.string().max(200).regex(/^[a-z0-9][a-z0-9+.-]+$/, 'a Debian package name');

// eslint-disable-next-line no-control-regex
const CONTROL = /[\u0000-\u001f\u007f]/;
/** An absolute, normalized path (host or sandbox): no `.`/`..`/empty components, no control characters, at most PATH_MAX bytes. */
export const pathSchema = z
  .string()
  .startsWith('/', 'an absolute path')
  .refine((p) => Buffer.byteLength(p) <= MAX_PATH_BYTES, `at most ${MAX_PATH_BYTES} bytes`)
  .refine((p) => !CONTROL.test(p), 'no control characters (NUL, newline…)')
  .refine((p) => {
    if (p === '/') return true;
    const body = p.endsWith('/') ? p.slice(1, -1) : p.slice(1);
    return body.split('/').every((c) => c !== '' && c !== '.' && c !== '..');
  }, 'a normalized path (no empty, . or .. components)');

/** Environment for a sandbox or a command: POSIX names, values without NUL (execve cannot pass one). */
export const envSchema = z
  .record(z.string().max(256).regex(/^[A-Za-z_][A-Za-z0-9_]*$/, 'a variable name'), z.string().max(128 * 1024).refine((v) => !v.includes('\0'), 'no NUL'))
  .refine((e) => Object.keys(e).length <= 256, 'at most 256 variables');

export const BindSchema = z
  .object({
    source: pathSchema,
    target: pathSchema.refine((p) => p !== '/', 'not / (the sandbox root)'),
    /** Read-only unless exactly false. */
    readonly: z.boolean().optional(),
  })
  .strict();

export const CreateSandboxBody = z
  .object({
    name: idSchema.optional(),
    image: idSchema.optional(),
    packages: z.array(pkg).max(200).optional(),
    memoryLimitBytes: z.number().int().min(16 * 1024 * 1024).max(2 ** 50).optional(),
    pidsLimit: z.number().int().min(16).max(1_000_000).optional(),
    env: envSchema.optional(),
    ephemeral: z.boolean().optional(),
    link: z.boolean().optional(),
    binds: z.array(BindSchema).max(64).optional(),
  })
  .strict();

export const ExecBody = z
  .object({
    cmd: z
      .string()
      .min(1)
      .max(1_000_000)
      .refine((c) => !c.includes('\0'), 'no NUL (bash would drop it)'),
    session: idSchema.optional(),
    timeoutMs: z.number().int().min(1).max(24 * 3600 * 1000).optional(),
    cwd: pathSchema.optional(),
    env: envSchema.optional(),
  })
  .strict();

export const BuildImageBody = z.object({ base: idSchema, packages: z.array(pkg).max(200) }).strict();
export const ImportImageBody = z.object({ name: idSchema, archivePath: pathSchema }).strict();

export const CheckpointBody = z
  .object({
    kind: z.enum(['full', 'fs', 'process']).default('full'),
    turn: z.number().int().min(0).max(Number.MAX_SAFE_INTEGER).nullable().optional(),
    hintPaths: z.array(pathSchema).max(100_000).optional(),
  })
  .strict();
export const RestoreBody = z.object({ as: idSchema.optional(), force: z.boolean().optional() }).strict();
export const RollbackBody = z.object({ checkpoint: idSchema, force: z.boolean().optional() }).strict();
export const ForkBody = z.object({ count: z.number().int().min(1).max(64) }).strict();
export const BoundaryBody = z.object({ turn: z.number().int().min(0).max(Number.MAX_SAFE_INTEGER) }).strict();
export const ModeBody = z.object({ mode: z.enum(CHECKPOINT_MODES) }).strict();
export const PreemptBody = z.object({ graceMs: z.number().int().min(1).max(3_600_000) }).strict();
/** `GET /v1/sandboxes/:id/record?name=`: the trace's name. */
export const RecordQuery = z.object({ name: idSchema.optional() }).strict();

/**
 * `raw` parsed by `schema`, or API_INVALID_REQUEST (kind 'invalid') naming the first field at
 * fault. The issues in the error's details name fields and rules only: the values (a 10 kB id,
 * a NUL) stay out of replies and logs.
 */
export function parseInput<T extends z.ZodTypeAny>(schema: T, raw: unknown, what: string): z.infer<T> {
  const parsed = schema.safeParse(raw);
  if (!parsed.success) {
    const first = parsed.error.issues[0];
    const field = (i: z.core.$ZodIssue) => i.path.map((k) => quoteForMessage(String(k), 40)).join('.');
    throw invalid('API_INVALID_REQUEST', `invalid request: ${(first && field(first)) || what}: ${quoteForMessage(first?.message ?? 'invalid', 200)}`, 'See the API reference in the README for the fields each route takes.', {
      issues: parsed.error.issues.slice(0, 10).map((i) => ({ path: field(i), code: i.code, message: quoteForMessage(i.message, 200) })),
    });
  }
  return parsed.data;
}
