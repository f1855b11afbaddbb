/** @module Identifiers: short random ids and validation of user-given names. */
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import { invalid } from './errors.js';

export function newId(prefix: string): string {
  return `${prefix}${randomBytes(6).toString('hex')}`;
}

const NAME_RE = /^[a-z0-9][a-z0-9_.-]{0,62}$/;

/** Names become directory, cgroup and runc container names: keep them to a safe alphabet. */
export function checkName(what: string, name: string): string {
  if (!NAME_RE.test(name)) {
    throw invalid(
      'INVALID_NAME',
      `${what} name '${name}' is not allowed`,
      'Use 1–63 characters: lower-case letters, digits, and _ . - (not first).',
    );
  }
  return name;
}

let bootIdCache: string | undefined;

/** This boot of the host (the kernel's random boot id): what was in its page cache is on disk only if the boot is the same. */
export function bootId(): string {
  return (bootIdCache ??= fs.readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim());
}
