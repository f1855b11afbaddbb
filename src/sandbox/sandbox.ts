/** @module Sandbox types shared by the runtime, API and CLI. */

import type { SandboxLink } from './net-link.js';

export interface CreateSandboxOptions {
  /** Image name (default debian-bookworm-minbase). */
  image?: string;
  /** Extra Debian packages; a derived image is built once per sorted set and cached. */
  packages?: string[];
  /** Sandbox name; becomes its id. Default: generated `sb-…`. */
  name?: string;
  memoryLimitBytes?: number;
  pidsLimit?: number;
  env?: Record<string, string>;
  /** Removed by `crab gc` once the process that created it (ownerPid) is gone. */
  ephemeral?: boolean;
  /** Host directories bound into the sandbox (nosuid, nodev; read-only unless `readonly: false`). */
  binds?: BindMount[];
  /** A veth link to the host's LLM proxy (an agent inside reaches it at http://10.213.0.1:PORT). */
  link?: boolean;
}

export interface BindMount {
  /** Host path (resolved when the sandbox is created; allowlisted by the daemon). */
  source: string;
  target: string;
  /** Read-only unless exactly false (`--bind SRC:DST:rw`). */
  readonly?: boolean;
}

export interface SandboxRecord {
  id: string;
  image: string;
  lowerDirs: string[];
  memoryLimitBytes: number;
  pidsLimit: number;
  env: Record<string, string>;
  binds?: BindMount[];
  /** The sandbox's link to the host proxy, when created with one. */
  link?: SandboxLink;
  createdAt: string;
  ephemeral: boolean;
  ownerPid: number;
  /** Boot time–relative start of the owner (so a reused pid is not mistaken for the owner). */
  ownerStartTicks: number;
}

export type SandboxStatus = 'running' | 'paused' | 'stopped' | 'missing';

export interface SandboxInfo extends SandboxRecord {
  status: SandboxStatus;
  initPid: number | null;
  sessions: string[];
}

export interface ExecOptions {
  /** Run inside the persistent session of this name (created on first use). */
  session?: string;
  timeoutMs?: number;
  cwd?: string;
  env?: Record<string, string>;
}

export const DEFAULT_MEMORY_BYTES = 512 * 1024 * 1024;
export const DEFAULT_PIDS_LIMIT = 1024;
export const DEFAULT_EXEC_TIMEOUT_MS = 60_000;
