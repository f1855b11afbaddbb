/**
 * @module The checkpoint catalog: sandboxes, checkpoints with their lineage, and named refs.
 * It is the only source of GC roots. It never reads or writes chunks itself: `liveDigests()`
 * gets an expander that turns a root (a manifest or a process-image recipe) into the chunk
 * digests it references, so the catalog does not depend on the store or the manifest format.
 *
 * Implementations: `SqliteCatalog` (embedded default). A PostgreSQL one implements the same
 * interface (every method is async, every mutation is one transaction).
 */
import { CrabError } from '../core/errors.js';

export type CheckpointKind = 'full' | 'fs' | 'process';

export interface SandboxRecord {
  id: string;
  name: string;
  image: string;
  /** Free-form JSON (the sandbox's creation config). */
  config: unknown;
  createdAtMs: number;
  state: string;
  /** Set when the stored row cannot be read (then `config` is null): why. `getSandbox` refuses such a row. */
  corrupt?: string;
}

/**
 * Where a checkpoint's process image comes from.
 * - `{ digest }`: taken by this checkpoint (digest of the stored CRIU directory recipe).
 * - `{ reuseOf }`: the process image of an earlier checkpoint (id). The catalog resolves it at
 *   commit time and records the digest, so deleting that checkpoint later breaks nothing.
 */
export type ProcessImageRef = { digest: string } | { reuseOf: string };

export interface CheckpointDraft {
  /** Optional caller-chosen id; generated when absent. */
  id?: string;
  sandboxId: string;
  parentId: string | null;
  kind: CheckpointKind;
  /** Turn number (or null when not tied to a turn). */
  turn: number | null;
  logicalBytes: number;
  newBytes: number;
  /** Digest of the full fs manifest (never a diff against the parent), or null. */
  fsManifest: string | null;
  processImage: ProcessImageRef | null;
  effects?: unknown;
  meta?: unknown;
  /** When every chunk the checkpoint names was last known good (ms): the oldest check it relies on. */
  verifiedAtMs?: number | null;
}

export interface CheckpointRecord {
  id: string;
  sandboxId: string;
  /** Nearest surviving ancestor (deleting a checkpoint reparents its children). */
  parentId: string | null;
  kind: CheckpointKind;
  turn: number | null;
  createdAtMs: number;
  logicalBytes: number;
  newBytes: number;
  fsManifest: string | null;
  /** Resolved digest of the process image this checkpoint restores with, or null. */
  processImage: string | null;
  /** Id of the checkpoint that took that process image (may no longer exist), or null. */
  processImageFrom: string | null;
  effects: unknown;
  meta: unknown;
  /**
   * When every chunk this checkpoint names was last known good (ms since epoch): written, or read
   * and hashed. A later checkpoint builds on its chunks without reading them again only while this
   * is recent (`VerifiedChunks.trustMs`). Null: unknown (older catalogs).
   */
  verifiedAtMs: number | null;
  /**
   * Set only in listings (`listCheckpoints`, `children`, `ancestors`) when the stored row cannot
   * be read: why. Its unreadable fields are null. `getCheckpoint` refuses such a row
   * (`CATALOG_CHECKPOINT_CORRUPT`), so nothing restores from it or builds on it.
   */
  corrupt?: string;
}

/** A GC root: a stored JSON document whose referenced chunks are live. */
export interface GcRoot {
  digest: string;
  kind: 'fs-manifest' | 'process-image';
}

/** Returns the chunk digests `root` references (the expander adds `root.digest` itself or not: the catalog adds it). */
export type GcRootExpander = (root: GcRoot) => Promise<Iterable<string>>;

export interface CommitOptions {
  /** Refs set to the new checkpoint in the same transaction (e.g. `head/<sandboxId>`). */
  refs?: string[];
}

export interface Catalog {
  /** Inserts or replaces a sandbox row. Idempotent. */
  putSandbox(s: SandboxRecord): Promise<void>;
  /** Throws `CATALOG_SANDBOX_NOT_FOUND`, or `CATALOG_SANDBOX_CORRUPT` when its row cannot be read. */
  getSandbox(id: string): Promise<SandboxRecord>;
  /** Every sandbox; an unreadable row is listed with `corrupt` set instead of failing the listing. */
  listSandboxes(): Promise<SandboxRecord[]>;
  /** Throws `CATALOG_SANDBOX_NOT_FOUND`. */
  setSandboxState(id: string, state: string): Promise<void>;
  /**
   * Removes a sandbox. With checkpoints it throws `CATALOG_SANDBOX_HAS_CHECKPOINTS` unless
   * `cascade` (then its checkpoints and the refs to them go too, in one transaction).
   */
  deleteSandbox(id: string, opts?: { cascade?: boolean }): Promise<void>;

  /**
   * Records a checkpoint, atomically: the row and `opts.refs` appear together or not at all.
   * Precondition: every chunk the draft references is durable in the store (the store's put
   * calls have returned). Validates: the sandbox exists, the parent exists and belongs to the
   * same sandbox, `reuseOf` exists and has a process image. On failure: nothing recorded.
   */
  commitCheckpoint(draft: CheckpointDraft, opts?: CommitOptions): Promise<CheckpointRecord>;
  /** Throws `CATALOG_CHECKPOINT_NOT_FOUND`, or `CATALOG_CHECKPOINT_CORRUPT` when its row cannot be read. */
  getCheckpoint(id: string): Promise<CheckpointRecord>;
  /** A sandbox's checkpoints, oldest first; an unreadable row is listed with `corrupt` set instead of failing the listing. */
  listCheckpoints(sandboxId: string): Promise<CheckpointRecord[]>;
  /** Direct children, oldest first. */
  children(id: string): Promise<CheckpointRecord[]>;
  /** Parent, grandparent, … (nearest first; `id` itself excluded). Throws when `id` is unknown. */
  ancestors(id: string): Promise<CheckpointRecord[]>;
  /**
   * The newest checkpoint on the path `id` → root (including `id`) that took its own process
   * image, or null. With resolved digests, `getCheckpoint(id).processImage` is what to restore;
   * this tells where it was taken.
   */
  newestProcessImage(id: string): Promise<CheckpointRecord | null>;
  /**
   * Deletes a checkpoint. Its children are reparented to its parent in the same transaction
   * and stay restorable (they record full manifests and resolved process-image digests).
   * Throws `CATALOG_CHECKPOINT_REFERENCED` while a ref points at it. Chunks are freed by the next GC.
   */
  deleteCheckpoint(id: string): Promise<void>;
  /** Records that every chunk of the checkpoint was found good at `atMs` (keeps a later record). */
  markVerified(id: string, atMs: number): Promise<void>;

  /** Points `name` at a checkpoint (creates or moves). Throws when the checkpoint is unknown. */
  setRef(name: string, checkpointId: string): Promise<void>;
  /** Checkpoint id of a ref, or null. */
  getRef(name: string): Promise<string | null>;
  deleteRef(name: string): Promise<void>;
  listRefs(): Promise<Array<{ name: string; checkpointId: string }>>;

  /** Distinct roots of all checkpoints (a root that is not a digest names nothing and is left out). */
  gcRoots(): Promise<GcRoot[]>;
  /**
   * Every chunk digest reachable from a checkpoint: the roots themselves plus what `expand`
   * returns for each. Compute it right before `ContentStore.sweep()`; puts racing with it are
   * protected by the store's grace period.
   */
  liveDigests(expand: GcRootExpander): Promise<Set<string>>;

  close(): Promise<void>;
}

export const CATALOG_ERROR_CODES = {
  sandboxNotFound: 'CATALOG_SANDBOX_NOT_FOUND',
  sandboxHasCheckpoints: 'CATALOG_SANDBOX_HAS_CHECKPOINTS',
  checkpointNotFound: 'CATALOG_CHECKPOINT_NOT_FOUND',
  checkpointReferenced: 'CATALOG_CHECKPOINT_REFERENCED',
  badLineage: 'CATALOG_BAD_LINEAGE',
  schemaTooNew: 'CATALOG_SCHEMA_TOO_NEW',
  checkpointCorrupt: 'CATALOG_CHECKPOINT_CORRUPT',
  sandboxCorrupt: 'CATALOG_SANDBOX_CORRUPT',
} as const;

export function sandboxNotFound(id: string): CrabError {
  return new CrabError(CATALOG_ERROR_CODES.sandboxNotFound, 'not-found', `no sandbox '${id}' in the catalog`, 'List sandboxes to see what exists.', { id });
}

export function checkpointNotFound(id: string): CrabError {
  return new CrabError(CATALOG_ERROR_CODES.checkpointNotFound, 'not-found', `no checkpoint '${id}' in the catalog`, 'List the sandbox\'s checkpoints to see what exists.', { id });
}

/** A row that exists but cannot be read (bad JSON, a column of the wrong type): that one record is unusable. */
export function rowCorrupt(what: 'checkpoint' | 'sandbox', id: string, why: string): CrabError {
  return new CrabError(
    what === 'checkpoint' ? CATALOG_ERROR_CODES.checkpointCorrupt : CATALOG_ERROR_CODES.sandboxCorrupt,
    'internal',
    `the catalog's record of ${what} '${id}' is corrupt (${why})`,
    what === 'checkpoint'
      ? 'That checkpoint cannot be restored or built on; the others are unaffected. Roll back to another checkpoint, or delete this one.'
      : "That sandbox's catalog record cannot be read; its checkpoints are listed on their own. Remove the sandbox from the catalog if it is gone.",
    { id, why },
  );
}
