/** @module CrabService implemented in-process, on top of the sandbox runtime and image builder. */
import type { CrabPaths } from '../core/paths.js';
import { ensureImage, importImage, type Progress } from '../image/image-builder.js';
import { listImages } from '../image/image-store.js';
import { SandboxManager } from '../sandbox/sandbox-manager.js';
import type { CreateSandboxOptions, ExecOptions } from '../sandbox/sandbox.js';
import type { CrabService } from './service.js';

export class LocalService implements CrabService {
  readonly sandboxes: SandboxManager;

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
  exec(id: string, cmd: string, opts: ExecOptions) {
    return this.sandboxes.exec(id, cmd, opts);
  }
  stopSandbox(id: string) {
    return this.sandboxes.stop(id);
  }
  removeSandbox(id: string) {
    return this.sandboxes.remove(id);
  }
  gc() {
    return this.sandboxes.gc();
  }
}
