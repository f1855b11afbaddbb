import test, { after, describe } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execFileSync } from 'node:child_process';
import { rootOnly, testPrefix } from '../../support/root.js';
import { paths } from '../../support/sandboxes.js';
import { ensureImage, importImage } from '../../../src/image/image-builder.js';
import { BASE_IMAGE, derivedImageName } from '../../../src/image/image-store.js';

describe('images (real debootstrap/apt)', rootOnly(), () => {
  const prefix = testPrefix('img');
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), `${prefix}-`));
  after(() => {
    fs.rmSync(tmp, { recursive: true, force: true });
    fs.rmSync(path.join(paths.images, `${prefix}-oci`), { recursive: true, force: true });
  });

  test('base image is cached: a second ensure is instant', async () => {
    await ensureImage(paths.images, BASE_IMAGE, []);
    const t0 = performance.now();
    const info = await ensureImage(paths.images, BASE_IMAGE, []);
    assert.ok(performance.now() - t0 < 50);
    assert.ok(fs.existsSync(path.join(info.lowerDirs[0]!, 'bin/bash')));
  });

  test('derived image with packages is a layer over the base, keyed by the package set', async () => {
    const info = await ensureImage(paths.images, BASE_IMAGE, ['python3']);
    assert.equal(info.name, derivedImageName(BASE_IMAGE, ['python3']));
    assert.equal(info.lowerDirs.length, 2);
    assert.ok(fs.existsSync(path.join(info.lowerDirs[0]!, 'usr/bin/python3')));
    assert.ok(!fs.existsSync(path.join(info.lowerDirs[0]!, 'bin/bash')) || fs.lstatSync(path.join(info.lowerDirs[0]!, 'bin')).isSymbolicLink());
  });

  test('a package that does not exist is a clear error', async () => {
    await assert.rejects(ensureImage(paths.images, BASE_IMAGE, ['no-such-package-crab']), (err: Error & { code?: string }) => {
      assert.equal(err.code, 'INVALID_PACKAGE');
      assert.match(err.message, /no-such-package-crab/);
      return true;
    });
    await assert.rejects(ensureImage(paths.images, BASE_IMAGE, ['Bad;Name']), { code: 'INVALID_PACKAGE' });
  });

  test('imports a docker-save tarball with whiteouts', async () => {
    const l1 = path.join(tmp, 'l1');
    const l2 = path.join(tmp, 'l2');
    fs.mkdirSync(path.join(l1, 'etc/dir'), { recursive: true });
    fs.writeFileSync(path.join(l1, 'etc/a'), 'a');
    fs.writeFileSync(path.join(l1, 'etc/b'), 'b');
    fs.writeFileSync(path.join(l1, 'etc/dir/old'), 'old');
    fs.mkdirSync(path.join(l2, 'etc/dir'), { recursive: true });
    fs.writeFileSync(path.join(l2, 'etc/.wh.b'), '');
    fs.writeFileSync(path.join(l2, 'etc/dir/.wh..wh..opq'), '');
    fs.writeFileSync(path.join(l2, 'etc/dir/new'), 'new');
    const arch = path.join(tmp, 'arch');
    fs.mkdirSync(arch);
    execFileSync('tar', ['-cf', path.join(arch, 'layer1.tar'), '-C', l1, '.']);
    execFileSync('tar', ['-cf', path.join(arch, 'layer2.tar'), '-C', l2, '.']);
    fs.writeFileSync(path.join(arch, 'manifest.json'), JSON.stringify([{ Config: 'c.json', RepoTags: ['x:1'], Layers: ['layer1.tar', 'layer2.tar'] }]));
    const tarball = path.join(tmp, 'image.tar');
    execFileSync('tar', ['-cf', tarball, '-C', arch, '.']);
    const info = await importImage(paths.images, `${prefix}-oci`, tarball);
    const root = info.lowerDirs[0]!;
    assert.equal(fs.readFileSync(path.join(root, 'etc/a'), 'utf8'), 'a');
    assert.equal(fs.existsSync(path.join(root, 'etc/b')), false);
    assert.deepEqual(fs.readdirSync(path.join(root, 'etc/dir')), ['new']);
    await assert.rejects(importImage(paths.images, `${prefix}-bad`, path.join(tmp, 'missing.tar')), { code: 'IMAGE_ARCHIVE_NOT_FOUND' });
  });
});
