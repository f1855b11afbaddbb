/**
 * @module A host the bench can crash: a `crab daemon` in a process of its own, on a CRAB_HOME of
 * its own, driven through its API like any agent framework would drive it.
 *
 * The daemon is started in a cgroup the bench makes for it (v1 freezer and pids), so "the host
 * dies" is exact: every process the daemon started (runc, CRIU mid-dump, helpers) is in that
 * cgroup, and every sandbox process in its sandbox's cgroup. `crash()` freezes all of them at
 * one instant, SIGKILLs them by pid, and removes what a reboot or a lost host takes with it
 * (`host-crash.ts`). `restart()` starts a fresh daemon on the same CRAB_HOME, which knows only
 * what the store and the catalog hold.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { CrabError } from '../core/errors.js';
import { crabPaths, REPO_ROOT, type CrabPaths } from '../core/paths.js';
import { HttpService } from '../api/http-service.js';
import { SandboxManager } from '../sandbox/sandbox-manager.js';
import { LocalContentStore } from '../store/local-content-store.js';
import type { TurnRecord } from '../coordinator/turn-hooks.js';
import type { CheckpointMode } from '../coordinator/turn-controller.js';
import type { RecoverResult } from '../daemon/host.js';
import { crashSandboxes, killCgroup, type CrashReport } from './host-crash.js';

/** Where the bench's daemons live in the v1 hierarchies (sandboxes are under `crab/`). */
export const HOST_CGROUP_PARENT = 'crab-bench';
const HOST_HIERARCHIES = ['freezer', 'pids'] as const;

export interface DaemonHostOptions {
  /** The host's CRAB_HOME (made if missing). `images` is linked to `imagesFrom` when given. */
  home: string;
  /** Unique among the bench's hosts: the cgroup and the log are named after it. */
  name: string;
  upstreamUrl: string;
  policy?: 'fifo' | 'reactive';
  jobs?: number;
  /** Niceness of the daemon and so of everything it starts (the sandboxes too). */
  nice?: number;
  /** Share the images of another CRAB_HOME (a symlink): built once for every host. */
  imagesFrom?: string;
}

/** How a host's daemon is started: Node on the built CLI, under tini as a subreaper when there is one. */
function daemonCommand(args: string[]): string[] {
  const main = path.join(REPO_ROOT, 'dist', 'src', 'cli', 'main.js');
  const tini = ['/usr/bin/tini', '/usr/local/bin/tini'].find((p) => fs.existsSync(p));
  return tini ? [tini, '-s', '--', process.execPath, main, 'daemon', ...args] : [process.execPath, main, 'daemon', ...args];
}

export class DaemonHost {
  readonly paths: CrabPaths;
  readonly api: HttpService;
  /** Read-only use in the bench process: directories, records, session state of the host's sandboxes. */
  readonly sandboxes: SandboxManager;
  private child: ChildProcess | null = null;
  private exited: Promise<void> = Promise.resolve();
  private storePromise: Promise<LocalContentStore> | null = null;
  proxyUrl = '';
  /** Daemons started on this host: 1 + the crashes it came back from. */
  starts = 0;

  private constructor(readonly opts: DaemonHostOptions) {
    this.paths = { ...crabPaths(opts.home), socket: path.join(opts.home, 'run', 'crab.sock') };
    this.api = new HttpService({ socketPath: this.paths.socket });
    fs.mkdirSync(this.paths.run, { recursive: true });
    if (opts.imagesFrom && !fs.existsSync(this.paths.images)) fs.symlinkSync(path.resolve(opts.imagesFrom), this.paths.images);
    this.sandboxes = new SandboxManager(this.paths);
  }

  static async start(opts: DaemonHostOptions): Promise<DaemonHost> {
    const h = new DaemonHost(opts);
    await h.spawn();
    return h;
  }

  get pid(): number | null {
    return this.child?.pid ?? null;
  }

  private cgroupDir(hierarchy: string): string {
    return path.join('/sys/fs/cgroup', hierarchy, HOST_CGROUP_PARENT, this.opts.name);
  }

  private async spawn(): Promise<void> {
    for (const h of HOST_HIERARCHIES) fs.mkdirSync(this.cgroupDir(h), { recursive: true });
    const args = ['--proxy-upstream', this.opts.upstreamUrl, '--no-proxy-link', '--policy', this.opts.policy ?? 'reactive'];
    if (this.opts.jobs) args.push('--jobs', String(this.opts.jobs));
    const log = fs.openSync(path.join(this.paths.run, `daemon-${this.opts.name}.log`), 'a');
    // The shell puts itself in the host's cgroups before it becomes the daemon: nothing it starts escapes them.
    const procs = HOST_HIERARCHIES.map((h) => path.join(this.cgroupDir(h), 'cgroup.procs'));
    const child = spawn('/bin/sh', ['-c', 'echo $$ >"$1" && echo $$ >"$2" && shift 2 && exec "$@"', 'sh', ...procs, ...daemonCommand(args)], {
      env: { ...process.env, CRAB_HOME: this.opts.home, CRAB_SOCKET: this.paths.socket, CRAB_NO_DAEMON: '1', CRAB_LOG_LEVEL: process.env.CRAB_LOG_LEVEL ?? 'warn' },
      stdio: ['ignore', log, log],
    });
    fs.closeSync(log);
    if (this.opts.nice && child.pid) {
      try {
        // before Node has started: the daemon's children (sandboxes included) inherit it
        os.setPriority(child.pid, this.opts.nice);
      } catch (err) {
        throw new CrabError('BENCH_HOST_NICE', 'internal', `cannot renice the bench host's daemon: ${(err as Error).message}`, 'Run the bench as root.', {}, { cause: err });
      }
    }
    this.child = child;
    this.exited = new Promise<void>((r) => child.once('exit', () => r()));
    let gone = false;
    void this.exited.then(() => (gone = true));
    for (const until = Date.now() + 120_000; ; ) {
      if (gone) throw this.startFailed(`exited with ${child.exitCode ?? child.signalCode}`);
      if (await this.api.ping()) break;
      if (Date.now() > until) throw this.startFailed('did not answer within 120 s');
      await sleep(50);
    }
    this.proxyUrl = (await this.api.request<{ url: string | null }>('GET', '/v1/proxy?sandbox=-')).url ?? '';
    this.starts++;
  }

  private startFailed(why: string): CrabError {
    const logFile = path.join(this.paths.run, `daemon-${this.opts.name}.log`);
    const tail = fs.existsSync(logFile) ? fs.readFileSync(logFile, 'utf8').slice(-1500) : '';
    return new CrabError('BENCH_HOST_START', 'internal', `the bench host ${this.opts.name}'s daemon ${why}: ${tail}`, `See ${logFile}.`, { home: this.opts.home });
  }

  /** The host's content store, opened in the bench process to charge its runs' checkpoints (reads only). */
  store(): Promise<LocalContentStore> {
    return (this.storePromise ??= LocalContentStore.open(this.paths.store));
  }

  setMode(id: string, mode: CheckpointMode): Promise<unknown> {
    return this.api.request('PUT', `/v1/sandboxes/${encodeURIComponent(id)}/mode`, { mode });
  }

  async turns(id: string): Promise<TurnRecord[]> {
    return (await this.api.request<{ turns: TurnRecord[] }>('GET', `/v1/proxy?sandbox=${encodeURIComponent(id)}`)).turns;
  }

  setNextTurn(id: string, turn: number): Promise<unknown> {
    return this.api.request('PUT', `/v1/sandboxes/${encodeURIComponent(id)}/next-turn`, { turn });
  }

  recover(id: string): Promise<RecoverResult> {
    return this.api.request<RecoverResult>('POST', `/v1/sandboxes/${encodeURIComponent(id)}/recover`);
  }

  /**
   * The host dies: the daemon and every process it started, every sandbox of this host, at one
   * instant; then what a reboot takes (`crashSandboxes`). Returns what was killed and removed.
   * The daemon is not restarted: call `restart()`.
   */
  async crash(): Promise<CrashReport> {
    const ids = fs.existsSync(this.paths.sandboxes) ? fs.readdirSync(this.paths.sandboxes) : [];
    const report = await crashSandboxes(this.paths, ids, { hostFreezer: this.cgroupDir('freezer'), hostPids: this.cgroupDir('pids') });
    await this.exited;
    this.child = null;
    return report;
  }

  /** A fresh daemon on the same CRAB_HOME (after `crash()`). */
  async restart(): Promise<void> {
    if (this.child) throw new CrabError('BENCH_HOST_RUNNING', 'conflict', `the bench host ${this.opts.name} still runs its daemon`, 'Crash it first.');
    await this.spawn();
  }

  /** Stops the daemon (SIGTERM: it closes cleanly), then its cgroups. The sandboxes must be gone already. */
  async close(): Promise<void> {
    const child = this.child;
    if (child?.pid && child.exitCode === null && child.signalCode === null) {
      child.kill('SIGTERM');
      const t = setTimeout(() => void killCgroup(this.cgroupDir('freezer'), this.cgroupDir('pids')), 30_000);
      await this.exited;
      clearTimeout(t);
    }
    this.child = null;
    // tini and the daemon are gone; a helper that outlived them (a stray runc) is killed with the cgroup
    await killCgroup(this.cgroupDir('freezer'), this.cgroupDir('pids'));
    for (const h of HOST_HIERARCHIES) if (fs.existsSync(this.cgroupDir(h))) fs.rmdirSync(this.cgroupDir(h));
  }
}
