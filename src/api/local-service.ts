/**
 * @module CrabService implemented in-process, on top of the sandbox runtime and image builder.
 * Every argument is validated here with the API's schemas, so the CLI without a daemon takes
 * exactly the inputs the daemon takes: nothing reaches a path, runc or the channel unchecked.
 */
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
import { checkId } from '../core/ids.js';
import { secureStateDir } from '../core/state-perms.js';
import { BuildImageBody, CheckpointBody, CreateSandboxBody, ExecBody, ForkBody, ImportImageBody, RestoreBody, RollbackBody, parseInput } from './schemas.js';

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
  async buildImage(base: string, packages: string[]) {
    const b = parseInput(BuildImageBody, { base, packages }, 'image');
    return ensureImage(this.paths.images, b.base, b.packages, this.progress);
  }
  async importImage(name: string, archivePath: string) {
    const b = parseInput(ImportImageBody, { name, archivePath }, 'import');
    return importImage(this.paths.images, b.name, b.archivePath, this.progress);
  }
  async createSandbox(opts: CreateSandboxOptions) {
    return this.sandboxes.create(parseInput(CreateSandboxBody, stripUndefined(opts), 'sandbox'), this.progress);
  }
  listSandboxes() {
    return this.sandboxes.list();
  }
  async getSandbox(id: string) {
    return this.sandboxes.info(checkId('sandbox', id));
  }
  async exec(id: string, cmd: string, opts: ExecOptions) {
    checkId('sandbox', id);
    // cwd, env and the command are checked before the channel is called (a NUL in cwd hung it).
    const v = parseInput(ExecBody, stripUndefined({ ...opts, cmd }), 'exec');
    opts = stripUndefined({ session: v.session, timeoutMs: v.timeoutMs, cwd: v.cwd, env: v.env });
    const at = Date.now();
    const r = await this.sandboxes.exec(id, cmd, opts);
    for (const fn of this.execObservers) fn(id, cmd, opts, r, at);
    return r;
  }
  async stopSandbox(id: string) {
    return this.sandboxes.stop(checkId('sandbox', id));
  }
  async removeSandbox(id: string) {
    return this.sandboxes.remove(checkId('sandbox', id));
  }
  /** Sandbox leftovers first: a removed ephemeral fork frees its layer in the same pass. */
  async gc() {
    const rep = await this.sandboxes.gc();
    const layers = await (await this.checkpointer()).gcLayers();
    return { ...rep, removedLayers: layers.removed, problems: [...rep.problems, ...layers.problems] };
  }

  /** The C/R chain, opened on first use (store directory and SQLite catalog). */
  checkpointer(): Promise<Checkpointer> {
    this.cr ??= LocalContentStore.open(this.paths.store, { pageIndexPages: pageIndexBound(process.env.CRAB_PAGE_INDEX_PAGES) }).then((store) => {
      const cr = new Checkpointer(this.sandboxes, store, SqliteCatalog.open(this.paths.catalog));
      secureStateDir(this.paths.home); // the catalog's files, just made with the process's umask
      return cr;
    });
    return this.cr;
  }

  async checkpoint(id: string, opts: { kind: CheckpointKind; turn?: number | null; hintPaths?: string[] }) {
    checkId('sandbox', id);
    return (await this.checkpointer()).take(id, parseInput(CheckpointBody, stripUndefined(opts), 'checkpoint'));
  }
  async listCheckpoints(id: string) {
    return (await this.checkpointer()).catalog.listCheckpoints(checkId('sandbox', id));
  }
  async restore(checkpointId: string, opts: { as?: string; force?: boolean }) {
    checkId('checkpoint', checkpointId);
    return (await this.checkpointer()).restore(checkpointId, parseInput(RestoreBody, stripUndefined(opts), 'restore'));
  }
  async rollback(id: string, checkpointId: string, opts: { force?: boolean }) {
    checkId('sandbox', id);
    const b = parseInput(RollbackBody, stripUndefined({ ...opts, checkpoint: checkpointId }), 'rollback');
    return (await this.checkpointer()).rollback(id, b.checkpoint, { force: b.force });
  }
  async fork(checkpointId: string, count: number) {
    checkId('checkpoint', checkpointId);
    return (await this.checkpointer()).fork(checkpointId, parseInput(ForkBody, { count }, 'fork').count);
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

/** The object without its undefined fields (callers spread optional flags; the schemas are strict about what is there). */
function stripUndefined<T extends object>(o: T): T {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as T;
}
