/**
 * @module Stable tree hashes: what a directory tree *is* (paths, types, modes, owners, contents,
 * link targets, xattrs, hard-link structure), not when it was touched (mtimes/atimes/ctimes and
 * inode numbers are left out). Equal hashes mean a restore reproduced the tree.
 */
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { Beneath } from '../hostfs/beneath.js';
import type { Manifest, ManifestEntry } from './manifest.js';
import { comparePaths, underPrefix } from './manifest.js';
import { readXattrs } from './host-helper.js';
import { assignLinkGroups, entryFromNode, scanSubtree } from './scan.js';

export interface TreeHashOptions {
  /** Relative paths (e.g. 'run/crab') left out together with everything below them. */
  excludePrefixes?: readonly string[];
  /** xattr names left out (e.g. 'trusted.overlay.origin', which names lower inodes by handle). */
  excludeXattrs?: readonly string[];
}

/** sha256 (hex) over the canonical lines of a manifest's entries. */
export function treeHash(m: Pick<Manifest, 'entries'>, opts: TreeHashOptions = {}): string {
  const ex = (opts.excludePrefixes ?? []).map(normalizePrefix);
  const entries = m.entries.filter((e) => !ex.some((p) => underPrefix(e.path, p))).sort((a, b) => comparePaths(a.path, b.path));
  // hard-link groups by their first member's path, so numbering differences don't matter
  const firstOfGroup = new Map<number, string>();
  const h = createHash('sha256');
  h.update('crab-tree/1\n');
  for (const e of entries) {
    let link = '';
    if (e.linkGroup !== undefined) {
      const first = firstOfGroup.get(e.linkGroup);
      if (first === undefined) firstOfGroup.set(e.linkGroup, e.path);
      else link = first;
    }
    h.update(line(e, link, opts.excludeXattrs ?? []));
  }
  return h.digest('hex');
}

/** Tree hash of a live directory (reads every file, following nothing below `dir`). Comparable with `treeHash(manifest)`. */
export async function treeHashOfDir(dir: string, opts: TreeHashOptions = {}): Promise<string> {
  const ex = (opts.excludePrefixes ?? []).map(normalizePrefix);
  return Beneath.with(dir, async (tree) => {
    const nodes = await scanSubtree(tree, '', ex);
    const xattrs = await readXattrs(dir, nodes.map((n) => n.path));
    const entries: ManifestEntry[] = [];
    for (const n of nodes) {
      const e = entryFromNode(n);
      const x = xattrs.get(n.path);
      if (x) e.xattrs = x;
      if (e.type === 'file') e.sha256 = (await hashFileBeneath(tree, n.path)) ?? '?';
      entries.push(e);
    }
    assignLinkGroups(entries);
    return treeHash({ entries }, opts);
  });
}

function line(e: ManifestEntry, link: string, excludeXattrs: readonly string[]): string {
  let content = '';
  if (e.type === 'file') content = e.sha256 ?? '?';
  else if (e.type === 'symlink') content = e.target ?? '';
  else if (e.type === 'other') content = `${e.otherKind}:${e.rdev}`;
  const xs = Object.entries(e.xattrs ?? {})
    .filter(([k]) => !excludeXattrs.includes(k))
    .sort(([a], [b]) => comparePaths(a, b))
    .map(([k, v]) => `${k}=${v}`)
    .join(',');
  return `${JSON.stringify(e.path)}\t${e.type}\t${e.mode.toString(8)}\t${e.uid}:${e.gid}\t${content}\t${xs}\t${link}\n`;
}

function normalizePrefix(p: string): string {
  return p.replace(/^\/+/, '').replace(/\/+$/, '');
}

/**
 * sha256 (hex) of regular file `rel` of `tree` (opened without following it); null when it is not
 * in the tree. `size`, when known, lets a small file be read in one go (a stream costs more).
 */
export async function hashFileBeneath(tree: Beneath, rel: string, size = Number.POSITIVE_INFINITY): Promise<string | null> {
  const h = createHash('sha256');
  if (size <= 1 << 20) {
    const data = await tree.readFile(rel);
    return data ? h.update(data).digest('hex') : null;
  }
  const fd = tree.openFileSync(rel);
  if (fd === null) return null;
  for await (const chunk of createReadStream('', { fd, autoClose: true })) h.update(chunk as Buffer);
  return h.digest('hex');
}
