/** @module Which sandbox sent a proxied request: path prefix, header, or source address. */
import { invalid } from '../core/errors.js';
import { checkName } from '../core/ids.js';

export type SandboxSource = 'path' | 'header' | 'address';

export interface ResolvedRequest {
  /** Undefined when no method identified a sandbox. */
  sandboxId: string | undefined;
  source: SandboxSource | undefined;
  /** The path to forward upstream: `/s/<sandbox>` removed, query string kept. */
  forwardPath: string;
  /** `forwardPath` without its query string (what turn rules match). */
  routePath: string;
}

const PREFIX_RE = /^\/s\/([^/?]*)(.*)$/s;

/**
 * Resolves the sandbox of a request. Precedence: `/s/<id>/…` path prefix, then the
 * `X-Crab-Sandbox` header, then `byAddress(remoteAddress)`.
 * Throws PROXY_SANDBOX_INVALID if a given id is malformed, PROXY_SANDBOX_CONFLICT if the path and
 * the header name different sandboxes.
 */
export function resolveSandbox(
  rawUrl: string,
  header: string | string[] | undefined,
  remoteAddress: string | undefined,
  byAddress?: (remoteAddress: string) => string | undefined,
): ResolvedRequest {
  let forwardPath = rawUrl.startsWith('/') ? rawUrl : `/${rawUrl}`;
  let sandboxId: string | undefined;
  let source: SandboxSource | undefined;
  const m = PREFIX_RE.exec(forwardPath);
  if (m) {
    sandboxId = check(m[1]!);
    source = 'path';
    forwardPath = m[2]!.startsWith('/') ? m[2]! : `/${m[2]!}`;
  }
  if (header !== undefined) {
    const values = Array.isArray(header) ? header : [header];
    const ids = new Set(values.map((v) => check(v.trim())));
    if (ids.size > 1) throw conflict([...ids]);
    const fromHeader = [...ids][0]!;
    if (sandboxId !== undefined && sandboxId !== fromHeader) throw conflict([sandboxId, fromHeader]);
    if (sandboxId === undefined) {
      sandboxId = fromHeader;
      source = 'header';
    }
  }
  if (sandboxId === undefined && byAddress && remoteAddress) {
    sandboxId = byAddress(remoteAddress);
    if (sandboxId !== undefined) source = 'address';
  }
  const q = forwardPath.indexOf('?');
  return { sandboxId, source, forwardPath, routePath: q < 0 ? forwardPath : forwardPath.slice(0, q) };
}

function check(id: string): string {
  try {
    return checkName('sandbox', id);
  } catch (err) {
    throw invalid(
      'PROXY_SANDBOX_INVALID',
      `sandbox id '${id}' is not valid`,
      'Use the name Crab gave the sandbox.',
      {
        cause: String(err),
      },
    );
  }
}

function conflict(ids: string[]) {
  return invalid(
    'PROXY_SANDBOX_CONFLICT',
    `request names several sandboxes: ${ids.join(', ')}`,
    'Name one sandbox per request.',
  );
}
