/** @module The TCP listener's bearer token, read from a file (`--token-file`, `CRAB_TOKEN_FILE`), so it stays out of argv and the environment. */
import fs from 'node:fs';
import { invalid } from '../core/errors.js';

/**
 * The token in `file`: its content without the trailing newline. Throws CRAB_TOKEN_FILE (kind
 * 'invalid') when the file is missing, not a regular file, readable or writable by group or others
 * (like ssh with a private key: a token others can read is no secret), empty, or holds whitespace
 * or control characters inside.
 */
export function readTokenFile(file: string): string {
  const bad = (why: string, hint: string) => invalid('CRAB_TOKEN_FILE', `token file ${file} ${why}`, hint);
  let st: fs.Stats;
  try {
    st = fs.statSync(file);
  } catch (err) {
    throw bad(`cannot be read (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`, 'Create it with the token on one line, mode 0600.');
  }
  if (!st.isFile()) throw bad('is not a regular file', 'Point --token-file at a file holding the token.');
  if (st.mode & 0o077) throw bad(`has mode ${(st.mode & 0o777).toString(8)}: group or others may access it`, `chmod 600 ${file}`);
  if (st.size > 4096) throw bad('is larger than 4 KiB', 'Put only the token in it.');
  const token = fs.readFileSync(file, 'utf8').replace(/\r?\n$/, '');
  if (token.length === 0) throw bad('is empty', 'Write the token into it.');
  // eslint-disable-next-line no-control-regex
  if (/[\s\u0000-\u001f\u007f]/.test(token)) throw bad('holds whitespace or control characters', 'Put the token alone on one line.');
  return token;
}
