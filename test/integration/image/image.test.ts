import test, { after, describe } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execFileSync } from 'node:child_process';
import { rootOnly, testPrefix } from '../../support/root.js';
import { manager, paths, removeByPrefix } from '../../support/sandboxes.js';
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

  test('imports a docker-save tarball of the real base image (GNU tar layers, whiteouts) and runs a sandbox on it', async () => {
    const base = (await ensureImage(paths.images, BASE_IMAGE, [])).lowerDirs[0]!;
    const arch = path.join(tmp, 'arch');
    fs.mkdirSync(path.join(arch, 'l1'), { recursive: true });
    fs.mkdirSync(path.join(arch, 'l2'), { recursive: true });
    execFileSync('tar', ['--numeric-owner', '-C', base, '-cf', path.join(arch, 'l1/layer.tar'), '.']);
    const l2 = path.join(tmp, 'l2');
    fs.mkdirSync(path.join(l2, 'etc/apt/apt.conf.d'), { recursive: true });
    fs.writeFileSync(path.join(l2, 'etc/.wh.debian_version'), '');
    fs.writeFileSync(path.join(l2, 'etc/apt/apt.conf.d/.wh..wh..opq'), '');
    fs.writeFileSync(path.join(l2, 'etc/apt/apt.conf.d/99crab'), 'APT::Crab "1";\n');
    fs.writeFileSync(path.join(l2, 'etc/crab-imported'), 'yes\n');
    execFileSync('tar', ['--numeric-owner', '-C', l2, '-cf', path.join(arch, 'l2/layer.tar'), '.']);
    const digest = (f: string) => `sha256:${execFileSync('sha256sum', [f]).toString().split(' ')[0]}`;
    const config = JSON.stringify({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: ['l1', 'l2'].map((l) => digest(path.join(arch, l, 'layer.tar'))) } });
    fs.writeFileSync(path.join(arch, 'config.json'), config);
    const configName = `${digest(path.join(arch, 'config.json')).slice(7)}.json`;
    fs.renameSync(path.join(arch, 'config.json'), path.join(arch, configName));
    fs.writeFileSync(path.join(arch, 'manifest.json'), JSON.stringify([{ Config: configName, RepoTags: ['x:1'], Layers: ['l1/layer.tar', 'l2/layer.tar'] }]));
    const tarball = path.join(tmp, 'image.tar');
    execFileSync('tar', ['-cf', tarball, '-C', arch, '.']);
    fs.rmSync(arch, { recursive: true, force: true });
    const t0 = performance.now();
    const info = await importImage(paths.images, `${prefix}-oci`, tarball);
    console.log(`# imported ${(fs.statSync(tarball).size / 2 ** 20).toFixed(0)} MiB docker-save archive in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
    const root = info.lowerDirs[0]!;
    assert.equal(fs.existsSync(path.join(root, 'etc/debian_version')), false);
    assert.deepEqual(fs.readdirSync(path.join(root, 'etc/apt/apt.conf.d')), ['99crab']);
    assert.equal(fs.statSync(path.join(root, 'usr/bin/su')).mode & 0o7777, fs.statSync(path.join(base, 'usr/bin/su')).mode & 0o7777, 'setuid bits kept');
    assert.equal(fs.readlinkSync(path.join(root, 'bin')), fs.readlinkSync(path.join(base, 'bin')));

    const m = manager();
    const id = `${prefix}-sb`;
    try {
      await m.create({ name: id, image: `${prefix}-oci` });
      const r = await m.exec(id, 'cat /etc/crab-imported; ls /etc/debian_version 2>&1 | wc -l; bash --version | head -1');
      assert.equal(r.exitCode, 0, r.stderr);
      assert.match(r.stdout, /^yes\n1\nGNU bash/);
    } finally {
      await removeByPrefix(m, prefix);
    }
    await assert.rejects(importImage(paths.images, `${prefix}-bad`, path.join(tmp, 'missing.tar')), { code: 'IMAGE_ARCHIVE_NOT_FOUND' });
  });
});
