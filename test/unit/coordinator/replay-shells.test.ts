import test from 'node:test';
import assert from 'node:assert/strict';
import { replayShells } from '../../../src/coordinator/turn-controller.js';

const text = (cwd: string) => `\x1ecwd\n${cwd}\n\x1evars\ndeclare -x PWD="${cwd}"\n`;
/** What `cksum` prints for a text, the size part right (the CRC is not checked). */
const digest = (t: string, crc = '1') => `${crc} ${Buffer.byteLength(t)}`;

test('replayShells: a script per shell that is not the image any more; refused when one cannot be', () => {
  const image = { imageShells: { main: { text: text('/'), digest: digest(text('/'), '7') } } };
  assert.deepEqual(replayShells(image, { main: digest(text('/'), '7') }, { main: text('/') }), { scripts: {} }, 'the image state: nothing to replay');
  const moved = replayShells(image, { main: digest(text('/tmp')) }, { main: text('/tmp') });
  assert.ok('scripts' in moved && moved.scripts.main!.startsWith("builtin cd -- '/tmp'\n"), JSON.stringify(moved));
  assert.deepEqual(replayShells(image, { other: digest(text('/tmp')) }, { other: text('/tmp') }), { refused: 'session other has no state in the image to start from' });
  assert.deepEqual(replayShells(image, { main: '1 5' }, { main: text('/tmp') }), { refused: 'session main: its state text and digest disagree' });
  assert.deepEqual(replayShells(image, { main: digest(text('/tmp')) }, { main: null }), { refused: 'session main has no state in the image to start from' });
  assert.deepEqual(replayShells(image, { main: digest(text('/gone')) }, { main: text('/gone') }, (p) => p !== '/gone'), { refused: 'session main: its working directory /gone is gone' });
});
