/**
 * @module The operations Crab offers, as one interface. The CLI calls it directly (LocalService)
 * when no daemon runs, or through the daemon's HTTP API (HttpService) when one does.
 */
import type { ImageInfo } from '../image/image-store.js';
import type { ExecResult } from '../sandbox/channel.js';
import type { CreateSandboxOptions, ExecOptions, SandboxInfo } from '../sandbox/sandbox.js';
import type { GcReport } from '../sandbox/sandbox-manager.js';
import type { CheckpointKind, CheckpointRecord, RestoreResult, TakeResult } from '../checkpoint/checkpoint.js';
import type { CorruptChunk, StoreStats, SweepResult } from '../store/content-store.js';

export interface StoreGcResult extends SweepResult {
  liveChunks: number;
}

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

  checkpoint(id: string, opts: { kind: CheckpointKind; turn?: number | null; hintPaths?: string[] }): Promise<TakeResult>;
  listCheckpoints(id: string): Promise<CheckpointRecord[]>;
  restore(checkpointId: string, opts: { as?: string; force?: boolean }): Promise<RestoreResult>;
  rollback(id: string, checkpointId: string, opts: { force?: boolean }): Promise<RestoreResult>;
  fork(checkpointId: string, count: number): Promise<RestoreResult[]>;
  storeStats(): Promise<StoreStats & { checkpoints: number }>;
  storeVerify(): Promise<CorruptChunk[]>;
  storeGc(): Promise<StoreGcResult>;
}
