/** @module Checkpoint types: kinds, options and results of take/restore/fork. */
import type { CheckpointKind, CheckpointRecord } from '../catalog/catalog.js';

export type { CheckpointKind, CheckpointRecord };

export interface TakeOptions {
  kind: CheckpointKind;
  turn?: number | null;
  /** Paths the inspector saw change since the last checkpoint (absolute in the sandbox); full rescan without. */
  hintPaths?: readonly string[];
  /** The turn's effect report, stored with the checkpoint. */
  effects?: unknown;
  /**
   * Called after the process dump, with the sandbox still frozen: CRIU ran in the sandbox's
   * cgroup (ptrace, process_vm_readv…), and an inspector drops those events here, since no
   * process of the sandbox could act meanwhile.
   */
  afterDump?: () => Promise<void>;
  /**
   * Session shells whose state this (fs) checkpoint holds as a script instead of in a process
   * image: by session, the state digest the script must give. The scripts are in the snapshot
   * (`SandboxChannel.replayPath`); a restore runs them and checks the digests.
   */
  shellReplay?: Record<string, string>;
}

export interface TakeResult {
  checkpoint: CheckpointRecord;
  /** The kind actually taken (an `fs` request with no process image in the lineage becomes `full`). */
  kind: CheckpointKind;
  frozenMs: number;
  totalMs: number;
  dumpMs: number;
  fsCaptureMs: number;
  logicalBytes: number;
  newBytes: number;
}

export interface RestoreResult {
  sandboxId: string;
  checkpointId: string;
  fsMs: number;
  processMs: number;
  totalMs: number;
}

/** A host path bound into a sandbox; its identity is recorded with each checkpoint. */
export interface BindIdentity {
  source: string;
  target: string;
  dev: number | null;
  ino: number | null;
}
