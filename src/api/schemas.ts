/** @module Request bodies of the HTTP API, validated with zod. */
import { z } from 'zod';
import { CHECKPOINT_MODES } from '../coordinator/turn-controller.js';

const name = z.string().regex(/^[a-z0-9][a-z0-9_.-]{0,62}$/, 'lower-case letters, digits and _ . - (1–63 chars)');
const pkg = z.string().regex(/^[a-z0-9][a-z0-9+.-]+$/, 'a Debian package name');

export const CreateSandboxBody = z
  .object({
    name: name.optional(),
    image: z.string().min(1).optional(),
    packages: z.array(pkg).max(200).optional(),
    memoryLimitBytes: z.number().int().min(16 * 1024 * 1024).optional(),
    pidsLimit: z.number().int().min(16).max(1_000_000).optional(),
    env: z.record(z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/), z.string()).optional(),
    ephemeral: z.boolean().optional(),
    link: z.boolean().optional(),
    binds: z
      .array(z.object({ source: z.string().startsWith('/'), target: z.string().startsWith('/'), readonly: z.boolean().optional() }).strict())
      .max(64)
      .optional(),
  })
  .strict();

export const ExecBody = z
  .object({
    cmd: z.string().min(1).max(1_000_000),
    session: name.optional(),
    timeoutMs: z.number().int().min(1).max(24 * 3600 * 1000).optional(),
    cwd: z.string().startsWith('/').optional(),
    env: z.record(z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/), z.string()).optional(),
  })
  .strict();

export const BuildImageBody = z.object({ base: z.string().min(1), packages: z.array(pkg).max(200) }).strict();
export const ImportImageBody = z.object({ name, archivePath: z.string().startsWith('/') }).strict();

export const CheckpointBody = z
  .object({
    kind: z.enum(['full', 'fs', 'process']).default('full'),
    turn: z.number().int().min(0).nullable().optional(),
    hintPaths: z.array(z.string()).max(100_000).optional(),
  })
  .strict();
export const RestoreBody = z.object({ as: name.optional(), force: z.boolean().optional() }).strict();
export const RollbackBody = z.object({ checkpoint: z.string().min(1), force: z.boolean().optional() }).strict();
export const ForkBody = z.object({ count: z.number().int().min(1).max(64) }).strict();
export const BoundaryBody = z.object({ turn: z.number().int().min(0) }).strict();
export const ModeBody = z.object({ mode: z.enum(CHECKPOINT_MODES) }).strict();
export const PreemptBody = z.object({ graceMs: z.number().int().min(1).max(3_600_000) }).strict();
