import test from 'node:test';
import assert from 'node:assert/strict';
import { ID_PATTERN, checkId, isId, quoteForMessage } from '../../../src/core/ids.js';
import { derivedImageName } from '../../../src/image/image-store.js';
import { CrabError } from '../../../src/core/errors.js';

test('one id pattern: what is an id and what is not', () => {
  const rows: Array<[unknown, boolean, string]> = [
    ['sb-0123abcd4567', true, 'a generated sandbox id'],
    ['ck-0123abcd4567', true, 'a generated checkpoint id'],
    ['debian-bookworm-minbase+93aae7cd8681', true, 'a derived image name'],
    ['main', true, 'a session name'],
    ['a'.repeat(63), true, '63 characters'],
    ['a'.repeat(64), false, '64 characters'],
    ['a'.repeat(10_000), false, 'a 10 kB id'],
    ['', false, 'empty'],
    ['.', false, '.'],
    ['..', false, '..'],
    ['../../etc/passwd', false, 'a traversal'],
    ['a/../b', false, 'a slash'],
    ['a\0b', false, 'a NUL'],
    ['a\nb', false, 'a newline'],
    ['Abc', false, 'upper case'],
    ['-abc', false, 'a dash first'],
    ['.hidden', false, 'a dot first'],
    ['a b', false, 'a space'],
    ['a%2Fb', false, 'a percent-encoding left undecoded'],
    ['ａ', false, 'a full-width letter'],
    [42, false, 'a number'],
    [null, false, 'null'],
  ];
  for (const [v, ok, why] of rows) {
    assert.equal(isId(v), ok, why);
    if (ok) assert.equal(checkId('sandbox', v), v, why);
    else assert.throws(() => checkId('sandbox', v), (e: unknown) => e instanceof CrabError && e.code === 'INVALID_NAME' && e.kind === 'invalid', why);
  }
});

test('an invalid id is quoted short and without control characters', () => {
  const e = (() => {
    try {
      checkId('checkpoint', `${'x'.repeat(9000)}\0`);
    } catch (err) {
      return err as CrabError;
    }
    throw new Error('accepted');
  })();
  assert.ok(e.message.length < 200, e.message);
  assert.equal(quoteForMessage('a\0b\x1b[31m'), 'a\\x00b\\x1b[31m');
});

test('derived image names stay ids, even from a 63-character base', () => {
  for (const base of ['debian-bookworm-minbase', 'b'.repeat(63)]) {
    const n = derivedImageName(base, ['python3', 'gcc']);
    assert.match(n, ID_PATTERN, n);
  }
  assert.notEqual(derivedImageName(`${'b'.repeat(60)}1`, ['x1']), derivedImageName(`${'b'.repeat(60)}2`, ['x1']), 'the digest covers the whole base');
});
