/**
 * @module Walking a directory tree a sandbox writes with lstat (bigint: ns times, exact inode
 * numbers), beneath its root: nothing the sandbox planted is followed (`hostfs/beneath.ts`).
 */
import type { BigIntStats } from 'node:fs';
import type { Beneath } from '../hostfs/beneath.js';
import type { EntryType, ManifestEntry } from './manifest.js';
import { comparePaths, underPrefix } from './manifest.js';

export interface ScannedNode {
  /** Relative path ('' = root). */
  path: string;
  st: BigIntStats;
  type: EntryType;
  target?: string;
  otherKind?: 'chr' | 'blk' | 'socket';
}

/** lstat + classify one path; null when it is not in the tree (missing, or below a non-directory). */
export async function scanOne(tree: Beneath, rel: string): Promise<ScannedNode | null> {
  const st = await tree.lstat(rel);
  if (!st) return null;
  const node: ScannedNode = { path: rel, st, type: 'other' };
  if (st.isFile()) node.type = 'file';
  else if (st.isDirectory()) node.type = 'dir';
  else if (st.isSymbolicLink()) {
    node.type = 'symlink';
    node.target = await tree.readlink(rel);
  } else if (st.isCharacterDevice() && st.rdev === 0n) node.type = 'whiteout';
  else if (st.isFIFO()) node.type = 'fifo';
  else node.otherKind = st.isCharacterDevice() ? 'chr' : st.isBlockDevice() ? 'blk' : 'socket';
  return node;
}

/**
 * `rel` and everything below it, parents first, skipping paths under `exclude` prefixes.
 * Missing `rel` gives an empty list.
 */
export async function scanSubtree(tree: Beneath, rel: string, exclude: readonly string[] = []): Promise<ScannedNode[]> {
  const out: ScannedNode[] = [];
  const walk = async (r: string): Promise<void> => {
    if (exclude.some((p) => underPrefix(r, p))) return;
    const node = await scanOne(tree, r);
    if (!node) return;
    out.push(node);
    if (node.type !== 'dir') return;
    const names = await tree.readdir(r);
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
