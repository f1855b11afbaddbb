/** @module CrabService implemented in-process, on top of the sandbox runtime and image builder. */
import type { CrabPaths } from '../core/paths.js';
import { ensureImage, importImage, type Progress } from '../image/image-builder.js';
import { listImages } from '../image/image-store.js';
import { SandboxManager } from '../sandbox/sandbox-manager.js';
import type { CreateSandboxOptions, ExecOptions } from '../sandbox/sandbox.js';
import type { CrabService } from './service.js';
import { LocalContentStore } from '../store/local-content-store.js';
import { pageIndexBound } from '../store/page-index.js';
import { SqliteCatalog } from '../catalog/sqlite-catalog.js';
import { Checkpointer } from '../checkpoint/checkpointer.js';
import { gcRootExpander } from '../fssnap/index.js';
import type { CheckpointKind } from '../checkpoint/checkpoint.js';

export class LocalService implements CrabService {
  readonly sandboxes: SandboxManager;
  /** Called after every exec (the daemon journals them for `crab record`). */
  readonly execObservers: Array<(id: string, cmd: string, opts: ExecOptions, result: { exitCode: number }, at: number) => void> = [];
  private cr: Promise<Checkpointer> | null = null;

  constructor(
    readonly paths: CrabPaths,
    private readonly progress: Progress = () => undefined,
  ) {
    this.sandboxes = new SandboxManager(paths);
  }

  async listImages() {
    return listImages(this.paths.images);
  }
  buildImage(base: string, packages: string[]) {
    return ensureImage(this.paths.images, base, packages, this.progress);
  }
  importImage(name: string, archivePath: string) {
    return importImage(this.paths.images, name, archivePath, this.progress);
  }
  createSandbox(opts: CreateSandboxOptions) {
    return this.sandboxes.create(opts, this.progress);
  }
  listSandboxes() {
    return this.sandboxes.list();
  }
  getSandbox(id: string) {
    return this.sandboxes.info(id);
  }
  async exec(id: string, cmd: string, opts: ExecOptions) {
    const at = Date.now();
    const r = await this.sandboxes.exec(id, cmd, opts);
    for (const fn of this.execObservers) fn(id, cmd, opts, r, at);
    return r;
  }
  stopSandbox(id: string) {
    return this.sandboxes.stop(id);
  }
  removeSandbox(id: string) {
    return this.sandboxes.remove(id);
  }
  /** Sandbox leftovers first: a removed ephemeral fork frees its layer in the same pass. */
  async gc() {
    const rep = await this.sandboxes.gc();
    const layers = await (await this.checkpointer()).gcLayers();
    return { ...rep, removedLayers: layers.removed, problems: [...rep.problems, ...layers.problems] };
  }

  /** The C/R chain, opened on first use (store directory and SQLite catalog). */
  checkpointer(): Promise<Checkpointer> {
    this.cr ??= LocalContentStore.open(this.paths.store, { pageIndexPages: pageIndexBound(process.env.CRAB_PAGE_INDEX_PAGES) }).then((store) => new Checkpointer(this.sandboxes, store, SqliteCatalog.open(this.paths.catalog)));
    return this.cr;
  }

  async checkpoint(id: string, opts: { kind: CheckpointKind; turn?: number | null; hintPaths?: string[] }) {
    return (await this.checkpointer()).take(id, opts);
  }
  async listCheckpoints(id: string) {
    return (await this.checkpointer()).catalog.listCheckpoints(id);
  }
  async restore(checkpointId: string, opts: { as?: string; force?: boolean }) {
    return (await this.checkpointer()).restore(checkpointId, opts);
  }
  async rollback(id: string, checkpointId: string, opts: { force?: boolean }) {
    return (await this.checkpointer()).rollback(id, checkpointId, opts);
  }
  async fork(checkpointId: string, count: number) {
    return (await this.checkpointer()).fork(checkpointId, count);
  }
  async storeStats() {
    const cr = await this.checkpointer();
    const stats = await cr.store.stats();
    let checkpoints = 0;
    for (const sb of await cr.catalog.listSandboxes()) checkpoints += (await cr.catalog.listCheckpoints(sb.id)).length;
    return { ...stats, checkpoints };
  }
  async storeVerify() {
    return (await this.checkpointer()).store.verify();
  }
  async storeGc() {
    const cr = await this.checkpointer();
    const live = await cr.catalog.liveDigests(gcRootExpander(cr.store));
    return { ...(await cr.store.sweep(live)), liveChunks: live.size };
  }
}
