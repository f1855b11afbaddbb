import test from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { derivedImageName, normalizePackages } from '../../../src/image/image-store.js';
import { applyWhiteouts } from '../../../src/image/oci-import.js';

test('derived image names are keyed by the sorted package set', () => {
  assert.equal(derivedImageName('base', []), 'base');
  assert.equal(derivedImageName('base', ['gcc', 'python3']), derivedImageName('base', ['python3', 'gcc', 'gcc']));
  assert.notEqual(derivedImageName('base', ['gcc']), derivedImageName('base', ['python3']));
  assert.deepEqual(normalizePackages([' b', 'a', 'b', '']), ['a', 'b']);
});

test('OCI whiteouts delete files and opaque markers empty directories', () => {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'crab-wh-'));
  try {
    fs.mkdirSync(path.join(root, 'etc/conf.d'), { recursive: true });
    fs.writeFileSync(path.join(root, 'etc/gone'), 'x');
    fs.writeFileSync(path.join(root, 'etc/kept'), 'x');
    fs.writeFileSync(path.join(root, 'etc/conf.d/a'), 'x');
    const excluded = applyWhiteouts(root, ['etc/', 'etc/.wh.gone', 'etc/conf.d/.wh..wh..opq', 'etc/new']);
    assert.deepEqual(excluded, ['etc/.wh.gone', 'etc/conf.d/.wh..wh..opq']);
    assert.equal(fs.existsSync(path.join(root, 'etc/gone')), false);
    assert.equal(fs.existsSync(path.join(root, 'etc/kept')), true);
    assert.deepEqual(fs.readdirSync(path.join(root, 'etc/conf.d')), []);
    assert.throws(() => applyWhiteouts(root, ['../../.wh.passwd']), { code: 'IMAGE_ARCHIVE_INVALID' });
  } finally {
    fs.rmSync(root, { recursive: true, force: true });
  }
});
