/**
 * @module Identifiers: short random ids, and the one pattern every id, name and image parameter
 * must match before it becomes a path, a cgroup, a runc container or a SQL key.
 */
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import { invalid } from './errors.js';

export function newId(prefix: string): string {
  return `${prefix}${randomBytes(6).toString('hex')}`;
}

/**
 * The one pattern of ids and names: sandbox ids and names, checkpoint ids, session names, image
 * names (a derived image is `base+digest`), fork prefixes, `as`, trace names. It is a single path
 * component by construction: no `/`, no NUL or other control character, and it cannot be `.` or
 * `..` (the first character is a letter or digit). 63 characters at most, so it also fits a
 * hostname, a cgroup name and a runc container id.
 */
export const ID_PATTERN = /^[a-z0-9][a-z0-9_.+-]{0,62}$/;
export const ID_MAX_LENGTH = 63;
export const ID_RULE = "1–63 characters: lower-case letters, digits and _ . + - (a letter or digit first)";

/** What kind of id a value is, for error messages. */
export type IdKind = 'sandbox' | 'checkpoint' | 'session' | 'image' | 'fork prefix' | 'trace' | 'name';

export function isId(value: unknown): value is string {
  return typeof value === 'string' && ID_PATTERN.test(value);
}

/**
 * Returns `value` if it matches ID_PATTERN, else throws INVALID_NAME (kind 'invalid': a 400 over
 * the API, exit 2 in the CLI). The message quotes at most 80 characters of the value, with
 * control characters escaped, so a 10 kB id or a NUL neither floods logs nor breaks a terminal.
 */
export function checkId(kind: IdKind, value: unknown): string {
  if (isId(value)) return value;
  throw invalid('INVALID_NAME', `${kind} ${typeof value === 'string' ? `'${quoteForMessage(value)}'` : `(${value === null ? 'null' : typeof value})`} is not a valid name`, `Use ${ID_RULE}.`, {
    kind,
    length: typeof value === 'string' ? value.length : undefined,
  });
}

/** `checkId` under its older name (callers outside this part use it). */
export function checkName(what: string, name: string): string {
  return checkId(what as IdKind, name);
}

/** A value made safe to quote in a one-line message: control characters escaped, cut at `max`. */
export function quoteForMessage(value: string, max = 80): string {
  const cut = value.length > max ? `${value.slice(0, max)}…(${value.length} chars)` : value;
  // eslint-disable-next-line no-control-regex
  return cut.replace(/[\u0000-\u001f\u007f-\u009f]/g, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`);
}

let bootIdCache: string | undefined;

/** This boot of the host (the kernel's random boot id): what was in its page cache is on disk only if the boot is the same. */
export function bootId(): string {
  return (bootIdCache ??= fs.readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim());
}
