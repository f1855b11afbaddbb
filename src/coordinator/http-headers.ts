/** @module Header rewriting for the forwarding proxy, on raw header arrays (order, case and duplicates kept). */

/** RFC 9110 §7.6.1 connection-specific fields, plus the legacy ones proxies must not forward. */
const HOP_BY_HOP = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'proxy-authenticate',
  'proxy-authorization',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
]);

export const SANDBOX_HEADER = 'x-crab-sandbox';

/**
 * Returns `raw` (name, value, name, value…) without hop-by-hop fields, fields named in
 * `Connection`, and any field whose lower-cased name is in `drop`.
 */
export function filterRawHeaders(raw: readonly string[], drop: ReadonlySet<string> = new Set()): string[] {
  const named = new Set<string>();
  for (let i = 0; i + 1 < raw.length; i += 2) {
    if (raw[i]!.toLowerCase() === 'connection') {
      for (const tok of raw[i + 1]!.split(',')) if (tok.trim()) named.add(tok.trim().toLowerCase());
    }
  }
  const out: string[] = [];
  for (let i = 0; i + 1 < raw.length; i += 2) {
    const name = raw[i]!.toLowerCase();
    if (HOP_BY_HOP.has(name) || named.has(name) || drop.has(name)) continue;
    out.push(raw[i]!, raw[i + 1]!);
  }
  return out;
}
