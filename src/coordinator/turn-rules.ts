/** @module Which proxied requests are turn boundaries. A list of rules; the first match decides. */
import { z } from 'zod';

export const turnRuleSchema = z.object({
  /** HTTP method, upper case, or '*' for any. */
  method: z.string().min(1),
  /** Request path without the `/s/<sandbox>` prefix and without the query string. */
  path: z.string().startsWith('/'),
  /** 'exact' (default) or 'prefix' (path is a prefix of the request path). */
  match: z.enum(['exact', 'prefix']).default('exact'),
  /** Whether a matching request marks a turn boundary. */
  counts: z.boolean(),
});
export type TurnRule = z.input<typeof turnRuleSchema>;

/**
 * Generation requests count; listing models and counting tokens do not. Anything that matches no
 * rule (embeddings, files, batches, `/v1/responses/<id>`…) is forwarded and not counted.
 */
export const DEFAULT_TURN_RULES: readonly TurnRule[] = Object.freeze([
  { method: 'POST', path: '/v1/chat/completions', counts: true },
  { method: 'POST', path: '/v1/responses', counts: true },
  { method: 'POST', path: '/v1/messages', counts: true },
  { method: 'POST', path: '/v1/messages/count_tokens', counts: false },
  { method: 'GET', path: '/v1/models', match: 'prefix', counts: false },
]);

/** Validates a rule list (from config); throws a zod error on a bad rule. */
export function parseTurnRules(rules: unknown): TurnRule[] {
  return z.array(turnRuleSchema).parse(rules);
}

/** True if `method path` is a turn boundary under `rules` (first matching rule wins; no match: false). */
export function isTurnRequest(rules: readonly TurnRule[], method: string, path: string): boolean {
  const m = method.toUpperCase();
  for (const r of rules) {
    if (r.method !== '*' && r.method.toUpperCase() !== m) continue;
    const hit = r.match === 'prefix' ? path.startsWith(r.path) : path === r.path || path === `${r.path}/`;
    if (hit) return r.counts;
  }
  return false;
}
