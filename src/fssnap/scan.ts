/** @module Walking a directory tree with lstat (bigint: ns times, exact inode numbers). */
import type { BigIntStats } from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import type { EntryType, ManifestEntry } from './manifest.js';
import { comparePaths, underPrefix } from './manifest.js';

export interface ScannedNode {
  /** Relative path ('' = root). */
  path: string;
  abs: string;
  st: BigIntStats;
  type: EntryType;
  target?: string;
  otherKind?: 'chr' | 'blk' | 'socket';
}

export function absPath(root: string, rel: string): string {
  return rel === '' ? root : path.join(root, rel);
}

/** lstat + classify one path; null when it does not exist. */
export async function scanOne(root: string, rel: string): Promise<ScannedNode | null> {
  const abs = absPath(root, rel);
  let st: BigIntStats;
  try {
    st = await fsp.lstat(abs, { bigint: true });
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') return null;
    throw err;
  }
  const node: ScannedNode = { path: rel, abs, st, type: 'other' };
  if (st.isFile()) node.type = 'file';
  else if (st.isDirectory()) node.type = 'dir';
  else if (st.isSymbolicLink()) {
    node.type = 'symlink';
    node.target = await fsp.readlink(abs);
  } else if (st.isCharacterDevice() && st.rdev === 0n) node.type = 'whiteout';
  else if (st.isFIFO()) node.type = 'fifo';
  else node.otherKind = st.isCharacterDevice() ? 'chr' : st.isBlockDevice() ? 'blk' : 'socket';
  return node;
}

/**
 * `rel` and everything below it, parents first, skipping paths under `exclude` prefixes.
 * Missing `rel` gives an empty list.
 */
export async function scanSubtree(root: string, rel: string, exclude: readonly string[] = []): Promise<ScannedNode[]> {
  const out: ScannedNode[] = [];
  const walk = async (r: string): Promise<void> => {
    if (exclude.some((p) => underPrefix(r, p))) return;
    const node = await scanOne(root, r);
    if (!node) return;
    out.push(node);
    if (node.type !== 'dir') return;
    const names = await fsp.readdir(node.abs);
    names.sort(comparePaths);
    for (const name of names) await walk(r === '' ? name : `${r}/${name}`);
  };
  await walk(rel);
  return out;
}

/** Turns scanned metadata into a manifest entry (without content or xattrs). */
export function entryFromNode(n: ScannedNode): ManifestEntry {
  const e: ManifestEntry = {
    path: n.path,
    type: n.type,
    mode: Number(n.st.mode & 0o7777n),
    uid: Number(n.st.uid),
    gid: Number(n.st.gid),
    mtimeNs: n.st.mtimeNs.toString(),
    size: n.type === 'dir' ? 0 : Number(n.st.size),
    ino: Number(n.st.ino),
    ctimeNs: n.st.ctimeNs.toString(),
  };
  if (n.target !== undefined) e.target = n.target;
  if (n.otherKind) {
    e.otherKind = n.otherKind;
    e.rdev = Number(n.st.rdev);
  }
  return e;
}

/**
 * Numbers hard-link groups: non-directories sharing an inode get the same `linkGroup`,
 * numbered from 1 in path order; singletons get none. `entries` must be sorted by path.
 */
export function assignLinkGroups(entries: ManifestEntry[]): void {
  const count = new Map<number, number>();
  for (const e of entries) if (e.type !== 'dir') count.set(e.ino, (count.get(e.ino) ?? 0) + 1);
  const group = new Map<number, number>();
  for (const e of entries) {
    delete e.linkGroup;
    if (e.type === 'dir' || (count.get(e.ino) ?? 0) < 2) continue;
    let g = group.get(e.ino);
    if (g === undefined) group.set(e.ino, (g = group.size + 1));
    e.linkGroup = g;
  }
}
