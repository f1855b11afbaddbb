/**
 * @module Process-state probe without soft-dirty: a snapshot of a sandbox's processes (from its
 * cgroup) with per-process CPU time and, optionally, a digest of writable private memory; and a
 * pure diff. A turn changed process state when the process set changed, or a surviving process
 * ran (CPU time grew), or (with digests) its writable memory changed.
 *
 * When to use the digest: CPU time alone over-reports (a process that woke up to find nothing to
 * do "ran"). The digest tells those apart, at the cost of reading all writable private memory
 * (bench/inspector-digest.ts on this host: 0.9–1.5 GB/s, i.e. 45 ms for a 64 MiB node process,
 * 375 ms for 307 MiB; stat+schedstat alone: ~1–4 ms). A process checkpoint costs ~0.25 s, so use
 * the digest only for processes that ran this turn and have < ~100 MiB of writable memory; skip
 * it (cap maxDigestBytes) above that and take the process checkpoint.
 */
import { createHash } from 'node:crypto';
import { open, readFile, readdir, readlink } from 'node:fs/promises';
import path from 'node:path';

export interface ProcInfo {
  pid: number;
  comm: string;
  cmdline: string;
  /** Start time in clock ticks since boot (with pid: the process identity). */
  startTime: number;
  /** utime+stime of the whole process, in clock ticks (10 ms). */
  cpuTicks: number;
  /** Sum of the threads' on-CPU time in ns (/proc/PID/task/TID/schedstat); more precise than ticks. */
  runtimeNs: number;
  threads: number;
  /** Read/write syscall counters (/proc/PID/io), cumulative over the process's life. */
  io?: IoCounters;
  /** sha256 of writable private memory, when requested and small enough. */
  memDigest?: string;
  /** Bytes the digest covered. */
  memBytes?: number;
}

/** /proc/PID/io counters of the read and write syscall families (pipes, ttys and files alike). */
export interface IoCounters {
  rchar: number;
  wchar: number;
  syscr: number;
  syscw: number;
}

/** Pure: the counters of /proc/PID/io text; null if any is missing. */
export function parseIo(text: string): IoCounters | null {
  const get = (k: string) => {
    const m = new RegExp(`^${k}:\\s*(\\d+)$`, 'm').exec(text);
    return m ? Number(m[1]) : Number.NaN;
  };
  const io = { rchar: get('rchar'), wchar: get('wchar'), syscr: get('syscr'), syscw: get('syscw') };
  return Object.values(io).every(Number.isFinite) ? io : null;
}

export interface ProcSnapshot {
  takenAt: number;
  procs: Record<number, ProcInfo>;
}

export interface ProbeOptions {
  /** Host PIDs to leave out (the runtime's persistent-session shells, an in-sandbox agent). */
  ignorePids?: readonly number[];
  /** Process names (comm, or a RegExp on comm) to leave out. */
  ignoreComm?: readonly (string | RegExp)[];
  /** Compute memory digests. */
  digest?: boolean;
  /** Skip the digest (memDigest undefined) above this many writable bytes per process (default 256 MiB). */
  maxDigestBytes?: number;
}

export interface ProcessDiff {
  started: number[];
  exited: number[];
  /** Surviving processes whose CPU time grew. */
  ran: number[];
  /** Surviving processes whose command line changed (exec). */
  execed: number[];
  /** Surviving processes whose memory digest changed (only when both snapshots have digests). */
  memChanged: number[];
  /** Whether process state changed: set changed, exec, or ran (and, with digests, memory changed). */
  changed: boolean;
}

/** Host PIDs in a cgroup directory (v2 cgroup.procs, or a v1 pids/freezer controller's tasks). */
export async function cgroupPids(cgroupDir: string): Promise<number[]> {
  let text: string;
  try {
    text = await readFile(path.join(cgroupDir, 'cgroup.procs'), 'utf8');
  } catch {
    text = await readFile(path.join(cgroupDir, 'tasks'), 'utf8');
  }
  const pids = new Set<number>();
  for (const l of text.split('\n')) {
    const n = Number.parseInt(l, 10);
    if (n > 0) pids.add(n);
  }
  return [...pids].sort((a, b) => a - b);
}

/** Parses /proc/PID/stat (comm may contain spaces and parentheses). */
export function parseStat(text: string): { comm: string; utime: number; stime: number; startTime: number } | null {
  const open = text.indexOf('(');
  const close = text.lastIndexOf(')');
  if (open < 0 || close < open) return null;
  const comm = text.slice(open + 1, close);
  const f = text.slice(close + 2).trim().split(/\s+/);
  // f[0] is field 3 (state); utime is field 14, stime 15, starttime 22
  const utime = Number(f[11]);
  const stime = Number(f[12]);
  const startTime = Number(f[19]);
  if (![utime, stime, startTime].every(Number.isFinite)) return null;
  return { comm, utime, stime, startTime };
}

function ignored(pid: number, comm: string, opts: ProbeOptions): boolean {
  if (opts.ignorePids?.includes(pid)) return true;
  for (const c of opts.ignoreComm ?? []) {
    if (typeof c === 'string' ? c === comm : c.test(comm)) return true;
  }
  return false;
}

async function runtimeNs(pid: number): Promise<{ ns: number; threads: number }> {
  let ns = 0;
  let threads = 0;
  let tids: string[];
  try {
    tids = await readdir(`/proc/${pid}/task`);
  } catch {
    return { ns: 0, threads: 0 };
  }
  for (const tid of tids) {
    try {
      const t = await readFile(`/proc/${pid}/task/${tid}/schedstat`, 'utf8');
      ns += Number(t.split(' ')[0]) || 0;
      threads++;
    } catch {
      /* the thread ended */
    }
  }
  return { ns, threads };
}

/** Writable private mappings of a process, from /proc/PID/maps. */
export function writableRegions(maps: string): { start: number; end: number; name: string }[] {
  const out: { start: number; end: number; name: string }[] = [];
  for (const line of maps.split('\n')) {
    const m = /^([0-9a-f]+)-([0-9a-f]+) (\S{4}) \S+ \S+ \S+\s*(.*)$/.exec(line);
    if (!m) continue;
    const perms = m[3]!;
    const name = m[4] ?? '';
    if (perms[1] !== 'w' || perms[3] !== 'p') continue;
    if (name === '[vvar]' || name === '[vsyscall]' || name === '[vvar_vclock]') continue;
    out.push({ start: Number.parseInt(m[1]!, 16), end: Number.parseInt(m[2]!, 16), name });
  }
  return out;
}

/**
 * x86-64 sleeps whose time arguments the kernel or CRIU rewrite while the task sleeps: an
 * interrupted sleep writes its remaining time to `rem`, and a CRIU dump (which Crab's checkpoints
 * are) rewrites `req` to the remaining time before restarting the call. Left in the digest, a
 * `sleep` would look changed at every boundary only because Crab looked at it. Masked: the 16
 * bytes at those pointers while the thread is blocked in the call (a restored process sleeps for
 * its checkpoint's remaining time). nr → argument indexes.
 */
const TIME_ARGS: Record<number, number[]> = {
  35: [0, 1], // nanosleep(req, rem)
  230: [2, 3], // clock_nanosleep(clock, flags, req, rem)
  23: [4], // select(n, r, w, x, timeout): Linux updates the timeout
  270: [4], // pselect6(n, r, w, x, timeout, sigmask)
  // restart_syscall, with the interrupted call's registers: nanosleep's or clock_nanosleep's
  // pointers (clock ids and flags are small numbers, not pointers).
  219: [0, 1, 2, 3],
};
const TIME_OUTPUT_BYTES = 16; // struct timespec / timeval
/** Below this, an argument is a number (flags, clock ids), not a user pointer. */
const MIN_USER_POINTER = 0x10000;

/**
 * Pure: the user memory a blocked sleep's time arguments occupy, from the text of
 * /proc/PID/task/TID/syscall ("nr a1 … a6 sp pc", or "running", or "-1 sp pc").
 */
export function timeOutputRanges(syscallText: string): { start: number; end: number }[] {
  const f = syscallText.trim().split(/\s+/);
  if (f.length < 7) return [];
  return (TIME_ARGS[Number(f[0])] ?? [])
    .map((i) => Number.parseInt(f[1 + i]!, 16))
    .filter((ptr) => ptr >= MIN_USER_POINTER)
    .map((ptr) => ({ start: ptr, end: ptr + TIME_OUTPUT_BYTES }));
}

async function sleepingTimeOutputs(pid: number): Promise<{ start: number; end: number }[]> {
  const tids = await readdir(`/proc/${pid}/task`).catch(() => [] as string[]);
  const out: { start: number; end: number }[] = [];
  for (const tid of tids) out.push(...timeOutputRanges(await readFile(`/proc/${pid}/task/${tid}/syscall`, 'utf8').catch(() => '')));
  return out;
}

/** Zeroes, in `buf` (which holds memory from address `at`), the bytes inside any of `ranges`. */
function maskRanges(buf: Buffer, at: number, ranges: readonly { start: number; end: number }[]): void {
  for (const r of ranges) {
    const from = Math.max(r.start, at);
    const to = Math.min(r.end, at + buf.length);
    if (from < to) buf.fill(0, from - at, to - at);
  }
}

/**
 * sha256 over the process's writable private memory; undefined when larger than maxBytes or
 * unreadable. The time arguments of blocked sleeps are left out (see TIME_ARGS).
 */
export async function memoryDigest(pid: number, maxBytes = 256 << 20): Promise<{ digest: string; bytes: number } | undefined> {
  let maps: string;
  try {
    maps = await readFile(`/proc/${pid}/maps`, 'utf8');
  } catch {
    return undefined;
  }
  const regions = writableRegions(maps);
  const total = regions.reduce((s, r) => s + (r.end - r.start), 0);
  if (total > maxBytes) return undefined;
  const masked = await sleepingTimeOutputs(pid);
  const h = createHash('sha256');
  const buf = Buffer.allocUnsafe(1 << 20);
  let bytes = 0;
  let fh;
  try {
    fh = await open(`/proc/${pid}/mem`, 'r');
  } catch {
    return undefined;
  }
  try {
    for (const r of regions) {
      h.update(`${r.start.toString(16)}-${r.end.toString(16)}\n`);
      for (let pos = r.start; pos < r.end; ) {
        const len = Math.min(buf.length, r.end - pos);
        let n: number;
        try {
          ({ bytesRead: n } = await fh.read(buf, 0, len, pos));
        } catch {
          break; // unreadable region (e.g. guard pages); its bounds are still in the digest
        }
        if (n <= 0) break;
        maskRanges(buf.subarray(0, n), pos, masked);
        h.update(buf.subarray(0, n));
        bytes += n;
        pos += n;
      }
    }
  } finally {
    await fh.close();
  }
  return { digest: h.digest('hex'), bytes };
}

/** Snapshot of the given processes (those that vanish while reading are left out). */
export async function snapshotProcesses(pids: readonly number[], opts: ProbeOptions = {}): Promise<ProcSnapshot> {
  const procs: Record<number, ProcInfo> = {};
  for (const pid of pids) {
    if (!Number.isInteger(pid) || pid <= 1) continue;
    let st;
    let cmdline: string;
    try {
      st = parseStat(await readFile(`/proc/${pid}/stat`, 'utf8'));
      cmdline = (await readFile(`/proc/${pid}/cmdline`, 'utf8')).replace(/\0+$/, '').split('\0').join(' ');
    } catch {
      continue;
    }
    if (!st || ignored(pid, st.comm, opts)) continue;
    const rt = await runtimeNs(pid);
    const io = await readIo(pid);
    const info: ProcInfo = {
      pid,
      comm: st.comm,
      cmdline,
      startTime: st.startTime,
      cpuTicks: st.utime + st.stime,
      runtimeNs: rt.ns,
      threads: rt.threads,
      io,
    };
    if (opts.digest) {
      const d = await memoryDigest(pid, opts.maxDigestBytes);
      if (d) {
        info.memDigest = d.digest;
        info.memBytes = d.bytes;
      }
    }
    procs[pid] = info;
  }
  return { takenAt: Date.now(), procs };
}

async function readIo(pid: number): Promise<IoCounters | undefined> {
  return parseIo(await readFile(`/proc/${pid}/io`, 'utf8').catch(() => '')) ?? undefined;
}

/** Re-reads the io counters of a snapshot's processes (after CRIU's parasite wrote from inside them). */
export async function refreshIoCounters(snap: ProcSnapshot): Promise<void> {
  for (const info of Object.values(snap.procs)) {
    info.io = await readIo(info.pid);
  }
}

/** Snapshot of every process in a cgroup. */
export async function probeCgroup(cgroupDir: string, opts: ProbeOptions = {}): Promise<ProcSnapshot> {
  return snapshotProcesses(await cgroupPids(cgroupDir), opts);
}

/**
 * Pure diff of two snapshots. With digests on both sides, a process that ran but whose writable
 * memory is unchanged does not count as changed (it ran, found nothing to do).
 */
export function diffSnapshots(prev: ProcSnapshot, next: ProcSnapshot): ProcessDiff {
  const started: number[] = [];
  const exited: number[] = [];
  const ran: number[] = [];
  const execed: number[] = [];
  const memChanged: number[] = [];
  let changed = false;
  for (const [k, n] of Object.entries(next.procs)) {
    const p = prev.procs[Number(k)];
    if (!p || p.startTime !== n.startTime) {
      started.push(n.pid);
      if (p) exited.push(p.pid); // pid reused
      continue;
    }
    if (p.cmdline !== n.cmdline || p.comm !== n.comm) execed.push(n.pid);
    const didRun = n.runtimeNs > p.runtimeNs || n.cpuTicks > p.cpuTicks || n.threads !== p.threads;
    if (didRun) ran.push(n.pid);
    const digests = p.memDigest !== undefined && n.memDigest !== undefined;
    const memDiff = digests && p.memDigest !== n.memDigest;
    if (memDiff) memChanged.push(n.pid);
    if (digests ? memDiff || n.threads !== p.threads : didRun) changed = true;
  }
  for (const [k, p] of Object.entries(prev.procs)) {
    if (!next.procs[Number(k)]) exited.push(p.pid);
  }
  if (started.length || exited.length || execed.length) changed = true;
  const num = (a: number, b: number) => a - b;
  return {
    started: started.sort(num),
    exited: exited.sort(num),
    ran: ran.sort(num),
    execed: execed.sort(num),
    memChanged: memChanged.sort(num),
    changed,
  };
}

/**
 * What of a process can carry input from other processes without a read or write syscall (those
 * are in IoCounters): writable shared mappings (shared memory, MAP_SHARED files) and sockets that
 * are neither TCP nor UDP (unix, netlink, packet: their traffic is in no per-namespace counter).
 */
export interface ProcChannels {
  sharedWritableMappings: number;
  /** Sockets not listed in the process's network namespace's tcp/tcp6/udp/udp6 tables. */
  otherSockets: number;
}

/** Pure: socket inode numbers of /proc/net/{tcp,udp}[6] text (column 10, "inode"). */
export function inetSocketInodes(table: string): number[] {
  const out: number[] = [];
  for (const line of table.split('\n').slice(1)) {
    const f = line.trim().split(/\s+/);
    if (f.length > 9) out.push(Number(f[9]));
  }
  return out.filter((n) => Number.isFinite(n) && n > 0);
}

/** Pure: writable shared mappings in /proc/PID/maps text. */
export function sharedWritableMappings(maps: string): number {
  let n = 0;
  for (const line of maps.split('\n')) {
    const perms = line.split(' ')[1];
    if (perms && perms[1] === 'w' && perms[3] === 's') n++;
  }
  return n;
}

/** The process's channels (null when it vanished or cannot be read: treat as unknown). */
export async function procChannels(pid: number): Promise<ProcChannels | null> {
  try {
    const maps = await readFile(`/proc/${pid}/maps`, 'utf8');
    const inet = new Set<number>();
    for (const t of ['tcp', 'tcp6', 'udp', 'udp6']) {
      for (const ino of inetSocketInodes(await readFile(`/proc/${pid}/net/${t}`, 'utf8').catch(() => ''))) inet.add(ino);
    }
    let otherSockets = 0;
    for (const fd of await readdir(`/proc/${pid}/fd`)) {
      const target = await readlink(`/proc/${pid}/fd/${fd}`).catch(() => '');
      const m = /^socket:\[(\d+)\]$/.exec(target);
      if (m && !inet.has(Number(m[1]))) otherSockets++;
    }
    return { sharedWritableMappings: sharedWritableMappings(maps), otherSockets };
  } catch {
    return null;
  }
}

/**
 * Digest of the network namespace's SNMP counters as seen by `pid` (/proc/PID/net/snmp and
 * snmp6): any TCP segment or UDP datagram sent or received in the namespace, loopback included,
 * changes it. Null when unreadable.
 */
export async function netCountersDigest(pid: number): Promise<string | null> {
  try {
    const h = createHash('sha256');
    h.update(await readFile(`/proc/${pid}/net/snmp`, 'utf8'));
    h.update(await readFile(`/proc/${pid}/net/snmp6`, 'utf8').catch(() => ''));
    return h.digest('hex');
  } catch {
    return null;
  }
}
