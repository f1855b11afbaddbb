/** @module Identifiers: short random ids and validation of user-given names. */
import { randomBytes } from 'node:crypto';
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
