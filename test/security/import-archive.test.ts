/**
 * Crafted outer archives and digests against `crab image import`: members named out of the
 * archive, links from the archive to host files, unknown or wrong digests. The host canary
 * directory must be untouched, and a host file must never be imported as a layer.
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
import { dockerSave, makeTar, ociLayout, sha } from '../support/tarballs.js';

const prefix = testPrefix('impa');
const images = fs.mkdtempSync(path.join(os.tmpdir(), `${prefix}-images-`));
const UP = '../'.repeat(32);
let n = 0;

describe('image import: crafted archives and digests', async () => {
  /** A valid layer, planted on the host: an archive that links to it must not import it. */
  const hostLayer = await makeTar([{ name: 'stolen', data: 'read from the host' }]);
  const canary = makeCanary(prefix);
  const hostDir = fs.mkdtempSync(path.join(os.tmpdir(), `${prefix}-host-`));
  const hostLayerPath = path.join(hostDir, 'layer.tar');
  fs.writeFileSync(hostLayerPath, hostLayer);
  const layer = await makeTar([{ name: 'etc/', type: 'directory' }, { name: 'etc/hostname', data: 'crab\n' }]);
  after(() => {
    canary.remove();
    fs.rmSync(hostDir, { recursive: true, force: true });
    fs.rmSync(images, { recursive: true, force: true });
  });

  async function run(archive: Buffer): Promise<{ name: string; result: Promise<{ lowerDirs: string[] }> }> {
    const name = `a${n++}`;
    const file = path.join(images, `${name}.tar`);
    fs.writeFileSync(file, archive);
    return { name, result: importImage(images, name, file) };
  }

  async function refused(archive: Buffer, code: string): Promise<void> {
    const { name, result } = await run(archive);
    await assert.rejects(result, (err: Error & { code?: string }) => {
      assert.equal(err.code, code, err.message);
      return true;
    });
    assert.equal(readImage(images, name), null);
    assert.deepEqual(fs.readdirSync(images).filter((f) => f.startsWith('.staging-')), [], 'no staging left');
    canary.assertUntouched('host canary directory untouched');
  }

  async function imported(archive: Buffer): Promise<string> {
    const { result } = await run(archive);
    const root = (await result).lowerDirs[0]!;
    canary.assertUntouched('host canary directory untouched');
    return root;
  }

  test("outer members named with '..' or absolutely are never written to the host", async () => {
    const root = await imported(
      await dockerSave([layer], {
        extra: [
          { name: UP + path.join(canary.dir, 'pwned').slice(1), data: 'x' },
          { name: path.join(canary.dir, 'pwned2'), data: 'x' },
          { name: 'x', type: 'symlink', linkname: canary.dir },
          { name: 'x/pwned3', data: 'x' },
        ],
      }),
    );
    assert.equal(fs.readFileSync(path.join(root, 'etc/hostname'), 'utf8'), 'crab\n');
  });

  for (const [what, member] of [
    ['an absolute symlink', { type: 'symlink', linkname: hostLayerPath }],
    ["a '..' symlink", { type: 'symlink', linkname: UP + hostLayerPath.slice(1) }],
    ['a hard link', { type: 'link', linkname: hostLayerPath }],
  ] as const) {
    test(`a layer that is ${what} to a host file is not imported`, async () => {
      const name = 'abc/layer.tar';
      const config = JSON.stringify({ rootfs: { type: 'layers', diff_ids: [`sha256:${sha('sha256', hostLayer)}`] } });
      const configName = `${sha('sha256', config)}.json`;
      await refused(
        await makeTar([
          { name, ...member },
          { name: configName, data: config },
          { name: 'manifest.json', data: JSON.stringify([{ Config: configName, Layers: [name] }]) },
        ]),
        'IMAGE_ARCHIVE_INVALID',
      );
    });
  }

  test('a layer linked to another layer inside the archive is followed (docker save does this)', async () => {
    const config = JSON.stringify({ rootfs: { type: 'layers', diff_ids: [`sha256:${sha('sha256', layer)}`, `sha256:${sha('sha256', layer)}`] } });
    const configName = `${sha('sha256', config)}.json`;
    const root = await imported(
      await makeTar([
        { name: 'a/layer.tar', data: layer },
        { name: 'b/layer.tar', type: 'symlink', linkname: '../a/layer.tar' },
        { name: configName, data: config },
        { name: 'manifest.json', data: JSON.stringify([{ Config: configName, Layers: ['a/layer.tar', 'b/layer.tar'] }]) },
      ]),
    );
    assert.equal(fs.readFileSync(path.join(root, 'etc/hostname'), 'utf8'), 'crab\n');
  });

  test('an unknown digest algorithm is refused', async () =>
    refused(await ociLayout([layer], { layerDigest: () => `md5:${'0'.repeat(32)}` }), 'IMAGE_DIGEST_UNSUPPORTED'));

  test('a layer blob whose bytes do not match its digest is refused', async () => refused(await ociLayout([layer, await makeTar([{ name: 'two', data: '2' }])], { corruptLayer: 1 }), 'IMAGE_DIGEST_MISMATCH'));

  test('a layer whose uncompressed bytes do not match the config diff_id is refused, and what it applied is removed', async () =>
    refused(await dockerSave([layer, layer], { diffIds: [`sha256:${sha('sha256', layer)}`, `sha256:${'0'.repeat(64)}`] }), 'IMAGE_DIGEST_MISMATCH'));

  test('a layer with no digest at all is refused', async () =>
    refused(
      await makeTar([
        { name: 'l/layer.tar', data: layer },
        { name: 'manifest.json', data: JSON.stringify([{ Config: 'missing.json', Layers: ['l/layer.tar'] }]) },
      ]),
      'IMAGE_DIGEST_MISSING',
    ));

  test('an OCI layout with sha512 digests and gzip layers imports', async () => {
    const root = await imported(await ociLayout([layer, await makeTar([{ name: 'etc/.wh.hostname' }, { name: 'etc/motd', data: 'hi' }])], { alg: 'sha512' }));
    assert.deepEqual(fs.readdirSync(path.join(root, 'etc')), ['motd']);
  });

  test('malformed manifests are clear errors', async () => {
    await refused(await makeTar([{ name: 'manifest.json', data: '{not json' }]), 'IMAGE_ARCHIVE_INVALID');
    await refused(await makeTar([{ name: 'manifest.json', data: '[{"Layers": [1]}]' }]), 'IMAGE_ARCHIVE_INVALID');
    await refused(await makeTar([{ name: 'index.json', data: 'null' }]), 'IMAGE_ARCHIVE_INVALID');
    await refused(await makeTar([{ name: 'index.json', data: '{"manifests": [{"digest": "sha256:../../etc"}]}' }]), 'IMAGE_ARCHIVE_INVALID');
    await refused(Buffer.from('this is not a tar archive, just some bytes'.repeat(20)), 'IMAGE_ARCHIVE_INVALID');
  });
});
