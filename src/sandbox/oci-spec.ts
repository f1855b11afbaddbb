/**
 * @module Builds the OCI runtime config (config.json) of a sandbox: a pure function of its settings.
 * Namespaces: pid, mount, network, uts, ipc. Capabilities and the seccomp deny-list follow the
 * usual container defaults (what Docker gives a container), so agents can chown, install and
 * bind ports while kernel-wide operations stay out of reach.
 */
import { INIT_SCRIPT } from './init-script.js';

export interface SandboxSpecInput {
  id: string;
  hostname: string;
  rootfsPath: string;
  cgroupsPath: string;
  memoryLimitBytes: number;
  pidsLimit: number;
  env?: Record<string, string>;
  binds?: Array<{ source: string; target: string; readonly?: boolean }>;
  /** Join this network namespace (a link to the host proxy) instead of a new, empty one. */
  netnsPath?: string;
  /** CRIU configuration file runc hands to CRIU (restore options such as tcp-close). */
  criuConfigPath?: string;
}

const CAPABILITIES = [
  'CAP_CHOWN',
  'CAP_DAC_OVERRIDE',
  'CAP_FSETID',
  'CAP_FOWNER',
  'CAP_MKNOD',
  'CAP_NET_RAW',
  'CAP_SETGID',
  'CAP_SETUID',
  'CAP_SETFCAP',
  'CAP_SETPCAP',
  'CAP_NET_BIND_SERVICE',
  'CAP_SYS_CHROOT',
  'CAP_KILL',
  'CAP_AUDIT_WRITE',
];

/** Syscalls a sandbox never needs that reach past its own namespaces. */
const DENIED_SYSCALLS = [
  'acct', 'add_key', 'bpf', 'clock_adjtime', 'clock_settime', 'create_module', 'delete_module',
  'finit_module', 'get_kernel_syms', 'get_mempolicy', 'init_module', 'ioperm', 'iopl', 'kcmp',
  'kexec_file_load', 'kexec_load', 'keyctl', 'lookup_dcookie', 'mbind', 'move_pages', 'nfsservctl',
  'open_by_handle_at', 'perf_event_open', 'personality', 'pivot_root', 'process_vm_readv',
  'process_vm_writev', 'ptrace', 'query_module', 'quotactl', 'reboot', 'request_key',
  'set_mempolicy', 'setns', 'settimeofday', 'stime', 'swapoff', 'swapon', 'sysfs', '_sysctl',
  'umount', 'umount2', 'unshare', 'uselib', 'userfaultfd', 'ustat', 'vm86', 'vm86old',
];

export function buildOciSpec(input: SandboxSpecInput): Record<string, unknown> {
  const env = {
    PATH: '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin',
    HOME: '/root',
    TERM: 'dumb',
    LANG: 'C.UTF-8',
    // No restartable sequences: the kernel rewrites a thread's rseq area (its CPU id) whenever it
    // returns to user space on another CPU — as every task does after a freeze or a CRIU dump — so
    // the memory digest would see an idle process "change" only because Crab looked at it.
    GLIBC_TUNABLES: 'glibc.pthread.rseq=0',
    ...input.env,
  };
  return {
    ociVersion: '1.0.2-dev',
    process: {
      terminal: false,
      user: { uid: 0, gid: 0 },
      args: ['/bin/bash', '--noprofile', '--norc', '-c', INIT_SCRIPT],
      env: Object.entries(env).map(([k, v]) => `${k}=${v}`),
      cwd: '/',
      capabilities: Object.fromEntries(
        ['bounding', 'effective', 'permitted'].map((k) => [k, CAPABILITIES]),
      ),
      rlimits: [{ type: 'RLIMIT_NOFILE', hard: 1024, soft: 1024 }],
      noNewPrivileges: true,
    },
    root: { path: input.rootfsPath, readonly: false },
    // runc passes this file to CRIU on checkpoint and restore; its settings override runc's.
    ...(input.criuConfigPath ? { annotations: { 'org.criu.config': input.criuConfigPath } } : {}),
    hostname: input.hostname,
    mounts: [
      { destination: '/proc', type: 'proc', source: 'proc' },
      { destination: '/dev', type: 'tmpfs', source: 'tmpfs', options: ['nosuid', 'strictatime', 'mode=755', 'size=65536k'] },
      { destination: '/dev/pts', type: 'devpts', source: 'devpts', options: ['nosuid', 'noexec', 'newinstance', 'ptmxmode=0666', 'mode=0620', 'gid=5'] },
      { destination: '/dev/shm', type: 'tmpfs', source: 'shm', options: ['nosuid', 'noexec', 'nodev', 'mode=1777', 'size=65536k'] },
      { destination: '/dev/mqueue', type: 'mqueue', source: 'mqueue', options: ['nosuid', 'noexec', 'nodev'] },
      { destination: '/sys', type: 'sysfs', source: 'sysfs', options: ['nosuid', 'noexec', 'nodev', 'ro'] },
      ...(input.binds ?? []).map(bindMount),
    ],
    linux: {
      cgroupsPath: input.cgroupsPath,
      resources: {
        devices: [{ allow: false, access: 'rwm' }],
        memory: { limit: input.memoryLimitBytes, swap: input.memoryLimitBytes },
        pids: { limit: input.pidsLimit },
      },
      namespaces: [{ type: 'pid' }, input.netnsPath ? { type: 'network', path: input.netnsPath } : { type: 'network' }, { type: 'ipc' }, { type: 'uts' }, { type: 'mount' }],
      seccomp: {
        defaultAction: 'SCMP_ACT_ALLOW',
        architectures: ['SCMP_ARCH_X86_64', 'SCMP_ARCH_X86', 'SCMP_ARCH_X32'],
        syscalls: [{ names: DENIED_SYSCALLS, action: 'SCMP_ACT_ERRNO', errnoRet: 1 }],
      },
      maskedPaths: [
        '/proc/acpi', '/proc/asound', '/proc/kcore', '/proc/keys', '/proc/latency_stats', '/proc/timer_list',
        '/proc/timer_stats', '/proc/sched_debug', '/sys/firmware', '/proc/scsi',
      ],
      readonlyPaths: ['/proc/bus', '/proc/fs', '/proc/irq', '/proc/sys', '/proc/sysrq-trigger'],
    },
  };
}

/**
 * A host bind mount: never setuid binaries or device nodes from the host (`nosuid,nodev`), and
 * read-only unless the caller asked for `readonly: false` (`--bind SRC:DST:rw`).
 */
export function bindMount(b: { source: string; target: string; readonly?: boolean }): Record<string, unknown> {
  return { destination: b.target, type: 'bind', source: b.source, options: ['rbind', 'nosuid', 'nodev', b.readonly === false ? 'rw' : 'ro'] };
}

/** Parses sizes like 512m, 1g, 65536k, 1048576 into bytes. */
export function parseSizeBytes(text: string): number | null {
  const m = /^(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?$/i.exec(text.trim());
  if (!m) return null;
  const mult = { '': 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3, t: 1024 ** 4 }[m[2]!.toLowerCase() as '' | 'k' | 'm' | 'g' | 't'];
  return Math.floor(Number(m[1]) * mult);
}
