/**
 * @module Typed errors. Every error Crab raises carries a stable `code`, a `kind` that the API
 * maps to an HTTP status and the CLI to an exit code, and a `hint` saying what to do about it.
 */

export type ErrorKind = 'invalid' | 'not-found' | 'conflict' | 'precondition' | 'unavailable' | 'internal';

export class CrabError extends Error {
  constructor(
    readonly code: string,
    readonly kind: ErrorKind,
    message: string,
    readonly hint?: string,
    readonly details: Record<string, unknown> = {},
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = 'CrabError';
  }

  toJSON(): { code: string; kind: ErrorKind; message: string; hint?: string; details: Record<string, unknown> } {
    return { code: this.code, kind: this.kind, message: this.message, hint: this.hint, details: this.details };
  }
}

export const invalid = (code: string, message: string, hint?: string, details?: Record<string, unknown>) =>
  new CrabError(code, 'invalid', message, hint, details);
export const notFound = (code: string, message: string, hint?: string, details?: Record<string, unknown>) =>
  new CrabError(code, 'not-found', message, hint, details);
export const conflict = (code: string, message: string, hint?: string, details?: Record<string, unknown>) =>
  new CrabError(code, 'conflict', message, hint, details);
export const precondition = (code: string, message: string, hint?: string, details?: Record<string, unknown>) =>
  new CrabError(code, 'precondition', message, hint, details);

/** Wraps an unknown thrown value into a CrabError (keeps CrabErrors as they are). */
export function asCrabError(err: unknown, code = 'INTERNAL', message?: string): CrabError {
  if (err instanceof CrabError) return err;
  const msg = err instanceof Error ? err.message : String(err);
  return new CrabError(code, 'internal', message ? `${message}: ${msg}` : msg, undefined, {}, { cause: err });
}

/** Exit codes of the CLI, by error kind. */
export const EXIT_CODE_BY_KIND: Record<ErrorKind, number> = {
  invalid: 2,
  'not-found': 3,
  conflict: 4,
  precondition: 5,
  unavailable: 6,
  internal: 1,
};

/** HTTP status of the API, by error kind. */
export const HTTP_STATUS_BY_KIND: Record<ErrorKind, number> = {
  invalid: 400,
  'not-found': 404,
  conflict: 409,
  precondition: 412,
  unavailable: 503,
  internal: 500,
};
