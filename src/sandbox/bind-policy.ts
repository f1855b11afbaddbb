/**
 * @module Which host paths a caller may name: bind-mount sources (and image archives over the
 * API). A source is resolved (realpath) first, so a symlink cannot smuggle in a path the policy
 * refuses, and the resolved path is what gets mounted. Never allowed: the host's root, CRAB_HOME
 * (the store holds every sandbox's process images) and the kernel's trees (/proc, /sys, /dev), nor
 * a directory that holds one of them. With an allowlist (`crab daemon --bind-allow DIR`), a path
 * must also lie under one of its directories.
 */
import fs from 'node:fs';
import path from 'node:path';
import { invalid } from '../core/errors.js';
import { quoteForMessage } from '../core/ids.js';
import type { BindMount } from './sandbox.js';

export interface HostPathPolicy {
  /** Directories under which host paths may be named (resolved when checked); null: anywhere but the denied places. */
  allow: readonly string[] | null;
  /** CRAB_HOME: never named, nor any directory that holds it. */
  home: string;
}

/** Host trees a sandbox never gets, whatever the allowlist says. */
export const DENIED_HOST_TREES: readonly string[] = ['/proc', '/sys', '/dev'];

/** Longest path accepted (PATH_MAX). */
export const MAX_PATH_BYTES = 4096;

function within(p: string, dir: string): boolean {
  return dir === '/' || p === dir || p.startsWith(dir + '/');
}

/**
 * Why the resolved host path `real` may not be named under `policy` (with `home` and `allow`
 * resolved too), or null when it may. Pure.
 */
export function hostPathVerdict(real: string, policy: { allow: readonly string[] | null; home: string }): string | null {
  if (real === '/') return "it is the host's root";
  for (const denied of [policy.home, ...DENIED_HOST_TREES]) {
    if (within(real, denied)) return `it lies in ${denied}${denied === policy.home ? ' (CRAB_HOME)' : ''}`;
    if (within(denied, real)) return `it holds ${denied}${denied === policy.home ? ' (CRAB_HOME)' : ''}`;
  }
  if (policy.allow === null) return null;
  if (policy.allow.length === 0) return 'this listener allows no host paths (start the daemon with --bind-allow DIR)';
  if (!policy.allow.some((a) => within(real, a))) return `it is not under an allowed directory (${policy.allow.join(', ')})`;
  return null;
}

/**
 * Throws `code` (kind 'invalid') unless `p` is an absolute, normalized path (no `.` or `..`
 * components, no empty ones), at most PATH_MAX bytes, without NUL or other control characters.
 * For paths on the host and inside a sandbox alike. Returns `p`.
 */
export function checkPathText(p: unknown, what: string, code = 'INVALID_PATH'): string {
  const bad = (why: string) => invalid(code, `${what} ${typeof p === 'string' ? `'${quoteForMessage(p)}'` : String(p)} ${why}`, 'Give an absolute path such as /work/src, without . or .. components.');
  if (typeof p !== 'string') throw bad('is not a string');
  if (!p.startsWith('/')) throw bad('is not absolute');
  if (Buffer.byteLength(p) > MAX_PATH_BYTES) throw bad(`is longer than ${MAX_PATH_BYTES} bytes`);
  // eslint-disable-next-line no-control-regex
  if (/[\u0000-\u001f\u007f]/.test(p)) throw bad('holds a control character');
  // One trailing slash is harmless; any other empty, `.` or `..` component is refused.
  const body = p.length > 1 && p.endsWith('/') ? p.slice(1, -1) : p.slice(1);
  if (p !== '/' && body.split('/').some((c) => c === '' || c === '.' || c === '..')) throw bad('is not normalized');
  return p;
}

/**
 * Resolves a host path the caller names and checks it against `policy` (and, with `regularFile`,
 * that it is one: an archive that is a directory or a device is refused here, not by tar);
 * returns the resolved path.
 */
export function resolveHostPath(p: unknown, policy: HostPathPolicy, what: string, opts: { regularFile?: boolean } = {}): string {
  const text = checkPathText(p, what, 'HOST_PATH_INVALID');
  // The kernel's trees are refused as written, before anything in them is looked up.
  const denied = DENIED_HOST_TREES.find((t) => within(text, t));
  if (denied) throw invalid('HOST_PATH_NOT_ALLOWED', `${what} ${text} is not allowed: it lies in ${denied}`, 'Name a directory outside /proc, /sys and /dev.');
  let real: string;
  try {
    real = fs.realpathSync(text);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR' || code === 'ELOOP') throw invalid('HOST_PATH_MISSING', `${what} ${text} does not exist`, 'Create it first, or fix the path.');
    throw invalid('HOST_PATH_UNRESOLVABLE', `${what} ${text} cannot be resolved (${code ?? (err as Error).message})`, 'Name a path the daemon can read.');
  }
  const why = hostPathVerdict(real, { allow: policy.allow === null ? null : policy.allow.map(realOrSelf), home: realOrSelf(policy.home) });
  if (why !== null) throw invalid('HOST_PATH_NOT_ALLOWED', `${what} ${text}${real !== text ? ` (${real})` : ''} is not allowed: ${why}`, 'Name a directory under one the daemon allows (crab daemon --bind-allow DIR), outside CRAB_HOME and the kernel trees.');
  if (opts.regularFile && !fs.statSync(real).isFile()) throw invalid('HOST_PATH_NOT_FILE', `${what} ${text} is not a regular file`, 'Name the archive file itself.');
  return real;
}

/**
 * A bind as it will be mounted: the source resolved and checked against `policy`, the target a
 * normalized absolute path other than `/`, read-only unless `readonly` is exactly false.
 */
export function resolveBind(b: BindMount, policy: HostPathPolicy): BindMount {
  const target = checkPathText(b.target, 'bind target', 'SANDBOX_BAD_BIND');
  if (target === '/' || target.replace(/\/+$/, '') === '') throw invalid('SANDBOX_BAD_BIND', 'a bind target may not be / (the sandbox root)', 'Bind onto a directory such as /work.');
  return { source: resolveHostPath(b.source, policy, 'bind source'), target, readonly: b.readonly !== false };
}

function realOrSelf(p: string): string {
  try {
    return fs.realpathSync(p);
  } catch {
    return path.resolve(p); // not there (an allowlist entry removed since): compared as written
  }
}
