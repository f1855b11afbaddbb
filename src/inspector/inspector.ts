/**
 * @module The inspector's contract: what a sandbox did during one turn (between two turn
 * boundaries), as far as checkpointing cares. Implemented by EbpfInspector (native helper on
 * syscall/sched tracepoints, filtered to the sandbox's cgroup v2 id).
 */

export type PathOp = 'created' | 'modified' | 'removed';

export interface PathChange {
  /** Absolute path as seen inside the sandbox's root. Directories stand for their subtree on rename. */
  path: string;
  op: PathOp;
}

export interface ListeningSocket {
  pid: number;
  family: 'inet' | 'inet6' | 'other';
  addr: string;
  port: number;
}

export interface ExternalEffect {
  kind: 'connect' | 'sendto';
  addr: string;
  port: number;
  pid?: number;
}

export interface TurnEffects {
  sandbox: string;
  /** Turn number within this inspector's life (0 = the first turn after `add`). */
  turn: number;
  fs: {
    /** Distinct paths with a lasting change this turn (net-zero changes cancelled). */
    changedPaths: string[];
    changes: PathChange[];
    /** Bytes written to regular files (write family return values). */
    bytesWritten: number;
    /** Mutations whose path could not be resolved: files changed, but the list is incomplete. */
    unresolved: number;
    /** More distinct paths than the helper keeps: the list is incomplete (also sets `unknown`). */
    overflow: boolean;
  };
  processes: {
    /** Processes started this turn and still alive at the boundary. */
    started: number;
    /** Processes alive before the turn that exited during it. */
    exited: number;
    /** A surviving process changed (exec'd; or, merged from a ProcessDiff, ran or changed memory). */
    changed: boolean;
    pids?: { started: number[]; exited: number[]; execed: number[] };
    /** Raw counts, including short-lived processes that cancel out. */
    forks?: number;
    execs?: number;
    exits?: number;
  };
  listening: ListeningSocket[];
  external: ExternalEffect[];
  /** Events lost this turn (ring buffer full). Any loss makes `unknown` non-null. */
  dropped: number;
  /**
   * Calls by which one process can change another without the process probe seeing it: signals
   * (other than 0), ptrace, process_vm_writev, splice/tee/vmsplice. Undefined: not counted (treat
   * as some).
   */
  interactions?: number;
  /** Events the helper received for this sandbox this turn (diagnostics). */
  events?: number;
  /** Why this report cannot be trusted (lost events, helper restart, io_uring, overflow…), or null. */
  unknown: string | null;
}

export interface SandboxCgroup {
  /** cgroup v2 id (inode number of the cgroup directory in the unified hierarchy). */
  id?: number;
  /** Path of the cgroup directory, e.g. /sys/fs/cgroup/unified/crab/sb1; its inode is the id. */
  path?: string;
}

export interface Inspector {
  /** Starts following a sandbox; its first turn begins now. */
  add(sandbox: string, cgroup: SandboxCgroup): Promise<void>;
  remove(sandbox: string): Promise<void>;
  /** Effects since the last reset; with reset (the default) a new turn starts (a turn boundary). */
  effects(sandbox: string, opts?: { reset?: boolean }): Promise<TurnEffects>;
  close(): Promise<void>;
}

/** A report saying nothing can be trusted (helper down, sandbox unknown to the helper…). */
export function unknownEffects(sandbox: string, reason: string, turn = -1): TurnEffects {
  return {
    sandbox,
    turn,
    fs: { changedPaths: [], changes: [], bytesWritten: 0, unresolved: 0, overflow: false },
    processes: { started: 0, exited: 0, changed: false },
    listening: [],
    external: [],
    dropped: 0,
    unknown: reason,
  };
}
