/**
 * @module Time-only processes: pollers whose memory changes although nothing happened to them.
 * Pure.
 *
 * An idle Python server wakes from `select` every half second and runs a little bytecode; a
 * `while True: time.sleep(1)` loop does the same. Their memory differs at every boundary, so the
 * memory digest calls every turn a process change. But if, since the process checkpoint that holds
 * such a process, it took no input and gave no output — no read or write syscall, no packet in its
 * network namespace, no signal, ptrace or process_vm_writev from anyone, no shared memory or unix
 * socket, no new thread — then its only input was the clock. Restoring that checkpoint puts it
 * back in a state it really passed through, from which it runs the same steps again: what any
 * process must accept from a slow scheduler. Such a turn needs no process checkpoint for it.
 *
 * A process busy for more than `maxCpuNs` since its checkpoint is not called time-only even so:
 * the work a crash would lose grows with its CPU time.
 */
import type { ProcChannels, ProcInfo, ProcSnapshot } from './process-probe.js';

/** CPU a time-only process may have used since its checkpoint (pollers use milliseconds a turn). */
export const TIME_ONLY_MAX_CPU_NS = 1_000_000_000;

/**
 * Surviving processes whose change counts as a process change in `diffSnapshots`: with digests
 * on both sides, memory or thread count changed; without, they ran.
 */
export function changedSurvivors(prev: ProcSnapshot, next: ProcSnapshot): number[] {
  const out: number[] = [];
  for (const [k, n] of Object.entries(next.procs)) {
    const p = prev.procs[Number(k)];
    if (!p || p.startTime !== n.startTime) continue;
    const digests = p.memDigest !== undefined && n.memDigest !== undefined;
    const ran = n.runtimeNs > p.runtimeNs || n.cpuTicks > p.cpuTicks || n.threads !== p.threads;
    if (digests ? p.memDigest !== n.memDigest || p.threads !== n.threads : ran) out.push(n.pid);
  }
  return out.sort((a, b) => a - b);
}

/** Why `next` (the same process as `prev`) is not time-only since `prev`, or null if it is. */
export function notTimeOnlyBecause(prev: ProcInfo, next: ProcInfo, channels: ProcChannels | null, maxCpuNs = TIME_ONLY_MAX_CPU_NS): string | null {
  if (prev.cmdline !== next.cmdline || prev.comm !== next.comm) return 'exec';
  if (!prev.io || !next.io) return 'io-unknown';
  const io = (a: number, b: number) => `${a}→${b}`;
  if (prev.io.syscr !== next.io.syscr || prev.io.rchar !== next.io.rchar) return `read (syscr ${io(prev.io.syscr, next.io.syscr)}, rchar ${io(prev.io.rchar, next.io.rchar)})`;
  if (prev.io.syscw !== next.io.syscw || prev.io.wchar !== next.io.wchar) return `wrote (syscw ${io(prev.io.syscw, next.io.syscw)}, wchar ${io(prev.io.wchar, next.io.wchar)})`;
  if (prev.threads !== next.threads) return 'threads';
  if (next.runtimeNs - prev.runtimeNs > maxCpuNs) return 'cpu';
  if (!channels) return 'channels-unknown';
  if (channels.sharedWritableMappings > 0) return 'shared-memory';
  if (channels.otherSockets > 0) return 'unix-socket';
  return null;
}

export interface TimeOnlyInput {
  /** The process snapshot at the last process checkpoint, and now. */
  prev: ProcSnapshot;
  next: ProcSnapshot;
  /** Processes started, exited or exec'd since: then this question does not arise. */
  setChanged: boolean;
  /** Channels of the changed survivors (by pid); missing or null: unknown. */
  channels: Readonly<Record<number, ProcChannels | null>>;
  /** The sandbox network namespace's packet counters are what they were at the checkpoint. */
  netUnchanged: boolean;
  /** Signals, ptrace, process_vm_writev, splice… in the sandbox since the checkpoint. */
  interactions: number;
  maxCpuNs?: number;
}

export interface TimeOnlyVerdict {
  /** Every changed survivor is time-only (and at least one changed). */
  timeOnly: boolean;
  pids: number[];
  /** When not: why (first reason found). */
  why: string | null;
}

export function judgeTimeOnly(input: TimeOnlyInput): TimeOnlyVerdict {
  const pids = changedSurvivors(input.prev, input.next);
  const no = (why: string): TimeOnlyVerdict => ({ timeOnly: false, pids, why });
  if (input.setChanged) return no('processes-started-or-exited');
  if (pids.length === 0) return no('nothing-changed');
  if (!input.netUnchanged) return no('network-traffic');
  if (!(input.interactions === 0)) return no('interactions');
  for (const pid of pids) {
    const why = notTimeOnlyBecause(input.prev.procs[pid]!, input.next.procs[pid]!, input.channels[pid] ?? null, input.maxCpuNs);
    if (why) return no(`${pid}: ${why}`);
  }
  return { timeOnly: true, pids, why: null };
}
