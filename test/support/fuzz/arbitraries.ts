/**
 * fast-check arbitraries shared by the fuzzers: ids that are valid, ids that are not (the issue's
 * NUL, 10 kB, `..%2F..%2Fetc%2Fpasswd`, `a%2F..%2Fb`, percent-encodings of any byte), paths, JSON
 * values and JSON text that is not JSON. Derived by hand from the zod 4 schemas in
 * src/api/schemas.ts (zod-fast-check supports zod 3 only).
 */
import fc from 'fast-check';

/** An id matching ID_PATTERN. */
export const validId = fc.stringMatching(/^[a-z0-9][a-z0-9_.+-]{0,62}$/);

const ISSUE_IDS = [
  '',
  '.',
  '..',
  '../../etc/passwd',
  '..%2F..%2Fetc%2Fpasswd',
  '..%2f..%2fetc%2fpasswd',
  'a%2F..%2Fb',
  'a%2F..%2Fvictim',
  '%2e%2e',
  '%2e%2e%2f%2e%2e%2fetc',
  '%252e%252e%252f',
  '%00',
  'victim%00',
  'a\0b',
  'victim\n',
  '%',
  '%%',
  '%zz',
  '%E0%A4%A',
  '%C0%AE%C0%AE',
  '%FF',
  'Victim',
  ' victim',
  'victim ',
  '-victim',
  '.victim',
  'victim/',
  'victim/..',
  '😀',
  'ｖｉｃｔｉｍ',
  'victim;rm -rf /',
  '$(id)',
];

/** Strings that must never pass as an id. */
export const badId = fc.oneof(
  fc.constantFrom(...ISSUE_IDS),
  fc.integer({ min: 64, max: 12_000 }).map((n) => 'a'.repeat(n)),
  fc.string({ unit: 'binary', minLength: 1, maxLength: 40 }).filter((s) => !/^[a-z0-9][a-z0-9_.+-]{0,62}$/.test(s)),
  fc.array(fc.integer({ min: 0, max: 255 }), { minLength: 1, maxLength: 16 }).map((b) => b.map((x) => `%${x.toString(16).padStart(2, '0')}`).join('')),
  fc.tuple(validId, fc.constantFrom('/', '\\', '\0', '%2F', '%00', '/../', '\n', '?', '#')).map(([a, b]) => `${a}${b}${a}`),
);

/** An id for a request: mostly well-formed (existing or not), often not. */
export const anyId = (existing: readonly string[]) =>
  fc.oneof({ weight: 2, arbitrary: fc.constantFrom(...existing) }, { weight: 2, arbitrary: validId }, { weight: 4, arbitrary: badId });

/** An absolute normalized path (what pathSchema accepts). */
export const goodPath = fc.array(fc.stringMatching(/^[A-Za-z0-9_.-]{1,12}$/).filter((c) => c !== '.' && c !== '..'), { minLength: 1, maxLength: 5 }).map((cs) => `/${cs.join('/')}`);

/** Paths pathSchema must refuse. */
export const badPath = fc.oneof(
  fc.constantFrom('', 'relative', '/a/../b', '/..', '/a/./b', '//etc', '/tmp\0', '/tmp\n', '/../../etc/passwd', '/a\u0007b'),
  fc.integer({ min: 4097, max: 9000 }).map((n) => `/${'a'.repeat(n)}`),
  fc.string({ unit: 'binary', maxLength: 30 }).map((s) => `/x${s}\0`),
);

/** Any JSON value, small. */
export const jsonValue = fc.jsonValue({ maxDepth: 3 });

/** Text that is not JSON (or not an object). */
export const notJson = fc.oneof(
  fc.constantFrom('{', '}', '{"a":', '[1,2', 'nul', 'tru', '"unterminated', '{"a":1,}', "{'a':1}", '\u0000', '{"a":1}garbage', 'NaN', '[]', '1', '"x"', 'null'),
  fc.string({ unit: 'binary', maxLength: 200 }).filter((s) => {
    try {
      const v: unknown = JSON.parse(s);
      return v === null || typeof v !== 'object' || Array.isArray(v);
    } catch {
      return true;
    }
  }),
);

/** How sure a generated input is: valid by the schema, surely refused, or either. */
export type Label = 'valid' | 'bad' | 'unknown';

/**
 * A body derived from a valid one: unchanged, an unknown field added (the schemas are strict),
 * a field replaced by any JSON value, or the JSON text cut short.
 */
export function mutated(valid: fc.Arbitrary<Record<string, unknown>>): fc.Arbitrary<{ text: string; label: Label }> {
  return fc.oneof(
    { weight: 4, arbitrary: valid.map((v) => ({ text: JSON.stringify(v), label: 'valid' as Label })) },
    {
      weight: 1,
      arbitrary: fc.tuple(valid, fc.string({ maxLength: 20 }), jsonValue).map(([v, k, x]) => ({ text: JSON.stringify({ ...v, [`x_${k}`]: x }), label: 'bad' as Label })),
    },
    {
      weight: 2,
      arbitrary: fc.tuple(valid, fc.nat(), jsonValue).map(([v, i, x]) => {
        const keys = Object.keys(v);
        if (keys.length === 0) return { text: JSON.stringify(x), label: 'unknown' as Label };
        return { text: JSON.stringify({ ...v, [keys[i % keys.length]!]: x }), label: 'unknown' as Label };
      }),
    },
    {
      weight: 1,
      arbitrary: fc.tuple(valid, fc.nat()).map(([v, i]) => {
        const t = JSON.stringify(v);
        const cut = i % Math.max(1, t.length);
        // Any strict prefix of an object's text is not JSON, except the empty body (read as {}).
        return { text: t.slice(0, cut), label: (cut === 0 ? 'unknown' : 'bad') as Label };
      }),
    },
  );
}
