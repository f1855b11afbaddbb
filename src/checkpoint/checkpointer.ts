/**
 * @module The C/R chain: take checkpoints (full / fs / process) from one frozen moment, restore,
 * roll back and fork, on top of the sandbox runtime, the content store and the catalog.
 *
 * Take: freeze the cgroup → capture the overlay upper (fs manifest) → CRIU dump with the
 * container still frozen (runc checkpoint --leave-running on a paused container keeps it paused)
 * → thaw → store the CRIU image (page-chunked, so unchanged pages dedup) → one catalog commit.
 * A checkpoint is visible only after all its chunks are durable.
 *
 * Restore: files first (materialize the manifest into a fresh upper), then processes
 * (runc restore from the newest process image of the lineage).
 */
import { span } from '../core/prof.js';
import fs from 'node:fs';
import path from 'node:path';
import { CrabError, conflict, precondition } from '../core/errors.js';
import { bootId, checkId, newId } from '../core/ids.js';
import { isAlive, ownerFromName, ownerMark } from '../core/owner.js';
import { checkLowerDirs } from '../image/image-store.js';
import { CATALOG_ERROR_CODES, type Catalog } from '../catalog/catalog.js';
import { rootLogger } from '../core/log.js';
import type { LocalContentStore } from '../store/local-content-store.js';
import { dirRecipeDigests, type DirRecipe } from '../store/content-store.js';
import { loadManifest, manifestDigests, materialize, snapshot, type Manifest, type PendingCapture } from '../fssnap/index.js';
import { checkParent, processImageChunks, verifiedAtOf } from './integrity.js';
import { recoverAfterCrash, recoverSandbox, type RecoveryReport } from './crash-recovery.js';
import { claimFreeze, releaseFreeze } from './freeze-owner.js';
import type { SandboxManager } from '../sandbox/sandbox-manager.js';
import type { SandboxRecord } from '../sandbox/sandbox.js';
import { mountOverlay, unmount } from '../sandbox/overlay.js';
import { leaseLink, leaseOwner, releaseLink } from '../sandbox/net-link.js';
import { processStartTicks } from '../core/owner.js';
import { imageAffinity } from './criu-pagemap.js';
import { freeze, freezerState, thaw } from './freezer.js';
import { LAYER_GRACE_MS, layersToRemove, type LayerEntry } from './layer-gc.js';
import type { BindIdentity, CheckpointKind, CheckpointRecord, RestoreResult, TakeOptions, TakeResult } from './checkpoint.js';

export const headRef = (sandboxId: string) => `head/${sandboxId}`;

interface CheckpointMeta {
  binds: BindIdentity[];
  sandbox: SandboxRecord;
  escalatedFrom?: CheckpointKind;
  fsMode?: string;
  /** `TakeOptions.shellReplay`. */
  shellReplay?: Record<string, string>;
  /** The host's boot when taken (`bootId`): a restore in the same boot may trust inodes and ctimes of the files it finds. */
  bootId?: string;
}

export class Checkpointer {
  /** Serialises C/R operations per sandbox. */
  private readonly locks = new Map<string, Promise<unknown>>();
  /** Last manifest per sandbox (saves a store read per checkpoint). */
  private readonly manifestCache = new Map<string, { digest: string; manifest: Manifest }>();
  /** Chunks of the last process image per sandbox (saves reading its recipe to check it). */
  private readonly imageCache = new Map<string, { digest: string; chunks: string[] }>();

  constructor(
    readonly sandboxes: SandboxManager,
    readonly store: LocalContentStore,
    readonly catalog: Catalog,
  ) {}

  private exclusive<T>(sandboxId: string, fn: () => Promise<T>): Promise<T> {
    const prev = this.locks.get(sandboxId) ?? Promise.resolve();
    const next = prev.catch(() => undefined).then(fn); // a failed operation must not block the next
    this.locks.set(sandboxId, next);
    void next.finally(() => this.locks.get(sandboxId) === next && this.locks.delete(sandboxId)).catch(() => undefined);
    return next;
  }

  private async ensureCatalogSandbox(rec: SandboxRecord): Promise<void> {
    await this.catalog.putSandbox({ id: rec.id, name: rec.id, image: rec.image, config: rec, createdAtMs: Date.parse(rec.createdAt), state: 'live' });
  }

  /**
   * Undoes what Crab processes that died mid-checkpoint or mid-restore left (`crash-recovery.ts`):
   * thaws the sandboxes they froze, removes their scratch and the store's temp files. Safe at any
   * time: what a live process holds is left alone.
   */
  recoverAfterCrash(): Promise<RecoveryReport> {
    return recoverAfterCrash(this.sandboxes.paths.sandboxes, this.store.tmpDir);
  }

  /**
   * The head as the next checkpoint's parent, or null when its catalog row is corrupt: then the
   * next checkpoint is a full one that reuses nothing from it (it still names it as its parent,
   * so the lineage stays whole).
   */
  private async usableParent(id: string): Promise<CheckpointRecord | null> {
    try {
      return await this.catalog.getCheckpoint(id);
    } catch (err) {
      if (!(err instanceof CrabError) || err.code !== CATALOG_ERROR_CODES.checkpointCorrupt) throw err;
      rootLogger.warn({ err, checkpointId: id }, 'head checkpoint unreadable; taking a full checkpoint that reuses nothing of it');
      return null;
    }
  }

  /** Head (newest checkpoint of the current branch) of a sandbox, or null. */
  head(sandboxId: string): Promise<string | null> {
    return this.catalog.getRef(headRef(sandboxId));
  }

  private async imageChunks(sandboxId: string, digest: string): Promise<string[]> {
    const cached = this.imageCache.get(sandboxId);
    return cached?.digest === digest ? cached.chunks : processImageChunks(this.store, digest);
  }

  private async manifestOf(ck: CheckpointRecord): Promise<Manifest | undefined> {
    if (!ck.fsManifest) return undefined;
    const cached = this.manifestCache.get(ck.sandboxId);
    if (cached?.digest === ck.fsManifest) return cached.manifest;
    return loadManifest(this.store, ck.fsManifest);
  }

  /**
   * Takes a checkpoint of a running sandbox.
   * On success: the checkpoint is committed and is the sandbox's new head.
   * On failure: the sandbox is thawed and running, nothing is visible in the catalog.
   */
  async take(sandboxId: string, opts: TakeOptions): Promise<TakeResult> {
    const r = await this.takePlanned(sandboxId, opts.turn ?? null, async () => opts);
    return r as TakeResult;
  }

  /**
   * Freezes the sandbox, then asks `plan` (with the sandbox frozen, so what it observes cannot
   * change before the snapshot) what to take; null means skip (thaw, nothing recorded).
   * `plan` gets whether this would be the sandbox's first checkpoint on its current branch.
   */
  takePlanned(
    sandboxId: string,
    turn: number | null,
    plan: (ctx: { first: boolean; parent: CheckpointRecord | null }) => Promise<Omit<TakeOptions, 'turn'> | null>,
  ): Promise<TakeResult | null> {
    return this.exclusive(sandboxId, () => span('ck.take', () => this.takeLocked(sandboxId, turn, plan)));
  }

  private async takeLocked(
    sandboxId: string,
    turn: number | null,
    plan: (ctx: { first: boolean; parent: CheckpointRecord | null }) => Promise<Omit<TakeOptions, 'turn'> | null>,
  ): Promise<TakeResult | null> {
    const rec = this.sandboxes.record(sandboxId);
    return this.claimed(sandboxId, 'checkpoint', () => this.takeClaimed(rec, turn, plan));
  }

  /**
   * Runs `fn` holding the sandbox's freeze record, after undoing what a dead process left on it.
   * Throws CKPT_SANDBOX_BUSY when a live process of this host holds the record.
   */
  private async claimed<T>(sandboxId: string, op: 'checkpoint' | 'restore', fn: () => Promise<T>): Promise<T> {
    const root = this.sandboxes.dirs(sandboxId).root;
    await recoverSandbox(sandboxId, root);
    claimFreeze(root, op);
    try {
      return await fn();
    } finally {
      releaseFreeze(root);
    }
  }

  private async takeClaimed(
    rec: SandboxRecord,
    turn: number | null,
    plan: (ctx: { first: boolean; parent: CheckpointRecord | null }) => Promise<Omit<TakeOptions, 'turn'> | null>,
  ): Promise<TakeResult | null> {
    const t0 = performance.now();
    const sandboxId = rec.id;
    // We hold the sandbox's freeze record, so a frozen cgroup now is stale (frozen by a Crab without records).
    if ((await this.sandboxes.status(sandboxId)).status === 'paused' && freezerState(sandboxId) !== 'THAWED') thaw(sandboxId);
    await this.sandboxes.requireRunning(sandboxId);
    await this.ensureCatalogSandbox(rec);
    const parentId = await this.head(sandboxId);
    const parent = parentId ? await this.usableParent(parentId) : null;
    // Only chunks found good lately are built on (integrity.ts): checked before the freeze.
    const check = parent ? await span('ck.check-parent', async () => checkParent(this.store, parent, await this.manifestOf(parent), (dg) => this.imageChunks(sandboxId, dg))) : null;
    const previous = check?.previous;
    // a check made now is recorded, so the next process trusts it for the trust period
    if (parent && check?.verifiedAtMs && check.verifiedAtMs > (parent.verifiedAtMs ?? 0)) await this.catalog.markVerified(parent.id, check.verifiedAtMs);

    const d = this.sandboxes.dirs(sandboxId);
    const ckptId = newId('ck-');
    // named with its owner: if this process dies, the next Crab process removes it (crash-recovery.ts)
    const scratch = path.join(d.ckpt, `${ckptId}.${ownerMark()}`);
    const imageDir = path.join(scratch, 'img');
    let frozenMs: number;
    let dumpMs = 0;
    let fsCaptureMs: number;
    let requested: CheckpointKind;
    let kind: CheckpointKind;
    let opts: Omit<TakeOptions, 'turn'> | null;
    try {
      const tFreeze = performance.now();
      await freeze(sandboxId);
      let pending: PendingCapture;
      try {
        opts = await span('ck.plan', () => plan({ first: !parent, parent }));
        if (!opts) return null;
        requested = opts.kind;
        // nothing to reuse (the first checkpoint, or a parent image that is no longer good): take processes
        kind = requested === 'fs' && (!parent?.processImage || check?.imageBad) ? 'full' : requested;
        // A full checkpoint rescans everything (the check against hints drifting); others use hints,
        // plus the files whose stored chunks went bad (read again, so their chunks are rewritten).
        const hintPaths = kind === 'full' || !opts.hintPaths ? undefined : [...opts.hintPaths, ...(check?.rescan ?? [])];
        fs.mkdirSync(imageDir, { recursive: true });
        const tCap = performance.now();
        // frozen: the scan and the reads; the contents are stored after the thaw
        pending = await span(`ck.capture.${hintPaths ? 'hint' : 'full'}`, () => snapshot(d.upper, this.store, { previous, hintPaths }));
        fsCaptureMs = performance.now() - tCap;
        if (kind !== 'fs') {
          const tDump = performance.now();
          await span('ck.criu-dump', () => this.sandboxes.runc.checkpoint(sandboxId, imageDir, path.join(scratch, 'work'), { leaveRunning: true }));
          dumpMs = performance.now() - tDump;
          await opts.afterDump?.();
        }
      } finally {
        thaw(sandboxId);
        frozenMs = performance.now() - tFreeze;
      }
      const tStore = performance.now();
      const snap = await span('ck.capture.store', () => pending.finish());
      fsCaptureMs += performance.now() - tStore;
      let processImage: { digest: string } | { reuseOf: string } | null = null;
      let imageLogical = 0;
      let imageNew = 0;
      let imageChunks: string[] = [];
      if (kind !== 'fs') {
        // the parent's image as the basis: its unchanged pages are named, not stored again, and a
        // changed page is stored as an XOR delta against the parent's page at its address
        const basis = (!check?.imageBad && parent?.processImage) || undefined;
        const affinity = basis ? await span('ck.affinity', () => imageAffinity(this.store, imageDir, basis)) : undefined;
        const put = await span('ck.putDir', () => this.store.putDir(imageDir, { basis, affinity }));
        processImage = { digest: put.recipeDigest };
        imageLogical = put.logicalBytes;
        imageNew = put.newBytes;
        imageChunks = [put.recipeDigest, ...dirRecipeDigests(put.recipe)];
        this.imageCache.set(sandboxId, { digest: put.recipeDigest, chunks: imageChunks });
      } else {
        processImage = { reuseOf: parent!.id };
        imageChunks = check!.imageChunks;
      }
      const verifiedAtMs = await span('ck.verified-at', () => verifiedAtOf(this.store, [snap.digest, ...manifestDigests(snap.manifest), ...imageChunks]));
      const meta: CheckpointMeta = { binds: bindIdentities(rec), sandbox: rec, fsMode: snap.mode, bootId: bootId() };
      if (kind !== requested) meta.escalatedFrom = requested;
      // a dump holds the shells' state itself: a script is only for checkpoints that reuse an image
      if (opts!.shellReplay && kind === 'fs') meta.shellReplay = opts!.shellReplay;
      const ck = await span('ck.commit', () => this.catalog.commitCheckpoint(
        {
          id: ckptId,
          sandboxId,
          parentId,
          kind,
          turn,
          logicalBytes: snap.logicalBytes + imageLogical,
          newBytes: snap.newBytes + imageNew,
          fsManifest: snap.digest,
          processImage,
          effects: opts!.effects ?? null,
          meta,
          verifiedAtMs,
        },
        { refs: [headRef(sandboxId)] },
      ));
      this.manifestCache.set(sandboxId, { digest: snap.digest, manifest: snap.manifest });
      return { checkpoint: ck, kind, frozenMs, dumpMs, fsCaptureMs, totalMs: performance.now() - t0, logicalBytes: ck.logicalBytes, newBytes: ck.newBytes };
    } finally {
      // async: a dump's pages file may be 100s of MiB, and unlinking it held the event loop ~40 ms
      await fs.promises.rm(scratch, { recursive: true, force: true });
    }
  }

  /**
   * Restores checkpoint `ckptId` into sandbox `targetId` (its own sandbox by default, or a new
   * one): files first, then processes. Whatever ran in the target before is killed.
   * Refuses (CKPT_BINDS_CHANGED) when the sandbox's host bind mounts differ from the checkpoint's, unless `force`.
   */
  restore(ckptId: string, opts: { as?: string; force?: boolean; ephemeral?: boolean } = {}): Promise<RestoreResult> {
    if (opts.as !== undefined) checkId('sandbox', opts.as);
    return this.catalog.getCheckpoint(checkId('checkpoint', ckptId)).then((ck) => {
      // The catalog's sandbox id becomes a path too: checked like any caller's.
      const targetId = opts.as ? opts.as : checkId('sandbox', ck.sandboxId);
      // Into its own sandbox (a recovery): the files that did not change since are linked.
      return this.exclusive(targetId, () => this.restoreLocked(ck, targetId, { ...opts, reuseFiles: !opts.as }));
    });
  }

  /**
   * Takes each session shell of a restored sandbox from its image's state to the checkpoint's:
   * runs the replay script the snapshot holds, then checks the state digest.
   */
  private async runShellReplays(sandboxId: string, ckId: string, digests: Record<string, string>): Promise<void> {
    const ch = this.sandboxes.channel(sandboxId);
    for (const [session, want] of Object.entries(digests)) {
      const script = ch.readReplayScript(session);
      await this.sandboxes.exec(sandboxId, script, { session });
      const got = ch.sessionState(session);
      if (got !== want) throw shellReplayMismatch(ckId, session, want, got);
    }
  }

  /** Rolls a sandbox back to one of its own checkpoints. */
  async rollback(sandboxId: string, ckptId: string, opts: { force?: boolean } = {}): Promise<RestoreResult> {
    checkId('sandbox', sandboxId);
    const ck = await this.catalog.getCheckpoint(checkId('checkpoint', ckptId));
    if (ck.sandboxId !== sandboxId) {
      throw precondition('CKPT_OTHER_SANDBOX', `checkpoint ${ckptId} belongs to sandbox '${ck.sandboxId}', not '${sandboxId}'`, `Use 'crab restore ${ckptId} --as NAME' or 'crab fork' to start another sandbox from it.`);
    }
    // A rollback keeps the files that did not change since the checkpoint (hard links).
    return this.exclusive(sandboxId, () => this.restoreLocked(ck, sandboxId, { ...opts, reuseFiles: true }));
  }

  /** Starts `count` new sandboxes from one checkpoint; each has its own id, cgroup and writable layer. */
  async fork(ckptId: string, count: number, opts: { prefix?: string; ephemeral?: boolean } = {}): Promise<RestoreResult[]> {
    if (opts.prefix !== undefined) checkId('fork prefix', opts.prefix);
    const ck = await this.catalog.getCheckpoint(checkId('checkpoint', ckptId));
    const base = opts.prefix ?? `${ck.sandboxId.slice(0, 40)}-fork`;
    const out: RestoreResult[] = [];
    for (let i = 0; i < count; i++) {
      const id = checkId('sandbox', `${base}-${newId('').slice(0, 6)}`);
      out.push(await this.exclusive(id, () => this.restoreLocked(ck, id, { ephemeral: opts.ephemeral, force: true, shareLayer: true })));
    }
    return out;
  }

  private get layersDir(): string {
    return path.join(this.sandboxes.paths.home, 'layers');
  }

  /**
   * Removes shared fork layers that no sandbox on disk and no checkpoint in the catalog names
   * (`layer-gc.ts`), and staging dirs of crashed forks, once older than `graceMs`.
   */
  async gcLayers(graceMs = LAYER_GRACE_MS): Promise<{ removed: string[]; problems: string[] }> {
    const out = { removed: [] as string[], problems: [] as string[] };
    if (!fs.existsSync(this.layersDir)) return out;
    const named = new Set<string>();
    for (const id of fs.readdirSync(this.sandboxes.paths.sandboxes)) {
      if (!fs.existsSync(this.sandboxes.dirs(id).record)) continue;
      try {
        for (const dir of this.sandboxes.record(id).lowerDirs) named.add(dir);
      } catch (err) {
        // Unknown lower dirs: any layer may be in use, so none is removed this time.
        out.problems.push(`layers not collected: record of ${id} unreadable (${(err as Error).message})`);
        return out;
      }
    }
    for (const sb of await this.catalog.listSandboxes()) {
      for (const ck of await this.catalog.listCheckpoints(sb.id)) {
        if (ck.corrupt) {
          // Its lower dirs are unknown: any layer may be one of them.
          out.problems.push(`layers not collected: catalog record of checkpoint ${ck.id} is corrupt (${ck.corrupt})`);
          return out;
        }
        for (const dir of (ck.meta as Partial<CheckpointMeta> | null)?.sandbox?.lowerDirs ?? []) named.add(dir);
      }
    }
    const now = Date.now();
    const entries: LayerEntry[] = [];
    for (const name of fs.readdirSync(this.layersDir)) {
      const p = path.join(this.layersDir, name);
      const owner = ownerFromName(name);
      entries.push({ name, path: p, ageMs: now - fs.statSync(p).mtimeMs, owner, ownerAlive: owner !== null && isAlive(owner) });
    }
    for (const e of layersToRemove(entries, named, graceMs)) {
      // Re-checked and renamed away in one tick: a fork in this process that touched it since is kept,
      // one that comes later materializes the layer again.
      try {
        if (Date.now() - fs.statSync(e.path).mtimeMs < graceMs) continue;
        const doomed = `${e.path}.gc-${newId('')}`;
        fs.renameSync(e.path, doomed);
        await fs.promises.rm(doomed, { recursive: true, force: true });
        out.removed.push(e.name);
      } catch (err) {
        out.problems.push(`layer ${e.name}: ${(err as Error).message}`);
      }
    }
    return out;
  }

  /**
   * The checkpoint's files as a read-only overlay layer, materialized once and shared by every
   * fork of it (each fork adds an empty writable layer on top). Published by rename: a crash
   * leaves no half layer.
   */
  private async sharedLayer(manifestDigest: string, manifest: Manifest): Promise<string> {
    const dir = path.join(this.layersDir, manifestDigest);
    if (fs.existsSync(dir)) {
      // Touched in the same tick as the check: gcLayers' grace period now covers this fork.
      const now = new Date();
      fs.utimesSync(dir, now, now);
      return dir;
    }
    // The owner mark lets gcLayers tell a fork still materializing from one that crashed.
    const staging = `${dir}.${ownerMark()}${newId('')}`;
    try {
      await materialize(manifest, this.store, staging);
      const now = new Date();
      fs.utimesSync(staging, now, now); // materialize gave it the upper's old times: young for gcLayers
      fs.renameSync(staging, dir);
    } catch (err) {
      fs.rmSync(staging, { recursive: true, force: true });
      if (!fs.existsSync(dir)) throw err; // another fork published it first: use theirs
    }
    return dir;
  }

  private async restoreLocked(
    ck: CheckpointRecord,
    targetId: string,
    opts: { force?: boolean; ephemeral?: boolean; shareLayer?: boolean; reuseFiles?: boolean },
  ): Promise<RestoreResult> {
    // a new sandbox: nobody else knows it yet
    if (!fs.existsSync(this.sandboxes.dirs(targetId).root)) return this.restoreClaimed(ck, targetId, opts);
    return this.claimed(targetId, 'restore', () => this.restoreClaimed(ck, targetId, opts));
  }

  private async restoreClaimed(
    ck: CheckpointRecord,
    targetId: string,
    opts: { force?: boolean; ephemeral?: boolean; shareLayer?: boolean; reuseFiles?: boolean },
  ): Promise<RestoreResult> {
    const t0 = performance.now();
    const meta = ck.meta as CheckpointMeta;
    // Lower dirs come from the catalog: only Crab's images and shared fork layers may be mounted.
    checkLowerDirs(this.sandboxes.paths.images, meta?.sandbox?.lowerDirs, `checkpoint ${ck.id}`, [this.layersDir]);
    if (!ck.fsManifest || !ck.processImage) {
      throw new CrabError('CKPT_INCOMPLETE', 'precondition', `checkpoint ${ck.id} has no ${ck.fsManifest ? 'process image' : 'filesystem'} to restore`);
    }
    // Read everything needed from the store before touching the sandbox: a corrupt chunk must
    // make restore refuse while the target is still intact.
    const manifest = await loadManifest(this.store, ck.fsManifest);
    const recipe = await this.store.getJson<DirRecipe>(ck.processImage);

    const sandboxes = this.sandboxes;
    const d = sandboxes.dirs(targetId);
    const existing = fs.existsSync(d.record) ? sandboxes.record(targetId) : null;
    const newSandbox = targetId !== ck.sandboxId;
    if (newSandbox && existing) throw conflict('SANDBOX_EXISTS', `sandbox '${targetId}' already exists`, 'Pick another name with --as.');
    if (!opts.force && existing) {
      const now = bindIdentities(existing);
      if (JSON.stringify(now) !== JSON.stringify(meta.binds ?? [])) {
        throw precondition('CKPT_BINDS_CHANGED', `the host bind mounts of '${targetId}' changed since checkpoint ${ck.id}`, 'Restore anyway with --force, or restore into a new sandbox with --as.', { then: meta.binds, now });
      }
    }
    const rec: SandboxRecord = existing ?? {
      ...meta.sandbox,
      id: targetId,
      createdAt: new Date().toISOString(),
      ephemeral: opts.ephemeral ?? false,
      ownerPid: process.pid,
      ownerStartTicks: processStartTicks(process.pid) ?? 0,
    };
    // A new sandbox gets its own link address; the checkpoint's TCP connections over the old
    // address (an in-sandbox agent's request to the proxy) come back closed, and the agent retries.
    const criuOptions: string[] = [];
    let leased = false;
    if (!existing && meta.sandbox.link) {
      // Its own sandbox, gone with its host (a crash: the directory is lost, the lease file is
      // not): it keeps the address it holds, so the proxy still knows it by its source address.
      const own = !newSandbox && leaseOwner(sandboxes.linkLeaseDir, meta.sandbox.link.address, sandboxes.linkScope) === targetId;
      rec.link = own ? meta.sandbox.link : leaseLink(sandboxes.linkLeaseDir, targetId, sandboxes.linkScope);
      leased = !own;
      if (rec.link.address !== meta.sandbox.link.address) criuOptions.push('tcp-close');
    }
    // A fork shares the checkpoint's files as a lower layer and writes only its own changes.
    const layer = opts.shareLayer && !existing ? await this.sharedLayer(ck.fsManifest, manifest) : null;
    if (layer) rec.lowerDirs = [layer, ...meta.sandbox.lowerDirs];

    // Materialize files and the process image before touching the target: a corrupt or missing
    // chunk makes restore refuse while the sandbox is still intact, and downtime stays short.
    fs.mkdirSync(d.root, { recursive: true });
    // named with their owner: if this process dies, the next Crab process removes them (crash-recovery.ts)
    const staging = `${d.upper}.restore.${ownerMark()}`;
    const scratch = path.join(d.ckpt, `restore-${newId('')}.${ownerMark()}`);
    const tFs = performance.now();
    let processMs = 0;
    // Files unchanged since the checkpoint are linked from the current upper, frozen meanwhile
    // (its state is being discarded; if the restore refuses, it runs on). An inode with the
    // recorded ctime is the file checkpointed only in the same boot: after a host crash a ctime
    // may have reached the disk while the data did not, so then only the bytes (sha256) count.
    const reuse = opts.reuseFiles && existing && !layer ? d.upper : undefined;
    const trustInodes = meta.bootId === bootId();
    const frozen = !!reuse && (await sandboxes.status(targetId)).status === 'running';
    if (frozen) await freeze(targetId);
    try {
      await fs.promises.rm(staging, { recursive: true, force: true });
      if (layer) fs.mkdirSync(staging, { recursive: true });
      else await span('rs.materialize', () => materialize(manifest, this.store, staging, { reuse, trustInodes }));
      const tImg = performance.now();
      await span('rs.materializeDir', () => this.store.materializeDir(recipe, path.join(scratch, 'img')));
      processMs += performance.now() - tImg;

      // Files first: swap in the fresh upper with exactly the checkpoint's tree.
      if (existing) {
        // Linked files share inodes with the old upper: its tasks get SIGKILL while still frozen,
        // so none runs again (they die on the thaw that stop() does) and nothing writes through a link.
        if (frozen) sandboxes.killAll(targetId);
        await sandboxes.stop(targetId);
        await unmount(d.rootfs);
      }
      // async: the old upper may hold thousands of files, and this process serves other sandboxes meanwhile
      await Promise.all([d.upper, d.work].map((p) => fs.promises.rm(p, { recursive: true, force: true })));
      fs.renameSync(staging, d.upper);
      await mountOverlay({ lowerDirs: rec.lowerDirs, upper: d.upper, work: d.work, merged: d.rootfs });
    } catch (err) {
      if (frozen && (await sandboxes.status(targetId)).status === 'paused') thaw(targetId); // refused: the sandbox runs on as it was
      if (leased && rec.link) await releaseLink(sandboxes.linkLeaseDir, rec.link).catch(() => undefined); // the original error says why
      for (const p of [staging, scratch, ...(existing ? [] : [d.root])]) await fs.promises.rm(p, { recursive: true, force: true });
      throw err;
    }
    const fsMs = performance.now() - tFs - processMs;

    // Then processes.
    const tProc = performance.now();
    try {
      fs.mkdirSync(d.bundle, { recursive: true });
      await sandboxes.writeBundle(rec, criuOptions);
      await span('rs.criu-restore', () => sandboxes.runc.restore(targetId, d.bundle, path.join(scratch, 'img'), path.join(scratch, 'work')));
      await span('rs.afterStart', () => sandboxes.afterStart(rec));
    } catch (err) {
      if (!existing) await sandboxes.destroy(targetId).catch(() => undefined); // a failed fork leaves nothing; the error says why
      throw err;
    } finally {
      await fs.promises.rm(scratch, { recursive: true, force: true });
    }
    if (criuOptions.length) await sandboxes.writeBundle(rec); // later checkpoints and restores: no restore-only options
    if (!existing) fs.writeFileSync(d.record, JSON.stringify(rec, null, 2));
    if (meta.shellReplay) await span('rs.shellReplay', () => this.runShellReplays(targetId, ck.id, meta.shellReplay!));
    processMs += performance.now() - tProc;

    await this.ensureCatalogSandbox(rec);
    if (!newSandbox) await this.catalog.setRef(headRef(targetId), ck.id);
    else this.manifestCache.delete(targetId);
    return { sandboxId: targetId, checkpointId: ck.id, fsMs, processMs, totalMs: performance.now() - t0 };
  }
}

/** Refused when a session's state after its replay script is not the one checkpointed: the restore is not what was taken. */
function shellReplayMismatch(ckId: string, session: string, want: string, got: string | null): CrabError {
  return new CrabError(
    'RESTORE_SHELL_STATE',
    'internal',
    `restoring checkpoint ${ckId}: session '${session}' has state ${got ?? 'none'} after its replay script, not the checkpoint's ${want}`,
    `The processes and files are restored; the shell is not. Roll back to an earlier checkpoint, and report this with the sandbox's /run/crab/s/${session}/replay.sh.`,
    { session, want, got },
  );
}

/** The identity of every host bind mount of a sandbox (what must not change under a checkpoint). */
export function bindIdentities(rec: SandboxRecord): BindIdentity[] {
  return (rec.binds ?? []).map((b) => {
    try {
      const st = fs.statSync(b.source);
      return { source: b.source, target: b.target, dev: st.dev, ino: st.ino };
    } catch {
      return { source: b.source, target: b.target, dev: null, ino: null }; // source gone: counts as changed
    }
  });
}
