/**
 * @module Unpacks a `docker save` tarball or an OCI image layout tarball into one rootfs,
 * applying layers in order with their whiteouts (`.wh.NAME` deletes NAME, `.wh..wh..opq`
 * empties the directory before the layer's own entries land).
 */
import fs from 'node:fs';
import path from 'node:path';
import { run } from '../core/run.js';
import { invalid } from '../core/errors.js';

const WHITEOUT = '.wh.';
const OPAQUE = '.wh..wh..opq';

/** Returns the layer tar paths, bottom first, of an unpacked image archive. */
export function findLayers(unpacked: string): string[] {
  const dockerManifest = path.join(unpacked, 'manifest.json');
  if (fs.existsSync(dockerManifest)) {
    const m = JSON.parse(fs.readFileSync(dockerManifest, 'utf8')) as Array<{ Layers: string[] }>;
    if (!Array.isArray(m) || !m[0]?.Layers) throw invalid('IMAGE_ARCHIVE_INVALID', 'manifest.json has no Layers list');
    return m[0].Layers.map((l) => safeJoin(unpacked, l));
  }
  const index = path.join(unpacked, 'index.json');
  if (fs.existsSync(index)) {
    let desc = (JSON.parse(fs.readFileSync(index, 'utf8')) as { manifests?: Array<{ digest: string; mediaType?: string }> }).manifests?.[0];
    for (let depth = 0; desc && depth < 4; depth++) {
      const doc = JSON.parse(fs.readFileSync(blobPath(unpacked, desc.digest), 'utf8')) as {
        manifests?: Array<{ digest: string; platform?: { architecture?: string } }>;
        layers?: Array<{ digest: string }>;
      };
      if (doc.layers) return doc.layers.map((l) => blobPath(unpacked, l.digest));
      // An index of manifests: prefer amd64.
      desc = doc.manifests?.find((x) => x.platform?.architecture === 'amd64') ?? doc.manifests?.[0];
    }
  }
  throw invalid(
    'IMAGE_ARCHIVE_INVALID',
    'the archive is neither a docker-save tarball (manifest.json) nor an OCI image layout (index.json)',
    'Create it with `docker save IMAGE -o file.tar` or `skopeo copy … oci-archive:file.tar`.',
  );
}

function blobPath(root: string, digest: string): string {
  const [alg, hex] = digest.split(':');
  if (!alg || !hex || !/^[a-f0-9]+$/.test(hex)) throw invalid('IMAGE_ARCHIVE_INVALID', `bad digest '${digest}'`);
  return path.join(root, 'blobs', alg, hex);
}

function safeJoin(root: string, rel: string): string {
  const p = path.resolve(root, rel);
  if (!p.startsWith(path.resolve(root) + path.sep)) throw invalid('IMAGE_ARCHIVE_INVALID', `layer path escapes the archive: ${rel}`);
  return p;
}

/** Applies one layer's whiteouts to `rootfs`; returns the tar members to exclude when extracting. */
export function applyWhiteouts(rootfs: string, members: string[]): string[] {
  const excluded: string[] = [];
  for (const raw of members) {
    const member = raw.replace(/^\.\//, '').replace(/\/$/, '');
    const base = path.posix.basename(member);
    if (!base.startsWith(WHITEOUT)) continue;
    excluded.push(raw);
    const dir = path.posix.dirname(member);
    if (base === OPAQUE) {
      const target = safeJoin(rootfs, dir === '.' ? '' : dir + '/x').replace(/\/x$/, '');
      if (fs.existsSync(target)) for (const n of fs.readdirSync(target)) fs.rmSync(path.join(target, n), { recursive: true, force: true });
    } else {
      fs.rmSync(safeJoin(rootfs, path.posix.join(dir, base.slice(WHITEOUT.length))), { recursive: true, force: true });
    }
  }
  return excluded;
}

export async function importOciArchive(archive: string, rootfs: string, unpackDir: string, progress: (m: string) => void): Promise<void> {
  if (!fs.existsSync(archive)) throw invalid('IMAGE_ARCHIVE_NOT_FOUND', `no such file: ${archive}`);
  fs.mkdirSync(unpackDir, { recursive: true });
  await run('tar', ['-xf', archive, '-C', unpackDir], { errorCode: 'IMAGE_ARCHIVE_INVALID' });
  const layers = findLayers(unpackDir);
  for (const [i, layer] of layers.entries()) {
    progress(`layer ${i + 1}/${layers.length}`);
    const members = (await run('tar', ['-tf', layer], { errorCode: 'IMAGE_ARCHIVE_INVALID' })).stdout.split('\n').filter(Boolean);
    const excluded = applyWhiteouts(rootfs, members);
    const excludeFile = path.join(unpackDir, `exclude-${i}`);
    fs.writeFileSync(excludeFile, excluded.join('\n') + '\n');
    await run('tar', ['-xf', layer, '-C', rootfs, '--numeric-owner', '--same-owner', '-p', '--xattrs', '-X', excludeFile], {
      errorCode: 'IMAGE_ARCHIVE_INVALID',
    });
  }
}
