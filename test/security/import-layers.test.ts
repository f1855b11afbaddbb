/**
 * Crafted image layers against `crab image import`: each tries to write, delete, chmod or link a
 * host file outside the image root. Each asserts the host canary directory is exactly as before,
 * and that the import either refused (nothing published, no staging left) or kept everything inside.
 */
import test, { after, describe } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { importImage } from '../../src/image/image-builder.js';
import { readImage } from '../../src/image/image-store.js';
import { makeCanary } from '../support/canary.js';
import { testPrefix } from '../support/root.js';
import { dockerSave, makeTar, type Member } from '../support/tarballs.js';

const prefix = testPrefix('imp');
const canary = makeCanary(prefix);
const images = fs.mkdtempSync(path.join(os.tmpdir(), `${prefix}-images-`));
/** From anywhere in the staging rootfs up to the host's root (extra '..' stay at '/'). */
const UP = '../'.repeat(32);
const hostRel = (p: string) => UP + p.slice(1);
let n = 0;

async function attempt(layers: Member[][]): Promise<{ name: string; result: Promise<unknown> }> {
  const name = `evil${n++}`;
  const archive = path.join(images, `${name}.tar`);
  fs.writeFileSync(archive, await dockerSave(await Promise.all(layers.map((l) => makeTar(l)))));
  return { name, result: importImage(images, name, archive) };
}

/** The import refused with `code`, published nothing, left no staging, and the host canary is untouched. */
async function refused(layers: Member[][], code: string): Promise<void> {
  const { name, result } = await attempt(layers);
  await assert.rejects(result, (err: Error & { code?: string }) => {
    assert.equal(err.code, code, err.message);
    return true;
  });
  assert.equal(readImage(images, name), null, 'nothing published');
  assert.deepEqual(fs.readdirSync(images).filter((f) => f.startsWith('.staging-')), [], 'no staging left');
  canary.assertUntouched('host canary directory untouched');
}

describe('image import: crafted layers cannot reach the host', () => {
  after(() => {
    canary.remove();
    fs.rmSync(images, { recursive: true, force: true });
  });

  test('a symlink in one layer does not redirect the next layer\'s files', () =>
    refused([[{ name: 'evil', type: 'symlink', linkname: canary.dir }], [{ name: 'evil/pwned', data: 'x' }]], 'IMAGE_LAYER_UNSAFE'));

  test('a symlink and a file through it in the same layer', () =>
    refused([[{ name: 'evil', type: 'symlink', linkname: canary.dir }, { name: `evil/${path.basename(canary.file)}`, data: 'overwritten' }]], 'IMAGE_LAYER_UNSAFE'));

  test('a relative symlink chain out of the root', () =>
    refused([[{ name: 'a', type: 'symlink', linkname: 'b' }, { name: 'b', type: 'symlink', linkname: hostRel(canary.dir) }, { name: 'a/pwned', data: 'x' }]], 'IMAGE_LAYER_UNSAFE'));

  test('a directory replaced by a symlink in a later layer', () =>
    refused(
      [[{ name: 'a/', type: 'directory' }, { name: 'a/f', data: 'f' }], [{ name: 'a', type: 'symlink', linkname: canary.dir }], [{ name: 'a/pwned', data: 'x' }]],
      'IMAGE_LAYER_UNSAFE',
    ));

  test("'..' in a member name", () => refused([[{ name: hostRel(path.join(canary.dir, 'pwned')), data: 'x' }]], 'IMAGE_LAYER_UNSAFE'));

  test("'..' that would stay inside is refused too", () => refused([[{ name: 'a/../b', data: 'x' }]], 'IMAGE_LAYER_UNSAFE'));

  test('an absolute member name', () => refused([[{ name: path.join(canary.dir, 'pwned'), data: 'x' }]], 'IMAGE_LAYER_UNSAFE'));

  test('a hard link to an absolute host path', () => refused([[{ name: 'stolen', type: 'link', linkname: canary.file }]], 'IMAGE_LAYER_UNSAFE'));

  test("a hard link with '..' to a host file", () => refused([[{ name: 'stolen', type: 'link', linkname: hostRel(canary.file) }]], 'IMAGE_LAYER_UNSAFE'));

  test('a hard link whose target goes through a symlink', () =>
    refused([[{ name: 'd', type: 'symlink', linkname: canary.dir }], [{ name: 'stolen', type: 'link', linkname: `d/${path.basename(canary.file)}` }]], 'IMAGE_LAYER_UNSAFE'));

  test('a hard link to a directory', () => refused([[{ name: 'dir/', type: 'directory' }, { name: 'l', type: 'link', linkname: 'dir' }]], 'IMAGE_LAYER_UNSAFE'));

  test('a whiteout through a symlink does not delete a host file', () =>
    refused([[{ name: 'etc', type: 'symlink', linkname: canary.dir }], [{ name: `etc/.wh.${path.basename(canary.file)}` }]], 'IMAGE_LAYER_UNSAFE'));

  test('an opaque whiteout through a symlink does not empty a host directory', () =>
    refused([[{ name: 'd', type: 'symlink', linkname: canary.dir }], [{ name: 'd/.wh..wh..opq' }]], 'IMAGE_LAYER_UNSAFE'));

  test("a whiteout with '..'", () => refused([[{ name: 'x', data: 'x' }], [{ name: hostRel(path.join(canary.dir, `.wh.${path.basename(canary.file)}`)) }]], 'IMAGE_LAYER_UNSAFE'));

  test('a whiteout naming ..', () => refused([[{ name: 'x', data: 'x' }], [{ name: 'x/.wh..' }]], 'IMAGE_LAYER_UNSAFE'));

  test('a file over a symlink to a host file replaces the link, never writes through it', async () => {
    const { name, result } = await attempt([[{ name: 'etc/x', type: 'symlink', linkname: canary.file }], [{ name: 'etc/x', data: 'inside', mode: 0o666 }]]);
    const info = (await result) as { lowerDirs: string[] };
    const x = path.join(info.lowerDirs[0]!, 'etc/x');
    assert.ok(fs.lstatSync(x).isFile());
    assert.equal(fs.readFileSync(x, 'utf8'), 'inside');
    canary.assertUntouched('import');
    fs.rmSync(path.join(images, name), { recursive: true, force: true });
  });

  test('a directory entry over a symlink to a host directory does not chmod or chown the host directory', async () => {
    const dirBefore = fs.statSync(canary.dir);
    const { name, result } = await attempt([[{ name: 'd', type: 'symlink', linkname: canary.dir }], [{ name: 'd/', type: 'directory', mode: 0o777, uid: 4242, gid: 4242 }, { name: 'd/f', data: 'f' }]]);
    const info = (await result) as { lowerDirs: string[] };
    const d = path.join(info.lowerDirs[0]!, 'd');
    assert.ok(fs.lstatSync(d).isDirectory());
    assert.deepEqual(fs.readdirSync(d), ['f']);
    canary.assertUntouched('import');
    const dirAfter = fs.statSync(canary.dir);
    assert.deepEqual([dirAfter.mode, dirAfter.uid, dirAfter.gid], [dirBefore.mode, dirBefore.uid, dirBefore.gid], 'the host directory keeps its mode and owner');
    fs.rmSync(path.join(images, name), { recursive: true, force: true });
  });

  test('a hard link replacing a symlink to a host file links inside the image', async () => {
    const { name, result } = await attempt([[{ name: 'real', data: 'r' }, { name: 'x', type: 'symlink', linkname: canary.file }], [{ name: 'x', type: 'link', linkname: 'real' }]]);
    const info = (await result) as { lowerDirs: string[] };
    assert.equal(fs.statSync(path.join(info.lowerDirs[0]!, 'x')).ino, fs.statSync(path.join(info.lowerDirs[0]!, 'real')).ino);
    canary.assertUntouched('import');
    fs.rmSync(path.join(images, name), { recursive: true, force: true });
  });

  test('device nodes are skipped, never created', async () => {
    const { name, result } = await attempt([
      [
        { name: 'dev/', type: 'directory' },
        { name: 'dev/sda', type: 'block-device', devmajor: 8, devminor: 0, mode: 0o666 },
        { name: 'dev/mem', type: 'character-device', devmajor: 1, devminor: 1, mode: 0o666 },
        { name: 'ok', data: 'ok' },
      ],
    ]);
    const info = (await result) as { lowerDirs: string[] };
    assert.deepEqual(fs.readdirSync(path.join(info.lowerDirs[0]!, 'dev')), []);
    assert.equal(fs.readFileSync(path.join(info.lowerDirs[0]!, 'ok'), 'utf8'), 'ok');
    canary.assertUntouched('import');
    fs.rmSync(path.join(images, name), { recursive: true, force: true });
  });
});
