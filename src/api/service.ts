/**
 * @module The operations Crab offers, as one interface. The CLI calls it directly (LocalService)
 * when no daemon runs, or through the daemon's HTTP API (HttpService) when one does.
 */
import type { ImageInfo } from '../image/image-store.js';
import type { ExecResult } from '../sandbox/channel.js';
import type { CreateSandboxOptions, ExecOptions, SandboxInfo } from '../sandbox/sandbox.js';
import type { GcReport } from '../sandbox/sandbox-manager.js';

export interface CrabService {
  listImages(): Promise<ImageInfo[]>;
  buildImage(base: string, packages: string[]): Promise<ImageInfo>;
  importImage(name: string, archivePath: string): Promise<ImageInfo>;

  createSandbox(opts: CreateSandboxOptions): Promise<SandboxInfo>;
  listSandboxes(): Promise<SandboxInfo[]>;
  getSandbox(id: string): Promise<SandboxInfo>;
  exec(id: string, cmd: string, opts: ExecOptions): Promise<ExecResult>;
  stopSandbox(id: string): Promise<void>;
  removeSandbox(id: string): Promise<void>;
  gc(): Promise<GcReport>;
}
