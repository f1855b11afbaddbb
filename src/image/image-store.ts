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
import { notFound } from '../core/errors.js';

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

export function imageDir(imagesRoot: string, name: string): string {
  return path.join(imagesRoot, name);
}

/** The cache key of a derived image: the base plus the sorted, de-duplicated package list. */
export function derivedImageName(base: string, packages: readonly string[]): string {
  const sorted = normalizePackages(packages);
  if (sorted.length === 0) return base;
  const digest = createHash('sha256').update(`${base}\n${sorted.join('\n')}`).digest('hex').slice(0, 12);
  return `${base}+${digest}`;
}

export function normalizePackages(packages: readonly string[]): string[] {
  return [...new Set(packages.map((p) => p.trim()).filter(Boolean))].sort();
}

export function readImage(imagesRoot: string, name: string): ImageInfo | null {
  try {
    return JSON.parse(fs.readFileSync(path.join(imageDir(imagesRoot, name), 'image.json'), 'utf8')) as ImageInfo;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
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
    .filter((n) => !n.startsWith('.'))
    .map((n) => readImage(imagesRoot, n))
    .filter((i): i is ImageInfo => i !== null)
    .sort((a, b) => a.name.localeCompare(b.name));
}

/** Publishes a finished image atomically: write image.json into the staging dir, then rename it. */
export function publishImage(imagesRoot: string, stagingDir: string, info: ImageInfo): ImageInfo {
  fs.writeFileSync(path.join(stagingDir, 'image.json'), JSON.stringify(info, null, 2));
  fs.renameSync(stagingDir, imageDir(imagesRoot, info.name));
  return info;
}
