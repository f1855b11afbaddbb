/**
 * @module Read-only images used as overlay lower layers.
 *
 * Layout under CRAB_HOME/images/<name>/: `rootfs/` (this image's own layer) and `image.json`.
 * A derived image (base + Debian packages) stores only its own layer; its `lowerDirs` lists
 * its layer first, then the base's, ready for overlayfs `lowerdir=`.
 */
import fs from 'node:fs';
import path from 'node:path';
import { createHash } from 'node:crypto';
import { CrabError, notFound } from '../core/errors.js';
import { ID_PATTERN, checkId } from '../core/ids.js';
import { rootLogger } from '../core/log.js';

export const BASE_IMAGE = 'debian-bookworm-minbase';

export interface ImageInfo {
  name: string;
  /** Image this one is layered on (derived images only). */
  base: string | null;
  /** Debian packages added on top of the base (sorted). */
  packages: string[];
  source: 'debootstrap' | 'packages' | 'oci-import';
  createdAt: string;
  /** Overlay lower directories, top first. */
  lowerDirs: string[];
  sizeBytes: number;
}

/** An image's directory. Throws INVALID_NAME unless `name` is an id (`a/../../x` names no image). */
export function imageDir(imagesRoot: string, name: string): string {
  return path.join(imagesRoot, checkId('image', name));
}

/** The cache key of a derived image: the base plus the sorted, de-duplicated package list. */
export function derivedImageName(base: string, packages: readonly string[]): string {
  const sorted = normalizePackages(packages);
  if (sorted.length === 0) return base;
  const digest = createHash('sha256').update(`${base}\n${sorted.join('\n')}`).digest('hex').slice(0, 12);
  // The digest covers the whole base name: a cut base keeps names within the id pattern's 63 characters.
  return `${base.slice(0, 50)}+${digest}`;
}

export function normalizePackages(packages: readonly string[]): string[] {
  return [...new Set(packages.map((p) => p.trim()).filter(Boolean))].sort();
}

export function readImage(imagesRoot: string, name: string): ImageInfo | null {
  const file = path.join(imageDir(imagesRoot, name), 'image.json');
  let info: ImageInfo;
  try {
    info = JSON.parse(fs.readFileSync(file, 'utf8')) as ImageInfo;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw new CrabError('IMAGE_CORRUPT', 'internal', `image '${name}': ${file} is unreadable (${(err as Error).message})`, `Remove ${imageDir(imagesRoot, name)} and build or import the image again.`, {}, { cause: err });
  }
  checkLowerDirs(imagesRoot, info.lowerDirs, `image '${name}'`);
  return info;
}

/**
 * Throws IMAGE_BAD_LOWER unless every lower dir is a directory that resolves (symlinks followed)
 * inside `imagesRoot` or one of `alsoUnder` (e.g. CRAB_HOME/layers for forks): an image.json
 * naming `/root` would otherwise make a host directory a sandbox's root filesystem.
 */
export function checkLowerDirs(imagesRoot: string, lowerDirs: unknown, what: string, alsoUnder: readonly string[] = []): void {
  const roots = [imagesRoot, ...alsoUnder].map((r) => realpathOr(r) ?? path.resolve(r));
  const bad = (why: string) =>
    new CrabError('IMAGE_BAD_LOWER', 'precondition', `${what}: ${why}`, `Lower layers must lie under ${roots.join(' or ')}; remove the image (or sandbox) and build it again.`, { roots });
  if (!Array.isArray(lowerDirs) || lowerDirs.length === 0) throw bad('no lower dirs');
  for (const d of lowerDirs) {
    if (typeof d !== 'string' || !path.isAbsolute(d) || d.includes('\0')) throw bad(`lower dir ${JSON.stringify(d)?.slice(0, 200)} is not an absolute path`);
    const real = realpathOr(d);
    if (real === null) throw bad(`lower dir ${d} does not exist`);
    if (!roots.some((r) => real.startsWith(r + path.sep))) throw bad(`lower dir ${d} (${real}) lies outside Crab's images`);
  }
}

function realpathOr(p: string): string | null {
  try {
    return fs.realpathSync(p);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT' || (err as NodeJS.ErrnoException).code === 'ENOTDIR') return null;
    throw err;
  }
}

export function getImage(imagesRoot: string, name: string): ImageInfo {
  const info = readImage(imagesRoot, name);
  if (!info) {
    throw notFound(
      'IMAGE_NOT_FOUND',
      `image '${name}' does not exist`,
      name === BASE_IMAGE ? "Run 'crab setup' or 'crab image build'." : "Run 'crab image ls' to see the images.",
    );
  }
  return info;
}

export function listImages(imagesRoot: string): ImageInfo[] {
  if (!fs.existsSync(imagesRoot)) return [];
  return fs
    .readdirSync(imagesRoot)
    .filter((n) => !n.startsWith('.') && ID_PATTERN.test(n))
    .map((n) => {
      try {
        return readImage(imagesRoot, n);
      } catch (err) {
        // One broken image (unreadable, or lower dirs outside Crab's) is refused when named; the listing goes on without it.
        if (err instanceof CrabError && (err.code === 'IMAGE_CORRUPT' || err.code === 'IMAGE_BAD_LOWER')) {
          rootLogger.warn({ image: n, code: err.code, msg: err.message }, 'image left out of the listing');
          return null;
        }
        throw err;
      }
    })
    .filter((i): i is ImageInfo => i !== null)
    .sort((a, b) => a.name.localeCompare(b.name));
}

/** Publishes a finished image atomically: write image.json into the staging dir, then rename it. */
export function publishImage(imagesRoot: string, stagingDir: string, info: ImageInfo): ImageInfo {
  fs.writeFileSync(path.join(stagingDir, 'image.json'), JSON.stringify(info, null, 2));
  fs.renameSync(stagingDir, imageDir(imagesRoot, info.name));
  return info;
}
