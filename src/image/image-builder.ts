/**
 * @module Builds images: the debootstrap base, derived images with extra Debian packages (one
 * overlay layer on the base, built once per sorted package set), and imports of OCI tarballs.
 * Builds happen in a staging directory and are published by rename, so a crash leaves no
 * half-built image behind (`crab gc` removes stale staging directories).
 */
import fs from 'node:fs';
import path from 'node:path';
import { run } from '../core/run.js';
import { CrabError, invalid } from '../core/errors.js';
import { ownerMark } from '../core/owner.js';
import { checkId } from '../core/ids.js';
import {
  BASE_IMAGE,
  derivedImageName,
  getImage,
  imageDir,
  normalizePackages,
  publishImage,
  readImage,
  type ImageInfo,
} from './image-store.js';
import { importOciArchive } from './oci-import.js';

export type Progress = (msg: string) => void;

const PACKAGE_RE = /^[a-z0-9][a-z0-9+.-]+$/;
const inFlight = new Map<string, Promise<ImageInfo>>();

/** Debian mirror the host already uses (apt sources), so image builds work offline-but-for-Debian. */
export function hostDebianMirror(): string {
  for (const f of ['/etc/apt/sources.list', ...listDir('/etc/apt/sources.list.d')]) {
    let text: string;
    try {
      text = fs.readFileSync(f, 'utf8');
    } catch {
      continue; // unreadable or vanished source file: try the next one
    }
    for (const line of text.split('\n')) {
      if (!/^(URIs:|deb )/.test(line.trim())) continue;
      const m = line.match(/https?:\/\/\S+\/debian\/?(?=\s|$)/);
      if (m && !m[0].includes('security')) return m[0].replace(/\/$/, '');
    }
  }
  return 'http://deb.debian.org/debian';
}

function listDir(dir: string): string[] {
  return fs.existsSync(dir) ? fs.readdirSync(dir).map((n) => path.join(dir, n)) : [];
}

/** A new staging dir, named with its owner (`crab gc` removes it only once this process is gone, or after an hour). */
function stagingDir(imagesRoot: string, name: string): string {
  fs.mkdirSync(imagesRoot, { recursive: true, mode: 0o700 });
  return fs.mkdtempSync(path.join(imagesRoot, `.staging-${name.replace(/[^a-z0-9-]/g, '_')}${ownerMark()}`));
}

async function dirSizeBytes(dir: string): Promise<number> {
  const r = await run('du', ['-sb', dir]);
  return Number(r.stdout.split(/\s/)[0]);
}

/** Publishes an image made of one layer (`staging/rootfs`) and no base. */
async function publishSingleLayer(imagesRoot: string, staging: string, name: string, source: ImageInfo['source']): Promise<ImageInfo> {
  return publishImage(imagesRoot, staging, {
    name,
    base: null,
    packages: [],
    source,
    createdAt: new Date().toISOString(),
    lowerDirs: [path.join(imageDir(imagesRoot, name), 'rootfs')],
    sizeBytes: await dirSizeBytes(path.join(staging, 'rootfs')),
  });
}

/** Builds (or returns the cached) image for base + packages. Concurrent calls share one build. */
export async function ensureImage(
  imagesRoot: string,
  base: string,
  packages: readonly string[],
  progress: Progress = () => undefined,
): Promise<ImageInfo> {
  checkId('image', base);
  const pkgs = normalizePackages(packages);
  for (const p of pkgs) {
    if (!PACKAGE_RE.test(p)) throw invalid('INVALID_PACKAGE', `'${p}' is not a valid Debian package name`);
  }
  const name = derivedImageName(base, pkgs);
  const cached = readImage(imagesRoot, name);
  if (cached) return cached;
  let p = inFlight.get(name);
  if (!p) {
    p = (pkgs.length === 0 ? buildBase(imagesRoot, base, progress) : buildDerived(imagesRoot, base, pkgs, progress)).finally(
      () => inFlight.delete(name),
    );
    inFlight.set(name, p);
  }
  return p;
}

async function buildBase(imagesRoot: string, name: string, progress: Progress): Promise<ImageInfo> {
  if (name !== BASE_IMAGE) {
    throw invalid('IMAGE_UNKNOWN_BASE', `cannot build base image '${name}'`, `The base image Crab builds is '${BASE_IMAGE}'; import others with 'crab image import'.`);
  }
  const staging = stagingDir(imagesRoot, name);
  const rootfs = path.join(staging, 'rootfs');
  const mirror = hostDebianMirror();
  progress(`debootstrap --variant=minbase bookworm from ${mirror} (about 30–60 s)`);
  try {
    await run('debootstrap', ['--variant=minbase', 'bookworm', rootfs, mirror], {
      timeoutMs: 15 * 60_000,
      errorCode: 'IMAGE_BUILD_FAILED',
      onStderrLine: (l) => progress(l),
    });
    // Images are read-only lowers; drop apt caches so layers stay small.
    fs.rmSync(path.join(rootfs, 'var/cache/apt/archives'), { recursive: true, force: true });
    fs.mkdirSync(path.join(rootfs, 'var/cache/apt/archives/partial'), { recursive: true });
    return publishSingleLayer(imagesRoot, staging, name, 'debootstrap');
  } catch (err) {
    fs.rmSync(staging, { recursive: true, force: true });
    throw err;
  }
}

async function buildDerived(imagesRoot: string, base: string, packages: string[], progress: Progress): Promise<ImageInfo> {
  const baseInfo = base === BASE_IMAGE ? await ensureImage(imagesRoot, base, [], progress) : getImage(imagesRoot, base);
  const name = derivedImageName(base, packages);
  const staging = stagingDir(imagesRoot, name);
  const layer = path.join(staging, 'rootfs');
  const work = path.join(staging, 'work');
  const merged = path.join(staging, 'merged');
  for (const d of [layer, work, merged]) fs.mkdirSync(d);
  const mounts: string[] = [];
  try {
    await run('mount', ['-t', 'overlay', 'overlay', '-o', `lowerdir=${baseInfo.lowerDirs.join(':')},upperdir=${layer},workdir=${work},redirect_dir=on`, merged]);
    mounts.push(merged);
    for (const [src, fstype] of [['proc', 'proc'], ['sysfs', 'sysfs'], ['devtmpfs', 'devtmpfs']] as const) {
      const target = path.join(merged, src === 'proc' ? 'proc' : src === 'sysfs' ? 'sys' : 'dev');
      await run('mount', ['-t', fstype, src, target]);
      mounts.push(target);
    }
    fs.copyFileSync('/etc/resolv.conf', path.join(merged, 'etc/resolv.conf'));
    const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive', LC_ALL: 'C' };
    progress(`apt-get update in the image`);
    await run('chroot', [merged, 'apt-get', 'update', '-qq'], { env, timeoutMs: 10 * 60_000, errorCode: 'IMAGE_BUILD_FAILED' });
    await checkPackagesExist(merged, packages, env);
    progress(`apt-get install ${packages.join(' ')}`);
    await run('chroot', [merged, 'apt-get', 'install', '-y', '-qq', '--no-install-recommends', ...packages], {
      env,
      timeoutMs: 30 * 60_000,
      errorCode: 'IMAGE_BUILD_FAILED',
    });
    await run('chroot', [merged, 'apt-get', 'clean']);
    for (const m of mounts.reverse()) await run('umount', [m]);
    mounts.length = 0;
    fs.rmSync(path.join(layer, 'var/lib/apt/lists'), { recursive: true, force: true });
    fs.rmSync(work, { recursive: true, force: true });
    fs.rmdirSync(merged);
    const finalLayer = path.join(imageDir(imagesRoot, name), 'rootfs');
    return publishImage(imagesRoot, staging, {
      name,
      base,
      packages,
      source: 'packages',
      createdAt: new Date().toISOString(),
      lowerDirs: [finalLayer, ...baseInfo.lowerDirs],
      sizeBytes: await dirSizeBytes(layer),
    });
  } catch (err) {
    for (const m of mounts.reverse()) await run('umount', ['-l', m]).catch(() => undefined); // best effort; gc retries
    fs.rmSync(staging, { recursive: true, force: true });
    throw err;
  }
}

/** Fails with INVALID_PACKAGE naming every package apt does not know, before installing anything. */
async function checkPackagesExist(root: string, packages: string[], env: NodeJS.ProcessEnv): Promise<void> {
  const r = await run('chroot', [root, 'apt-cache', 'policy', ...packages], { env });
  const missing = packages.filter((p) => {
    const block = r.stdout.split(/\n(?=\S)/).find((b) => b.startsWith(`${p}:`));
    return !block || /Candidate: \(none\)/.test(block);
  });
  if (missing.length > 0) {
    throw new CrabError(
      'INVALID_PACKAGE',
      'invalid',
      `Debian bookworm has no installable package named ${missing.map((m) => `'${m}'`).join(', ')}`,
      "Check the name with 'apt-cache search' on the host.",
      { missing },
    );
  }
}

/** Imports a `docker save` or OCI-layout tarball as an image named `name`. */
export async function importImage(imagesRoot: string, name: string, archive: string, progress: Progress = () => undefined): Promise<ImageInfo> {
  checkId('image', name);
  if (readImage(imagesRoot, name)) {
    throw new CrabError('IMAGE_EXISTS', 'conflict', `image '${name}' already exists`, 'Pick another name or remove it first.');
  }
  const staging = stagingDir(imagesRoot, name);
  const rootfs = path.join(staging, 'rootfs');
  fs.mkdirSync(rootfs);
  try {
    await importOciArchive(archive, rootfs, path.join(staging, 'unpack'), progress);
    fs.rmSync(path.join(staging, 'unpack'), { recursive: true, force: true });
    return publishSingleLayer(imagesRoot, staging, name, 'oci-import');
  } catch (err) {
    fs.rmSync(staging, { recursive: true, force: true });
    throw err;
  }
}
