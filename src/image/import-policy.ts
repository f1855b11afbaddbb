/**
 * @module What an image import accepts, as pure functions: member names of a layer, whiteouts,
 * digests and platforms. Everything here decides; `layer-unpack.ts` and `archive.ts` act.
 */
import { CrabError, invalid } from '../core/errors.js';

/** Digest algorithms an import verifies (OCI image-spec's registered ones). Anything else is refused. */
export const DIGEST_HEX_LENGTH = { sha256: 64, sha512: 128 } as const;
export type DigestAlgorithm = keyof typeof DIGEST_HEX_LENGTH;

export interface ParsedDigest {
  algorithm: DigestAlgorithm;
  hex: string;
}

/** Longest member name accepted (PATH_MAX): longer ones are refused rather than truncated. */
export const MAX_NAME_BYTES = 4096;

/** `alg:hex` with a known algorithm and hex of its length, or IMAGE_DIGEST_UNSUPPORTED / IMAGE_ARCHIVE_INVALID. */
export function parseDigest(digest: unknown): ParsedDigest {
  if (typeof digest !== 'string')
    throw invalid('IMAGE_ARCHIVE_INVALID', `a digest must be a string, not ${typeof digest}`);
  const m = /^([a-z0-9]+(?:[+._-][a-z0-9]+)*):([a-zA-Z0-9=_-]+)$/.exec(digest);
  if (!m) throw invalid('IMAGE_ARCHIVE_INVALID', `'${digest.slice(0, 200)}' is not a digest (algorithm:hex)`);
  const [, algorithm, hex] = m as unknown as [string, string, string];
  if (!(algorithm in DIGEST_HEX_LENGTH)) {
    throw new CrabError(
      'IMAGE_DIGEST_UNSUPPORTED',
      'invalid',
      `digest algorithm '${algorithm}' is not supported`,
      `Only ${Object.keys(DIGEST_HEX_LENGTH).join(' and ')} are verified; re-export the image with one of them.`,
      { digest },
    );
  }
  const alg = algorithm as DigestAlgorithm;
  if (hex.length !== DIGEST_HEX_LENGTH[alg] || !/^[0-9a-f]+$/.test(hex)) {
    throw invalid(
      'IMAGE_ARCHIVE_INVALID',
      `'${digest}' is not a ${alg} digest (${DIGEST_HEX_LENGTH[alg]} lower-case hex digits)`,
    );
  }
  return { algorithm: alg, hex };
}

/**
 * A layer member's name as path components below the rootfs ('' and '.' dropped, a trailing '/'
 * ignored). The empty list is the rootfs itself. Throws IMAGE_LAYER_UNSAFE for absolute names and
 * any '..' (even one that would stay inside: a name that needs it was not made by a layer tool).
 */
export function entryComponents(name: string, what = 'member'): string[] {
  if (name.length > MAX_NAME_BYTES)
    throw unsafe(`${what} name is longer than ${MAX_NAME_BYTES} bytes`, name.slice(0, 200));
  if (name.includes('\0')) throw unsafe(`${what} name holds a NUL byte`, name);
  if (name.startsWith('/')) throw unsafe(`${what} name is absolute`, name);
  const parts = name.split('/').filter((s) => s !== '' && s !== '.');
  if (parts.includes('..')) throw unsafe(`${what} name holds '..'`, name);
  return parts;
}

const WHITEOUT_PREFIX = '.wh.';
const OPAQUE = '.wh..wh..opq';
/** AUFS metadata (`.wh..wh.plnk`, `.wh..wh.aufs`): carries no change, skipped. */
const AUFS_META_PREFIX = '.wh..wh.';

export type LayerMember =
  | { kind: 'entry'; parts: string[] }
  /** Hides everything lower layers put in `dir` (entries of this layer stay). */
  | { kind: 'opaque'; dir: string[] }
  /** Hides `dir/name` of lower layers. */
  | { kind: 'whiteout'; dir: string[]; name: string }
  | { kind: 'ignore'; why: string };

/** Classifies a layer member by its name (OCI image-spec "Whiteouts"). */
export function classifyMember(name: string): LayerMember {
  const parts = entryComponents(name);
  const base = parts[parts.length - 1];
  if (base === undefined || !base.startsWith(WHITEOUT_PREFIX)) return { kind: 'entry', parts };
  const dir = parts.slice(0, -1);
  if (base === OPAQUE) return { kind: 'opaque', dir };
  if (base.startsWith(AUFS_META_PREFIX)) return { kind: 'ignore', why: 'AUFS metadata' };
  const hidden = base.slice(WHITEOUT_PREFIX.length);
  if (hidden === '' || hidden === '.' || hidden === '..') throw unsafe(`whiteout names no file`, name);
  return { kind: 'whiteout', dir, name: hidden };
}

/** One entry of an OCI index, or of a docker manifest list. */
export interface PlatformDescriptor {
  digest: string;
  mediaType?: string;
  platform?: { architecture?: string; os?: string };
}

/** The manifest to import from an index: linux/amd64 first, then any amd64, then the first. */
export function pickManifest<T extends PlatformDescriptor>(manifests: readonly T[]): T | undefined {
  return (
    manifests.find((m) => m.platform?.architecture === 'amd64' && (m.platform.os ?? 'linux') === 'linux') ??
    manifests.find((m) => m.platform?.architecture === 'amd64') ??
    manifests.find((m) => !m.platform) ??
    manifests[0]
  );
}

/** A member name of the outer archive as a key: normalised, or null when it cannot name a blob we would read. */
export function archiveKey(name: string): string | null {
  const parts = name.split('/').filter((s) => s !== '' && s !== '.');
  if (parts.length === 0 || parts.includes('..') || name.includes('\0')) return null;
  return parts.join('/');
}

/**
 * Resolves a link target in the outer archive's own namespace (never the host's): relative to
 * the link's directory; null when it leaves the archive.
 */
export function archiveLinkTarget(linkName: string, target: string): string | null {
  const base = target.startsWith('/') ? [] : linkName.split('/').slice(0, -1);
  const out = [...base];
  for (const p of target.split('/')) {
    if (p === '' || p === '.') continue;
    if (p === '..') {
      if (out.length === 0) return null;
      out.pop();
    } else out.push(p);
  }
  return out.length ? out.join('/') : null;
}

export function unsafe(why: string, name: string, details: Record<string, unknown> = {}): CrabError {
  return new CrabError(
    'IMAGE_LAYER_UNSAFE',
    'invalid',
    `refusing image: ${why}: '${name}'`,
    'The archive tries to write outside the image root or through a link; nothing was imported. Rebuild it with docker save or skopeo.',
    { name, ...details },
  );
}
