import test from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { derivedImageName, normalizePackages } from '../../../src/image/image-store.js';
import { gzipSync } from 'node:zlib';
import { unpackLayer } from '../../../src/image/layer-unpack.js';
import { archiveKey, archiveLinkTarget, classifyMember, entryComponents, parseDigest, pickManifest, type LayerMember } from '../../../src/image/import-policy.js';
import { makeTar, sha } from '../../support/tarballs.js';

test('derived image names are keyed by the sorted package set', () => {
  assert.equal(derivedImageName('base', []), 'base');
  assert.equal(derivedImageName('base', ['gcc', 'python3']), derivedImageName('base', ['python3', 'gcc', 'gcc']));
  assert.notEqual(derivedImageName('base', ['gcc']), derivedImageName('base', ['python3']));
  assert.deepEqual(normalizePackages([' b', 'a', 'b', '']), ['a', 'b']);
});

test('OCI whiteouts delete lower files, opaque markers empty lower directories, this layer stays', async () => {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'crab-wh-'));
  const rootfs = path.join(root, 'rootfs');
  fs.mkdirSync(rootfs);
  try {
    const l1 = await makeTar([
      { name: 'etc/', type: 'directory' },
      { name: 'etc/gone', data: 'x' },
      { name: 'etc/kept', data: 'x' },
      { name: 'etc/conf.d/', type: 'directory' },
      { name: 'etc/conf.d/a', data: 'x' },
      { name: 'etc/conf.d/sub/b', data: 'x' },
    ]);
    const l2 = await makeTar([
      { name: 'etc/.wh.gone' },
      { name: 'etc/conf.d/new', data: 'n' },
      { name: 'etc/conf.d/.wh..wh..opq' },
      { name: 'etc/.wh..wh.plnk' },
      { name: 'etc/link', type: 'link', linkname: 'etc/kept' },
      { name: 'etc/sym', type: 'symlink', linkname: '/etc/kept' },
      { name: 'bin/su', data: 'su', mode: 0o4755 },
    ]);
    for (const [i, l] of [l1, l2].entries()) {
      fs.writeFileSync(path.join(root, `l${i}`), i === 1 ? gzipSync(l) : l);
      const r = await unpackLayer(path.join(root, `l${i}`), rootfs);
      assert.equal(r.diffHex, sha('sha256', l), 'the diff digest is of the uncompressed stream');
    }
    assert.equal(fs.existsSync(path.join(rootfs, 'etc/gone')), false);
    assert.equal(fs.readFileSync(path.join(rootfs, 'etc/kept'), 'utf8'), 'x');
    assert.deepEqual(fs.readdirSync(path.join(rootfs, 'etc/conf.d')), ['new'], 'lower entries gone, this layer\'s entry kept');
    assert.equal(fs.statSync(path.join(rootfs, 'etc/link')).ino, fs.statSync(path.join(rootfs, 'etc/kept')).ino);
    assert.equal(fs.readlinkSync(path.join(rootfs, 'etc/sym')), '/etc/kept');
    assert.equal(fs.statSync(path.join(rootfs, 'bin/su')).mode & 0o7777, 0o4755, 'setuid kept');
    assert.equal(fs.statSync(path.join(rootfs, 'bin')).mode & 0o7777, 0o755, 'an implicit parent is 0755');
  } finally {
    fs.rmSync(root, { recursive: true, force: true });
  }
});

test('member names: components, and refusals of absolute names and ..', () => {
  const ok: Array<[string, string[]]> = [
    ['./', []],
    ['.', []],
    ['etc/passwd', ['etc', 'passwd']],
    ['./etc//x/', ['etc', 'x']],
    ['a/./b', ['a', 'b']],
    ['..a/b..', ['..a', 'b..']],
  ];
  for (const [name, want] of ok) assert.deepEqual(entryComponents(name), want, name);
  for (const bad of ['/etc/passwd', '../x', 'a/../../x', 'a/..', 'a/../b', 'x\0y', 'a/'.repeat(3000)]) {
    assert.throws(() => entryComponents(bad), { code: 'IMAGE_LAYER_UNSAFE' }, bad.slice(0, 40));
  }
});

test('whiteout classification', () => {
  const cases: Array<[string, LayerMember]> = [
    ['etc/passwd', { kind: 'entry', parts: ['etc', 'passwd'] }],
    ['etc/.wh.passwd', { kind: 'whiteout', dir: ['etc'], name: 'passwd' }],
    ['.wh.etc', { kind: 'whiteout', dir: [], name: 'etc' }],
    ['etc/.wh..wh..opq', { kind: 'opaque', dir: ['etc'] }],
    ['.wh..wh..opq', { kind: 'opaque', dir: [] }],
    ['etc/.wh..wh.plnk', { kind: 'ignore', why: 'AUFS metadata' }],
    ['etc/.whx', { kind: 'entry', parts: ['etc', '.whx'] }],
  ];
  for (const [name, want] of cases) assert.deepEqual(classifyMember(name), want, name);
  for (const bad of ['etc/.wh.', 'etc/.wh..', '../.wh.x', '/.wh.x']) assert.throws(() => classifyMember(bad), { code: 'IMAGE_LAYER_UNSAFE' }, bad);
});

test('digests: sha256 and sha512 only, with hex of their length', () => {
  const h256 = 'a'.repeat(64);
  assert.deepEqual(parseDigest(`sha256:${h256}`), { algorithm: 'sha256', hex: h256 });
  assert.deepEqual(parseDigest(`sha512:${'b'.repeat(128)}`), { algorithm: 'sha512', hex: 'b'.repeat(128) });
  for (const [d, code] of [
    [`md5:${'a'.repeat(32)}`, 'IMAGE_DIGEST_UNSUPPORTED'],
    [`sha1:${'a'.repeat(40)}`, 'IMAGE_DIGEST_UNSUPPORTED'],
    [`blake3:${h256}`, 'IMAGE_DIGEST_UNSUPPORTED'],
    [`sha256:${'a'.repeat(63)}`, 'IMAGE_ARCHIVE_INVALID'],
    [`sha256:${'A'.repeat(64)}`, 'IMAGE_ARCHIVE_INVALID'],
    [`sha256:../../${'a'.repeat(58)}`, 'IMAGE_ARCHIVE_INVALID'],
    [h256, 'IMAGE_ARCHIVE_INVALID'],
    [42, 'IMAGE_ARCHIVE_INVALID'],
  ] as const) {
    assert.throws(() => parseDigest(d), { code }, String(d));
  }
});

test('links in the outer archive resolve in its own namespace', () => {
  assert.equal(archiveLinkTarget('abc/layer.tar', '../def/layer.tar'), 'def/layer.tar');
  assert.equal(archiveLinkTarget('blobs/sha256/x', '/etc/shadow'), 'etc/shadow', 'absolute: from the archive root, not the host');
  assert.equal(archiveLinkTarget('a/b', '../../../etc/shadow'), null);
  assert.equal(archiveKey('./blobs/sha256/x'), 'blobs/sha256/x');
  assert.equal(archiveKey('../x'), null);
});

test('platform choice: linux/amd64 first', () => {
  const m = [
    { digest: 'arm', platform: { architecture: 'arm64', os: 'linux' } },
    { digest: 'win', platform: { architecture: 'amd64', os: 'windows' } },
    { digest: 'lin', platform: { architecture: 'amd64', os: 'linux' } },
  ];
  assert.equal(pickManifest(m)?.digest, 'lin');
  assert.equal(pickManifest(m.slice(0, 2))?.digest, 'win');
  assert.equal(pickManifest(m.slice(0, 1))?.digest, 'arm');
});
