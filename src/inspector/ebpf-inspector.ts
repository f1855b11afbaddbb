/**
 * @module EbpfInspector: spawns and supervises the native helper (native/bin/crab-inspector),
 * one per host, and talks JSON lines with it. A crashed helper is restarted and the registered
 * sandboxes re-added; any turn that spans a restart is reported as unknown.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { stat } from 'node:fs/promises';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { CrabError } from '../core/errors.js';
import { REPO_ROOT } from '../core/paths.js';
import type { Logger } from '../core/log.js';
import { unknownEffects, type Inspector, type SandboxCgroup, type TurnEffects } from './inspector.js';

export const DEFAULT_HELPER = path.join(REPO_ROOT, 'native', 'bin', 'crab-inspector');

export interface EbpfInspectorOptions {
  /** Helper binary (default native/bin/crab-inspector). */
  binary?: string;
  /** Extra helper arguments (`--no-bpf` runs the aggregator alone, for tests). */
  args?: string[];
  requestTimeoutMs?: number;
  /** First restart delay; doubles up to 5 s while the helper keeps failing. */
  restartDelayMs?: number;
  logger?: Logger;
}

/** The helper's report, as it writes it. */
export interface HelperReport {
  sandbox: string;
  turn: number;
  fs: { paths: { path: string; op: 'created' | 'modified' | 'removed' }[]; overflow: boolean; unresolved: number; bytes_written: number };
  proc: { started: number[]; exited: number[]; execed: number[]; forks: number; execs: number; exits: number };
  listening: { pid: number; family: 'inet' | 'inet6' | 'other'; addr: string; port: number }[];
  external: { kind: 'connect' | 'sendto'; pid: number; addr: string; port: number }[];
  dropped: number;
  events: number;
  /** Absent from helpers built before the counter existed. */
  interactions?: number;
  unknown: string | null;
}

/** Converts the helper's report into TurnEffects. Pure. */
export function toTurnEffects(r: HelperReport): TurnEffects {
  const changes = [...r.fs.paths].sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
  return {
    sandbox: r.sandbox,
    turn: r.turn,
    fs: {
      changedPaths: changes.map((c) => c.path),
      changes,
      bytesWritten: r.fs.bytes_written,
      unresolved: r.fs.unresolved,
      overflow: r.fs.overflow,
    },
    processes: {
      started: r.proc.started.length,
      exited: r.proc.exited.length,
      changed: r.proc.execed.length > 0,
      pids: { started: r.proc.started, exited: r.proc.exited, execed: r.proc.execed },
      forks: r.proc.forks,
      execs: r.proc.execs,
      exits: r.proc.exits,
    },
    listening: r.listening,
    external: r.external.map((x) => ({ kind: x.kind, addr: x.addr, port: x.port, pid: x.pid })),
    dropped: r.dropped,
    events: r.events,
    // An old helper does not count them: then no process may be judged untouched by others.
    interactions: r.interactions ?? Number.POSITIVE_INFINITY,
    unknown: r.unknown,
  };
}

/** cgroup v2 id of a cgroup directory: its inode number. */
export async function cgroupId(dir: string): Promise<number> {
  const st = await stat(dir, { bigint: true });
  if (!st.isDirectory()) throw new CrabError('CGROUP_NOT_DIR', 'invalid', `${dir} is not a cgroup directory`);
  return Number(st.ino);
}

interface Pending {
  resolve: (v: Record<string, unknown>) => void;
  reject: (e: Error) => void;
  timer: NodeJS.Timeout;
}

interface Registered {
  cgroupId: number;
  /** The helper epoch in which the current turn began. */
  epoch: number;
}

export class EbpfInspector implements Inspector {
  private child: ChildProcess | null = null;
  private readonly pending = new Map<number, Pending>();
  private readonly sandboxes = new Map<string, Registered>();
  private nextId = 1;
  /** Increases at each (re)start of the helper. */
  private epoch = 0;
  private closed = false;
  private starting: Promise<void> | null = null;
  private restartTimer: NodeJS.Timeout | null = null;
  private delay: number;
  private readonly binary: string;
  private readonly args: string[];
  private readonly timeoutMs: number;
  /** PID of the running helper (for tests and metrics). */
  helperPid: number | null = null;
  restarts = 0;

  constructor(private readonly opts: EbpfInspectorOptions = {}) {
    this.binary = opts.binary ?? DEFAULT_HELPER;
    this.args = opts.args ?? [];
    this.timeoutMs = opts.requestTimeoutMs ?? 10_000;
    this.delay = opts.restartDelayMs ?? 100;
  }

  /** Starts the helper (idempotent); resolves when it said it is ready. */
  start(): Promise<void> {
    if (this.child && this.helperPid) return Promise.resolve();
    if (!this.starting) this.starting = this.spawnHelper().finally(() => (this.starting = null));
    return this.starting;
  }

  private spawnHelper(): Promise<void> {
    return new Promise((resolve, reject) => {
      let child: ChildProcess;
      try {
        child = spawn(this.binary, this.args, { stdio: ['pipe', 'pipe', 'pipe'] });
      } catch (e) {
        reject(e);
        return;
      }
      this.child = child;
      let ready = false;
      let stderr = '';
      child.stderr?.on('data', (b: Buffer) => {
        stderr = (stderr + b.toString()).slice(-4000);
      });
      child.stdin?.on('error', () => undefined);
      const rl = createInterface({ input: child.stdout! });
      rl.on('line', (line) => {
        let msg: Record<string, unknown>;
        try {
          msg = JSON.parse(line) as Record<string, unknown>;
        } catch {
          this.opts.logger?.warn({ line }, 'inspector: unparsable helper line');
          return;
        }
        if (!ready) {
          if (msg.event === 'ready') {
            ready = true;
            this.helperPid = child.pid ?? null;
            this.epoch++;
            this.delay = this.opts.restartDelayMs ?? 100;
            resolve();
          } else if (msg.event === 'error') {
            reject(new CrabError('INSPECTOR_START', 'unavailable', `inspector helper: ${String(msg.error)}`, 'Run scripts/setup.sh (tracefs, native build) as root.'));
          }
          return;
        }
        const id = typeof msg.id === 'number' ? msg.id : -1;
        const p = this.pending.get(id);
        if (!p) return;
        this.pending.delete(id);
        clearTimeout(p.timer);
        if (msg.ok === true) p.resolve(msg);
        else p.reject(new CrabError(`INSPECTOR_${String(msg.code ?? 'ERROR')}`, 'internal', String(msg.error ?? 'inspector error')));
      });
      child.on('error', (e) => {
        if (!ready) reject(new CrabError('INSPECTOR_START', 'unavailable', `cannot run ${this.binary}: ${e.message}`, "Build it with 'make -C native'."));
      });
      child.on('exit', (code, signal) => {
        if (this.child === child) {
          this.child = null;
          this.helperPid = null;
        }
        for (const [id, p] of this.pending) {
          clearTimeout(p.timer);
          p.reject(new CrabError('INSPECTOR_DOWN', 'unavailable', 'inspector helper exited'));
          this.pending.delete(id);
        }
        if (!ready) {
          reject(new CrabError('INSPECTOR_START', 'unavailable', `inspector helper exited (${code ?? signal}) before it was ready: ${stderr.trim()}`));
          return;
        }
        if (this.closed) return;
        this.opts.logger?.warn({ code, signal, stderr: stderr.trim() }, 'inspector: helper exited; restarting');
        this.scheduleRestart();
      });
    });
  }

  private scheduleRestart(): void {
    if (this.closed || this.restartTimer) return;
    const delay = this.delay;
    this.delay = Math.min(this.delay * 2, 5000);
    this.restartTimer = setTimeout(() => {
      this.restartTimer = null;
      void this.restart();
    }, delay);
    this.restartTimer.unref();
  }

  private async restart(): Promise<void> {
    if (this.closed) return;
    try {
      await this.start();
      this.restarts++;
      for (const [name, r] of this.sandboxes) {
        // the turn in progress spans the restart: r.epoch stays old, effects() will say unknown
        await this.request({ op: 'add', sandbox: name, cgroup_id: r.cgroupId });
      }
    } catch (e) {
      this.opts.logger?.warn({ err: e }, 'inspector: restart failed');
      this.scheduleRestart();
    }
  }

  /** Sends one request; resolves with the reply object. */
  request(req: Record<string, unknown>): Promise<Record<string, unknown>> {
    const child = this.child;
    if (!child || !child.stdin || !this.helperPid) {
      return Promise.reject(new CrabError('INSPECTOR_DOWN', 'unavailable', 'inspector helper is not running'));
    }
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new CrabError('INSPECTOR_TIMEOUT', 'unavailable', `inspector helper did not answer '${String(req.op)}' in ${this.timeoutMs} ms`));
      }, this.timeoutMs);
      this.pending.set(id, { resolve, reject, timer });
      child.stdin!.write(JSON.stringify({ ...req, id }) + '\n');
    });
  }

  async add(sandbox: string, cgroup: SandboxCgroup): Promise<void> {
    const id = cgroup.id ?? (cgroup.path ? await cgroupId(cgroup.path) : undefined);
    if (!id) throw new CrabError('INSPECTOR_BAD_CGROUP', 'invalid', 'add needs a cgroup id or path');
    await this.start();
    await this.request({ op: 'add', sandbox, cgroup_id: id });
    this.sandboxes.set(sandbox, { cgroupId: id, epoch: this.epoch });
  }

  async remove(sandbox: string): Promise<void> {
    if (!this.sandboxes.delete(sandbox)) return;
    try {
      await this.request({ op: 'remove', sandbox });
    } catch (e) {
      if (!(e instanceof CrabError && (e.code === 'INSPECTOR_DOWN' || e.code === 'INSPECTOR_NOT_FOUND'))) throw e;
    }
  }

  /** Never throws for a registered sandbox: when the helper cannot answer, the report is 'unknown'. */
  async effects(sandbox: string, opts: { reset?: boolean } = {}): Promise<TurnEffects> {
    const reg = this.sandboxes.get(sandbox);
    if (!reg) throw new CrabError('INSPECTOR_NOT_FOUND', 'not-found', `sandbox ${sandbox} is not followed by the inspector`);
    const reset = opts.reset ?? true;
    const spansRestart = reg.epoch !== this.epoch;
    let out: TurnEffects;
    try {
      const reply = await this.request({ op: 'effects', sandbox, reset });
      out = toTurnEffects(reply as unknown as HelperReport);
      if (spansRestart && out.unknown === null) out.unknown = 'inspector helper restarted during the turn';
    } catch (e) {
      out = unknownEffects(sandbox, `inspector unavailable: ${e instanceof Error ? e.message : String(e)}`);
      // the next turn begins now, but whatever the helper missed stays unknown until it is back
      if (reset && this.helperPid) reg.epoch = this.epoch;
      return out;
    }
    if (reset) reg.epoch = this.epoch;
    return out;
  }

  async stats(): Promise<Record<string, unknown>> {
    return this.request({ op: 'stats' });
  }

  async close(): Promise<void> {
    this.closed = true;
    if (this.restartTimer) clearTimeout(this.restartTimer);
    const child = this.child;
    this.child = null;
    this.helperPid = null;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    await new Promise<void>((resolve) => {
      const t = setTimeout(() => {
        if (child.pid && child.pid > 1) child.kill('SIGKILL');
      }, 2000);
      child.once('exit', () => {
        clearTimeout(t);
        resolve();
      });
      child.stdin?.end(); // the helper exits on EOF
    });
  }
}
