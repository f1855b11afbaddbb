/** @module Thin adapter over the runc CLI. Every call uses Crab's own runc root, so `runc list` shows only Crab's sandboxes. */
import fs from 'node:fs';
import path from 'node:path';
import { run, type RunResult } from '../core/run.js';
import { CrabError } from '../core/errors.js';

export interface RuncState {
  id: string;
  pid: number;
  status: 'created' | 'running' | 'paused' | 'stopped' | string;
  bundle: string;
}

export class Runc {
  constructor(
    readonly root: string,
    readonly logDir: string,
  ) {
    fs.mkdirSync(root, { recursive: true });
    fs.mkdirSync(logDir, { recursive: true });
  }

  private logFile(id: string): string {
    return path.join(this.logDir, `${id}.runc.log`);
  }

  private async runc(id: string, args: string[], errorCode: string, timeoutMs = 60_000): Promise<RunResult> {
    const log = this.logFile(id);
    try {
      // stdio ignored: a sandbox must never hold a host pipe (it would break CRIU dumps).
      return await run('runc', ['--root', this.root, '--log', log, '--log-format', 'text', ...args], {
        errorCode,
        timeoutMs,
      });
    } catch (err) {
      if (err instanceof CrabError) {
        const logTail = readTail(log);
        throw new CrabError(err.code, err.kind, `${err.message}${logTail ? `\nrunc log: ${logTail}` : ''}`, err.hint, err.details, { cause: err });
      }
      throw err;
    }
  }

  /** Starts the container detached; its init gets no host stdio (runc's own stdio is ignored). */
  async runDetached(id: string, bundle: string): Promise<void> {
    await this.runc(id, ['run', '-d', '--bundle', bundle, id], 'SANDBOX_START_FAILED');
  }

  async state(id: string): Promise<RuncState | null> {
    const quick = this.stateFromFiles(id);
    if (quick !== undefined) return quick;
    try {
      const r = await run('runc', ['--root', this.root, 'state', id], { errorCode: 'RUNC_STATE_FAILED' });
      return JSON.parse(r.stdout) as RuncState;
    } catch (err) {
      if (err instanceof CrabError && /does not exist|not exist/.test(String(err.details.stderr ?? err.message))) return null;
      throw err;
    }
  }

  /**
   * What `runc state` would say, read the way runc 1.1 works it out (its state.json, the init
   * process in /proc, the freezer cgroup, the exec FIFO of a created container), without running
   * runc: a process start per call is most of what an exec or a checkpoint costs the host.
   * undefined when anything is unusual (no state.json yet, freezer mid-transition): ask runc.
   */
  stateFromFiles(id: string): RuncState | null | undefined {
    if (!/^[A-Za-z0-9][A-Za-z0-9_.-]*$/.test(id)) return undefined;
    const dir = path.join(this.root, id);
    let raw: string;
    try {
      raw = fs.readFileSync(path.join(dir, 'state.json'), 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT' && !fs.existsSync(dir)) return null; // runc: container does not exist
      return undefined;
    }
    let st: { init_process_pid?: unknown; init_process_start?: unknown; created?: unknown; cgroup_paths?: Record<string, string>; config?: { labels?: string[] } };
    try {
      st = JSON.parse(raw) as typeof st;
    } catch {
      return undefined; // being rewritten: runc knows
    }
    const pid = st.init_process_pid;
    const start = st.init_process_start;
    if (typeof pid !== 'number' || (typeof start !== 'number' && typeof start !== 'string')) return undefined;
    const bundle = (st.config?.labels ?? []).find((l) => l.startsWith('bundle='))?.slice('bundle='.length) ?? '';
    const freezer = st.cgroup_paths?.freezer;
    if (freezer) {
      let fstate: string | null;
      try {
        fstate = fs.readFileSync(path.join(freezer, 'freezer.state'), 'utf8').trim();
      } catch {
        fstate = null; // no freezer cgroup: runc treats it as not frozen
      }
      if (fstate === 'FREEZING') return undefined;
      if (fstate === 'FROZEN') {
        let self: string;
        try {
          self = fs.readFileSync(path.join(freezer, 'freezer.self_freezing'), 'utf8');
        } catch {
          return undefined;
        }
        if (self.trim() === '1') return { id, pid, status: 'paused', bundle };
      }
    }
    let running = false;
    if (pid > 0) {
      try {
        const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
        const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
        running = f[19] === String(start) && f[0] !== 'Z' && f[0] !== 'X';
      } catch {
        running = false; // no such process
      }
    }
    if (!running) return { id, pid: 0, status: 'stopped', bundle };
    if (fs.existsSync(path.join(dir, 'exec.fifo'))) return { id, pid, status: 'created', bundle };
    return { id, pid, status: 'running', bundle };
  }

  async list(): Promise<RuncState[]> {
    const r = await run('runc', ['--root', this.root, 'list', '-f', 'json'], { errorCode: 'RUNC_LIST_FAILED' });
    return (JSON.parse(r.stdout || 'null') as RuncState[] | null) ?? [];
  }

  async kill(id: string, signal = 'KILL'): Promise<void> {
    await this.runc(id, ['kill', id, signal], 'SANDBOX_KILL_FAILED').catch((err: unknown) => {
      // Already stopped is fine: the goal state is reached.
      if (!(err instanceof CrabError && /not running|process already finished|container not running/.test(err.message))) throw err;
    });
  }

  async delete(id: string): Promise<void> {
    await this.runc(id, ['delete', '--force', id], 'SANDBOX_DELETE_FAILED');
  }

  async pause(id: string): Promise<void> {
    await this.runc(id, ['pause', id], 'SANDBOX_PAUSE_FAILED');
  }

  async resume(id: string): Promise<void> {
    await this.runc(id, ['resume', id], 'SANDBOX_RESUME_FAILED');
  }

  /** `runc checkpoint`: dumps the container's processes into `imageDir` (CRIU). */
  async checkpoint(id: string, imageDir: string, workDir: string, opts: { leaveRunning: boolean }): Promise<RunResult> {
    const args = ['checkpoint', '--image-path', imageDir, '--work-path', workDir, '--tcp-established', '--file-locks'];
    if (opts.leaveRunning) args.push('--leave-running');
    return this.runc(id, [...args, id], 'CRIU_DUMP_FAILED', 120_000);
  }

  /** `runc restore -d`: brings a container back from `imageDir` with the bundle's rootfs. */
  async restore(id: string, bundle: string, imageDir: string, workDir: string): Promise<RunResult> {
    return this.runc(
      id,
      ['restore', '-d', '--bundle', bundle, '--image-path', imageDir, '--work-path', workDir, '--tcp-established', '--file-locks', id],
      'CRIU_RESTORE_FAILED',
      120_000,
    );
  }
}

function readTail(file: string, bytes = 1500): string {
  try {
    const text = fs.readFileSync(file, 'utf8');
    return text.slice(-bytes).trim();
  } catch {
    return ''; // no log written: runc failed before logging
  }
}
