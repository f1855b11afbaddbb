/** @module capture(): an overlay upper directory → a manifest stored in the content store. */
import fs from 'node:fs';
import { CrabError, invalid } from '../core/errors.js';
import { pool } from '../core/pool.js';
import { Beneath } from '../hostfs/beneath.js';
import type { ContentStore, Digest, PutFileResult } from '../store/content-store.js';
import { readXattrs } from './host-helper.js';
import type { Manifest, ManifestEntry } from './manifest.js';
import { MANIFEST_FORMAT, comparePaths, storeManifest, underPrefix } from './manifest.js';
import { assignLinkGroups, entryFromNode, scanOne, scanSubtree, type ScannedNode } from './scan.js';

export interface CaptureOptions {
  /** The manifest of the previous capture of the same directory: unchanged files are not re-read. */
  previous?: Manifest;
  /**
   * Paths that may have changed since `previous` (relative to the upper root, or absolute as
   * seen inside the sandbox: a leading '/' is ignored). Must name every path created, written,
   * chmod'ed, deleted or renamed (old and new name) since `previous`. Only these, their
   * ancestors and (for directories) their subtrees are examined; everything else is taken
   * from `previous`. Ignored without `previous` (full rescan).
   */
  hintPaths?: readonly string[];
  /** Relative paths left out of the snapshot (with everything below them). */
  excludePrefixes?: readonly string[];
}

export interface CaptureResult {
  manifest: Manifest;
  /** Digest of the stored manifest chunk: what a checkpoint record references. */
  digest: Digest;
  /** Sum of regular file sizes (each inode once). */
  logicalBytes: number;
  /** Compressed bytes this capture added to the store (contents + manifest). */
  newBytes: number;
  /** The part of `newBytes` that is file contents (0 when nothing changed; the rest is the manifest: its top document and changed parts). */
  contentNewBytes: number;
  /** Files whose bytes were read, and files whose recipe came from `previous`. */
  filesRead: number;
  filesReused: number;
  /** 'full' when every path was examined, 'hinted' when only the hints were. */
  mode: 'full' | 'hinted';
}

/**
 * File contents a snapshot holds in memory, to store after the sandbox runs again. Beyond this,
 * the rest is stored while frozen: reading 5000 small files takes ~0.2 s, storing them ~3 s.
 */
export const FROZEN_READ_BUDGET_BYTES = 128 * 2 ** 20;
const READS_IN_FLIGHT = 16;

/** What a snapshot read while the sandbox was frozen; `finish` stores it. */
export interface PendingCapture {
  /** Stores the contents read and the manifest. The directory may change meanwhile. */
  finish(): Promise<CaptureResult>;
}

/**
 * Snapshots `upperDir` into `store`.
 * Precondition: nothing writes to `upperDir` meanwhile (sandbox frozen).
 * On success: every chunk of the manifest, and the manifest itself, are durable in the store.
 * On failure: the store may hold some unreferenced chunks (GC removes them); nothing else changes.
 */
export async function capture(upperDir: string, store: ContentStore, opts: CaptureOptions = {}): Promise<CaptureResult> {
  return (await snapshot(upperDir, store, opts)).finish();
}

/**
 * The part of `capture` that needs `upperDir` still: scans it and reads the contents that changed
 * (up to `FROZEN_READ_BUDGET_BYTES` into memory, the rest straight into the store). Call it while
 * nothing writes to `upperDir` (sandbox frozen); `finish()` may run after the sandbox is thawed.
 */
export async function snapshot(upperDir: string, store: ContentStore, opts: CaptureOptions & { readBudgetBytes?: number } = {}): Promise<PendingCapture> {
  // Everything below upperDir is the sandbox's: read beneath it, following nothing it planted.
  return Beneath.with(upperDir, (tree) => snapshotBeneath(tree, store, opts), `the writable layer ${upperDir}`);
}

async function snapshotBeneath(tree: Beneath, store: ContentStore, opts: CaptureOptions & { readBudgetBytes?: number }): Promise<PendingCapture> {
  const upperDir = tree.root;
  const exclude = (opts.excludePrefixes ?? []).map(normRel);
  const rootNode = await scanOne(tree, '');
  if (!rootNode || rootNode.type !== 'dir') throw invalid('FSSNAP_NOT_A_DIRECTORY', `${upperDir} is not a directory`, 'Pass the overlay upper directory of the sandbox.');
  const prev = opts.previous;
  // Inode/ctime identity is only meaningful for the very directory the previous manifest came from.
  const sameSource = !!prev && prev.sourceDev === Number(rootNode.st.dev) && prev.sourceIno === Number(rootNode.st.ino);
  const prevByPath = new Map<string, ManifestEntry>(sameSource ? prev!.entries.map((e) => [e.path, e]) : []);

  let nodes: ScannedNode[];
  let kept: ManifestEntry[] = [];
  let mode: CaptureResult['mode'] = 'full';
  if (sameSource && opts.hintPaths) {
    mode = 'hinted';
    const { rescan, drop } = await hintedScan(tree, opts.hintPaths.map(normRel), exclude);
    nodes = rescan;
    const rescanned = new Set(rescan.map((n) => n.path));
    kept = prev!.entries.filter((e) => !rescanned.has(e.path) && !drop.some((d) => underPrefix(e.path, d)) && !exclude.some((p) => underPrefix(e.path, p)));
  } else {
    nodes = await scanSubtree(tree, '', exclude);
  }

  // Metadata: reuse xattrs/contents when the inode is the same and its ctime did not move
  // (any write, chmod, chown, setxattr or link count change moves ctime).
  const entries: ManifestEntry[] = [];
  const needXattrs: ManifestEntry[] = [];
  const needContent: ManifestEntry[] = [];
  let filesReused = 0;
  for (const n of nodes) {
    const e = entryFromNode(n);
    const p = prevByPath.get(e.path);
    const unchanged = !!p && p.type === e.type && p.ino === e.ino && p.ctimeNs === e.ctimeNs;
    if (unchanged) {
      if (p.xattrs) e.xattrs = p.xattrs;
    } else needXattrs.push(e);
    if (e.type === 'file') {
      if (unchanged && p.recipe && p.sha256 !== undefined && p.size === e.size && p.mtimeNs === e.mtimeNs) {
        e.recipe = p.recipe;
        e.sha256 = p.sha256;
        filesReused++;
      } else needContent.push(e);
    }
    entries.push(e);
  }
  const xattrs = await readXattrs(upperDir, needXattrs.map((e) => e.path));
  for (const e of needXattrs) {
    const x = xattrs.get(e.path);
    if (x) e.xattrs = x;
  }

  // Contents: one read per inode (hard links share the recipe).
  let newBytes = 0;
  const byIno = new Map<number, ManifestEntry>();
  const todo: ManifestEntry[] = [];
  for (const e of needContent) {
    const first = byIno.get(e.ino);
    if (first) continue;
    byIno.set(e.ino, e);
    todo.push(e);
  }
  const setRecipes = (files: readonly ManifestEntry[], results: readonly PutFileResult[]) =>
    files.forEach((e, i) => {
      const r = results[i]!;
      e.recipe = r.recipe;
      e.sha256 = r.sha256;
      e.size = r.recipe.size;
    });
  // Into memory while the budget lasts (smallest first: most files for it); the rest straight to the store.
  let budget = opts.readBudgetBytes ?? FROZEN_READ_BUDGET_BYTES;
  const inMemory: ManifestEntry[] = [];
  const fromDisk: ManifestEntry[] = [];
  for (const e of [...todo].sort((a, b) => a.size - b.size)) {
    if (e.size <= budget) {
      budget -= e.size;
      inMemory.push(e);
    } else fromDisk.push(e);
  }
  const contents: Buffer[] = [];
  await pool(inMemory, READS_IN_FLIGHT, async (e, i) => void (contents[i] = await readScanned(tree, e.path)));
  // The store opens by path: it gets each file's own descriptor (opened beneath the root, not
  // following a link), reopened through /proc/self/fd.
  const fds = fromDisk.map((e) => openScanned(tree, e.path));
  let direct: Awaited<ReturnType<ContentStore['putFiles']>>;
  try {
    direct = await store.putFiles(
      fds.map((fd) => `/proc/self/fd/${fd}`),
      { chunking: 'whole' },
    );
  } finally {
    for (const fd of fds) fs.closeSync(fd);
  }
  setRecipes(fromDisk, direct.results);
  newBytes += direct.newBytes;
  const filesRead = todo.length;
  const rootSt = rootNode.st;

  return {
    async finish(): Promise<CaptureResult> {
      const put = await store.putBuffers(contents, { chunking: 'whole' });
      setRecipes(inMemory, put.results);
      newBytes += put.newBytes;
      for (const e of needContent) {
        const first = byIno.get(e.ino)!;
        if (first !== e) {
          e.recipe = first.recipe;
          e.sha256 = first.sha256;
        }
      }
      return finishManifest(store, [...kept, ...entries], rootSt, newBytes, filesRead, filesReused, mode);
    },
  };
}

async function finishManifest(
  store: ContentStore,
  unsorted: ManifestEntry[],
  rootSt: ScannedNode['st'],
  contentNewBytes: number,
  filesRead: number,
  filesReused: number,
  mode: CaptureResult['mode'],
): Promise<CaptureResult> {
  const all = unsorted.sort((a, b) => comparePaths(a.path, b.path));
  assignLinkGroups(all);
  const seenIno = new Set<number>();
  let logicalBytes = 0;
  for (const e of all) {
    if (e.type !== 'file' || seenIno.has(e.ino)) continue;
    seenIno.add(e.ino);
    logicalBytes += e.size;
  }
  const manifest: Manifest = {
    format: MANIFEST_FORMAT,
    createdAtMs: Date.now(),
    sourceDev: Number(rootSt.dev),
    sourceIno: Number(rootSt.ino),
    entries: all,
    logicalBytes,
  };
  const stored = await storeManifest(store, manifest);
  return { manifest, digest: stored.digest, logicalBytes, newBytes: contentNewBytes + stored.newBytes, contentNewBytes, filesRead, filesReused, mode };
}

/**
 * Which paths to re-examine for a set of hints: each hint (its whole subtree when it is a
 * directory now) and its ancestors. `drop` lists hinted paths whose old subtree must go
 * (deleted, or replaced, e.g. a renamed-away directory).
 */
async function hintedScan(tree: Beneath, hints: string[], exclude: string[]): Promise<{ rescan: ScannedNode[]; drop: string[] }> {
  const out = new Map<string, ScannedNode>();
  const drop: string[] = [];
  const ancestors = new Set<string>(['']);
  for (const h of hints) {
    if (exclude.some((p) => underPrefix(h, p))) continue;
    const parts = h === '' ? [] : h.split('/');
    for (let i = 0; i < parts.length; i++) ancestors.add(parts.slice(0, i).join('/'));
    drop.push(h);
    for (const n of await scanSubtree(tree, h, exclude)) out.set(n.path, n);
  }
  for (const a of ancestors) {
    if (out.has(a)) continue;
    const n = await scanOne(tree, a);
    // a vanished ancestor takes its previous subtree with it
    if (n) out.set(a, n);
    else drop.push(a);
  }
  return { rescan: [...out.values()], drop };
}

/** A file the scan found, read while the sandbox is frozen: it must still be that regular file. */
async function readScanned(tree: Beneath, rel: string): Promise<Buffer> {
  const data = await tree.readFile(rel);
  if (!data) throw vanished(tree, rel);
  return data;
}

function openScanned(tree: Beneath, rel: string): number {
  const fd = tree.openFileSync(rel);
  if (fd === null) throw vanished(tree, rel);
  return fd;
}

function vanished(tree: Beneath, rel: string): CrabError {
  return new CrabError('FSSNAP_CHANGED_DURING_CAPTURE', 'internal', `${tree.what}: ${rel} vanished between the scan and the read`, 'Something wrote to the layer while it was captured (it should be frozen); take the checkpoint again.');
}

function normRel(p: string): string {
  const parts = p.split('/').filter((s) => s !== '' && s !== '.');
  if (parts.includes('..')) throw invalid('FSSNAP_BAD_PATH', `path '${p}' must not contain '..'`, 'Give paths relative to the sandbox root.');
  return parts.join('/');
}
