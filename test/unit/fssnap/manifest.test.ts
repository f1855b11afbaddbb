import test from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { LocalContentStore } from '../../../src/store/local-content-store.js';
import { CrabError } from '../../../src/core/errors.js';
import {
  MANIFEST_FORMAT,
  loadManifest,
  manifestDigests,
  manifestParts,
  storeManifest,
  type Manifest,
  type ManifestEntry,
} from '../../../src/fssnap/manifest.js';
import { testPrefix } from '../../support/root.js';

const hex = (s: string): string => createHash('sha256').update(s).digest('hex');
const entry = (p: string, size = 1): ManifestEntry => ({
  path: p,
  type: 'file',
  mode: 0o644,
  uid: 0,
  gid: 0,
  mtimeNs: '1700000000000000000',
  size,
  recipe: { size, chunks: [hex(`chunk ${p}`)] },
  sha256: hex(p),
  ino: 100,
  ctimeNs: '1700000000000000000',
});
const tree = (n: number): ManifestEntry[] =>
  Array.from({ length: n }, (_, i) => entry(`src/pkg${Math.floor(i / 100)}/file${String(i).padStart(5, '0')}.ts`));
const manifest = (entries: ManifestEntry[]): Manifest => ({ format: MANIFEST_FORMAT, createdAtMs: 1, sourceDev: 2, sourceIno: 3, entries, logicalBytes: entries.length });

async function withStore(fn: (s: LocalContentStore) => Promise<void>): Promise<void> {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), testPrefix('manifest') + '-'));
  try {
    await fn(await LocalContentStore.open(dir));
  } finally {
    await fs.rm(dir, { recursive: true, force: true });
  }
}

test('manifestParts: bounded parts whose boundaries an insert does not move', () => {
  const entries = tree(5000);
  const parts = manifestParts(entries);
  assert.deepEqual(parts.flat(), entries, 'the parts concatenate to the entries');
  assert.ok(parts.every((p, i) => p.length <= 512 && (p.length >= 16 || i === parts.length - 1)));
  const mean = entries.length / parts.length;
  assert.ok(mean > 40 && mean < 160, `mean part ${mean}`);
  const inserted = [...entries.slice(0, 2500), entry('src/pkg24/file02500-new.ts'), ...entries.slice(2500)];
  const after = manifestParts(inserted);
  const key = (p: ManifestEntry[]): string => p.map((e) => e.path).join('\n');
  const before = new Set(parts.map(key));
  const changed = after.filter((p) => !before.has(key(p)));
  assert.ok(changed.length <= 2, `parts changed by one insert: ${changed.length}`);
});

test('storeManifest/loadManifest: round trip, GC sees the parts, one changed file writes about one part', () =>
  withStore(async (s) => {
    const m = manifest(tree(10_000));
    const first = await storeManifest(s, m);
    const back = await loadManifest(s, first.digest);
    assert.deepEqual(back.entries, m.entries);
    assert.equal(back.logicalBytes, m.logicalBytes);
    assert.ok(back.parts && back.parts.length > 50);
    for (const d of back.parts!) assert.ok(manifestDigests(back).includes(d), 'GC keeps every part');
    const again = await storeManifest(s, manifest(m.entries));
    assert.equal(again.digest, first.digest);
    assert.equal(again.newBytes, 0);
    const edited = m.entries.map((e, i) => (i === 4321 ? { ...e, size: 2, mtimeNs: '1700000000000000001' } : e));
    const second = await storeManifest(s, manifest(edited));
    assert.ok(second.newBytes < first.newBytes / 20, `edit: ${second.newBytes} vs whole ${first.newBytes}`);
    assert.deepEqual((await loadManifest(s, second.digest)).entries, edited);
  }));

test('loadManifest reads a crab-manifest/1 document and refuses anything else', () =>
  withStore(async (s) => {
    const m = manifest(tree(10));
    const v1 = await s.putJson(m);
    assert.deepEqual((await loadManifest(s, v1.digest)).entries, m.entries);
    for (const bad of [{ format: 'nope' }, { format: 'crab-manifest/2', parts: 'x' }, { format: 'crab-manifest/2', parts: [], entryCount: 3 }]) {
      const r = await s.putJson(bad);
      await assert.rejects(loadManifest(s, r.digest), (e: unknown) => e instanceof CrabError && e.code === 'FSSNAP_BAD_MANIFEST', JSON.stringify(bad));
    }
  }));
