/** @module materialize(): a manifest → a fresh overlay upper directory, exactly. */
import fsp from 'node:fs/promises';
import path from 'node:path';
import { CrabError } from '../core/errors.js';
import { pool } from '../core/pool.js';
import type { ContentStore } from '../store/content-store.js';
import { applyMetadata, readXattrs, type ApplyRequest, type SpecialNode } from './host-helper.js';
import type { Manifest, ManifestEntry } from './manifest.js';
import { MANIFEST_FORMAT, comparePaths } from './manifest.js';
import { hashFileBeneath } from './tree-hash.js';
import { Beneath } from '../hostfs/beneath.js';

export interface MaterializeOptions {
  /** Files written at once (default 8). */
  concurrency?: number;
  /**
   * An upper directory on the same filesystem that may still hold some of the manifest's files
   * unchanged (a rollback's current upper). A file there that is the inode the manifest recorded,
   * with the same ctime (any write, chmod, chown, xattr or link change moves it), or that holds
   * the same bytes (sha256), is hard-linked instead of written; its metadata is then set as for
   * any file. Nothing may write to `reuse` meanwhile (its sandbox frozen or stopped), and the
   * caller discards it afterwards: the inodes are shared.
   */
  reuse?: string;
  /**
   * Whether an unchanged inode and ctime prove a file of `reuse` unchanged (default true). Not
   * after a host crash since the manifest was taken: an inode's new ctime may have reached the
   * disk while its data did not, so only files with the recorded bytes are linked.
   */
  trustInodes?: boolean;
}

export interface MaterializeResult {
  entries: number;
  bytesWritten: number;
  /** Files hard-linked from `reuse` instead of written. */
  filesLinked: number;
}

/**
 * Recreates the upper directory described by `manifest` at `targetUpperDir`: directories,
 * files (contents verified chunk by chunk), symlinks, hard links, whiteouts (char 0:0), fifos,
 * devices, then owners, modes, xattrs (opaque/redirect/origin…) and mtimes (deepest first, so
 * creating children does not disturb a parent's time). Sockets are skipped (they cannot be
 * recreated without their owner process, which CRIU restores).
 *
 * Contents are written with plain writes: chunks are stored zstd-compressed, so there is no
 * uncompressed source a reflink could share blocks with.
 *
 * Precondition: `targetUpperDir` does not exist or is empty; needs root (mknod, trusted.* xattrs, chown).
 * On failure: `targetUpperDir` is left partial; the caller removes it (it was empty before).
 */
export async function materialize(manifest: Manifest, store: ContentStore, targetUpperDir: string, opts: MaterializeOptions = {}): Promise<MaterializeResult> {
  if (manifest.format !== MANIFEST_FORMAT) {
    throw new CrabError('FSSNAP_BAD_MANIFEST', 'invalid', `unknown manifest format ${String(manifest.format)}`, 'Restore with the Crab version that wrote it.');
  }
  await fsp.mkdir(targetUpperDir, { recursive: true });
  if ((await fsp.readdir(targetUpperDir)).length > 0) {
    throw new CrabError('FSSNAP_TARGET_NOT_EMPTY', 'precondition', `${targetUpperDir} is not empty`, 'Materialize into a new, empty directory.', { targetUpperDir });
  }
  const entries = [...manifest.entries].sort((a, b) => comparePaths(a.path, b.path));
  // The target is new and only this process writes it, so plain paths are safe in it as long as
  // no entry lies below one that is not a directory (a symlink `a` and a file `a/passwd` would
  // write through the link): checked for the whole manifest before anything is created.
  checkTreeShape(entries);
  const abs = (e: ManifestEntry): string => (e.path === '' ? targetUpperDir : path.join(targetUpperDir, ...checkRel(e.path)));

  const nodes: SpecialNode[] = [];
  const byPath = new Map(entries.map((e) => [e.path, e]));
  const firstOfGroup = new Map<number, string>();
  const links: Array<[string, string]> = [];
  const files: ManifestEntry[] = [];
  for (const e of entries) {
    const p = abs(e);
    if (e.linkGroup !== undefined && e.type !== 'dir') {
      const first = firstOfGroup.get(e.linkGroup);
      if (first !== undefined) {
        links.push([first, p]);
        continue;
      }
      firstOfGroup.set(e.linkGroup, p);
    }
    switch (e.type) {
      case 'dir':
        if (e.path !== '') await fsp.mkdir(p, { mode: 0o700 });
        break;
      case 'file':
        files.push(e);
        break;
      case 'symlink':
        await fsp.symlink(e.target ?? '', p);
        break;
      case 'whiteout':
        nodes.push({ path: e.path, kind: 'whiteout', rdev: 0 });
        break;
      case 'fifo':
        nodes.push({ path: e.path, kind: 'fifo', rdev: 0 });
        break;
      case 'other':
        if (e.otherKind === 'chr' || e.otherKind === 'blk') nodes.push({ path: e.path, kind: e.otherKind, rdev: e.rdev ?? 0 });
        break;
    }
  }

  let bytesWritten = 0;
  let filesLinked = 0;
  // The reused upper is the sandbox's: read beneath it, following nothing it planted.
  const reuse = opts.reuse ? new Beneath(opts.reuse, `the writable layer ${opts.reuse}`) : null;
  try {
    const linkFrom = reuse ? await reusableFiles(manifest, files, reuse, opts.trustInodes ?? true, opts.concurrency ?? 8) : new Set<ManifestEntry>();
    await pool(files, opts.concurrency ?? 8, async (e) => {
      if (!e.recipe) throw new CrabError('FSSNAP_BAD_MANIFEST', 'invalid', `file ${e.path} has no recipe`);
      if (reuse && linkFrom.has(e)) {
        // link(2) does not follow the name it links, and the sandbox is frozen: the inode checked
        await reuse.at(e.path, (src) => fsp.link(src, abs(e)));
        filesLinked++;
        return;
      }
      // the target is new and empty (checked above); the metadata helper sets the mode below
      await store.materializeFile(e.recipe, abs(e), { fresh: true });
      bytesWritten += e.recipe.size;
    });
  } finally {
    reuse?.close();
  }

  // special nodes must exist before hard links to them are made: the helper creates them, so
  // links to special nodes (rare: hard-linked fifos) are made after it, by a second pass below
  const req: ApplyRequest = { nodes, owners: [], xattrs: [], times: [] };
  const specialLinks = links.filter(([first]) => nodes.some((n) => abs(byPath.get(n.path)!) === first));
  for (const [first, p] of links) if (!specialLinks.some(([, q]) => q === p)) await fsp.link(first, p);

  const created = entries.filter((e) => !(e.type === 'other' && e.otherKind === 'socket'));
  for (const e of created) {
    req.owners.push({ path: e.path, uid: e.uid, gid: e.gid, mode: e.mode, isSymlink: e.type === 'symlink' });
    if (e.xattrs && Object.keys(e.xattrs).length > 0) req.xattrs.push({ path: e.path, xattrs: e.xattrs });
  }
  for (let i = created.length - 1; i >= 0; i--) req.times.push({ path: created[i]!.path, mtimeNs: BigInt(created[i]!.mtimeNs) });
  if (specialLinks.length > 0) {
    await applyMetadata(targetUpperDir, { nodes: req.nodes, owners: [], xattrs: [], times: [] });
    for (const [first, p] of specialLinks) await fsp.link(first, p);
    req.nodes = [];
  }
  await applyMetadata(targetUpperDir, req);
  return { entries: entries.length, bytesWritten, filesLinked };
}

/**
 * The files of `reuse` that may be hard-linked in place of writing `files` (see `MaterializeOptions.reuse`).
 * A file matched by its bytes must also have exactly the manifest's xattrs: the metadata pass
 * sets the recorded ones but removes none, so one added since (setfattr, setcap, an ACL) would stay.
 */
async function reusableFiles(manifest: Manifest, files: readonly ManifestEntry[], reuse: Beneath, trustInodes: boolean, concurrency: number): Promise<Set<ManifestEntry>> {
  const found = new Map<ManifestEntry, { ino: bigint; byContent: boolean }>();
  await pool(files, concurrency, async (e) => {
    const st = await reuse.lstat(e.path); // null: not there any more (or below something that is no directory now)
    if (!st?.isFile() || Number(st.size) !== e.size) return;
    // The inode the manifest recorded, untouched since (ctime); else the same bytes (after an
    // earlier rollback its inodes are linked anew, which moves their ctime).
    const untouched = trustInodes && Number(st.dev) === manifest.sourceDev && Number(st.ino) === e.ino && st.ctimeNs.toString() === e.ctimeNs && st.mtimeNs.toString() === e.mtimeNs;
    if (!untouched && (e.sha256 === undefined || (await hashFileBeneath(reuse, e.path, e.size)) !== e.sha256)) return;
    found.set(e, { ino: st.ino, byContent: !untouched });
  });
  const byContent = [...found].filter(([, f]) => f.byContent);
  const xattrs = await readXattrs(reuse.root, byContent.map(([e]) => e.path));
  for (const [e] of byContent) if (!sameXattrs(xattrs.get(e.path) ?? {}, e.xattrs ?? {})) found.delete(e);
  // An inode of `reuse` serves one link group at most (two files made one by `ln` since must not stay one).
  const claimed = new Map<bigint, number | string>();
  const out = new Set<ManifestEntry>();
  for (const e of files) {
    const f = found.get(e);
    if (!f) continue;
    const group = e.linkGroup ?? e.path;
    if ((claimed.get(f.ino) ?? group) !== group) continue;
    claimed.set(f.ino, group);
    out.add(e);
  }
  return out;
}

function sameXattrs(a: Record<string, string>, b: Record<string, string>): boolean {
  const names = Object.keys(a);
  return names.length === Object.keys(b).length && names.every((n) => b[n] === a[n]);
}

/**
 * Refuses a manifest that could not come from a real directory tree: a path twice, or an entry
 * whose parent is not a directory of the manifest (the root '' is one).
 */
export function checkTreeShape(entries: readonly ManifestEntry[]): void {
  const types = new Map<string, ManifestEntry['type']>();
  for (const e of entries) {
    if (e.path !== '') checkRel(e.path);
    if (types.has(e.path)) throw badManifest(`path '${e.path}' appears twice in the manifest`);
    types.set(e.path, e.type);
  }
  if (types.has('') && types.get('') !== 'dir') throw badManifest('the manifest\'s root is not a directory');
  for (const e of entries) {
    if (e.path === '') continue;
    const slash = e.path.lastIndexOf('/');
    const parent = slash < 0 ? '' : e.path.slice(0, slash);
    const t = parent === '' ? 'dir' : types.get(parent);
    if (t !== 'dir') throw badManifest(`'${e.path}' lies below '${parent}', which is ${t ? `a ${t}` : 'not in the manifest'}`);
  }
}

function badManifest(msg: string): CrabError {
  return new CrabError('FSSNAP_BAD_MANIFEST', 'invalid', `unsafe manifest: ${msg}`, 'The manifest was tampered with or is corrupt; restore another checkpoint.');
}

function checkRel(rel: string): string[] {
  const parts = rel.split('/');
  if (parts.some((s) => s === '' || s === '.' || s === '..')) {
    throw new CrabError('FSSNAP_BAD_MANIFEST', 'invalid', `unsafe path '${rel}' in manifest`, 'The manifest was tampered with or is corrupt.');
  }
  return parts;
}
