/**
 * @module The sandbox runtime: create, exec, persistent sessions, list, stop, remove and gc.
 *
 * Layout of a sandbox under CRAB_HOME/sandboxes/<id>/: sandbox.json (written last at create,
 * so its absence marks a half-made sandbox), bundle/config.json, bundle/rootfs (overlay mount),
 * upper/ and work/ (overlay), ckpt/ (checkpoint scratch).
 */
import { span } from '../core/prof.js';
import fs from 'node:fs';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { CrabError, conflict, notFound } from '../core/errors.js';
import { checkId, isId, newId } from '../core/ids.js';
import { STALE_AFTER_MS, isAlive, ownerFromName, processStartTicks, readOwnerFile, staleVerdict, writeOwnerFile, type ProcessIdentity } from '../core/owner.js';
import { secureStateDir } from '../core/state-perms.js';
import type { CrabPaths } from '../core/paths.js';
import { run } from '../core/run.js';
import { rootLogger } from '../core/log.js';
import { BASE_IMAGE } from '../image/image-store.js';
import { ensureImage, type Progress } from '../image/image-builder.js';
import { cgroupsPathOf, processesOf, removeCgroupDirs, thaw, type HostProcess } from './cgroup.js';
import { SandboxChannel, type ExecResult } from './channel.js';
import { buildOciSpec } from './oci-spec.js';
import { resolveBind } from './bind-policy.js';
import { LINK_LEASE_DIR, abortGatewayConnections, ensureLink, leaseLink, leases, linkNames, netnsPath, releaseLink } from './net-link.js';
import { isMounted, mountOverlay, unmount } from './overlay.js';
import { Runc } from './runc.js';
import {
  DEFAULT_EXEC_TIMEOUT_MS,
  DEFAULT_MEMORY_BYTES,
  DEFAULT_PIDS_LIMIT,
  type CreateSandboxOptions,
  type ExecOptions,
  type SandboxInfo,
  type SandboxRecord,
  type SandboxStatus,
} from './sandbox.js';

/** How long a command waits for a sandbox frozen by a checkpoint to thaw. */
const PAUSED_WAIT_MS = 30_000;

export interface SandboxDirs {
  root: string;
  bundle: string;
  rootfs: string;
  upper: string;
  work: string;
  ckpt: string;
  record: string;
  /** Who is making the sandbox (`pid startTicks`): until the record exists, gc leaves it to a live maker. */
  owner: string;
}

export interface GcReport {
  removedSandboxes: string[];
  removedContainers: string[];
  unmounted: string[];
  removedCgroups: string[];
  removedStaging: string[];
  /** Link addresses whose sandbox is gone (namespace, veth and lease removed). */
  removedLinks: string[];
  /** Shared fork layers nothing names any more (`crab gc` through the service; the manager alone leaves them). */
  removedLayers: string[];
  problems: string[];
}

/**
 * CRIU options of every dump (a restore uses the lock method its dump recorded).
 * `network-lock skip`: CRIU's iptables lock keeps outside packets from changing TCP state
 * mid-dump. A sandbox's own network namespace has only loopback, whose peers are all in the
 * frozen sandbox; a linked sandbox joins a namespace Crab owns, which CRIU does not lock anyway,
 * and its connection to the proxy carries nothing while the gate holds the response. The lock's
 * four iptables runs cost ~70 ms of frozen time per dump and ~70 ms per restore.
 */
export const CRIU_BASE_OPTIONS = ['network-lock skip'];

export class SandboxManager {
  readonly runc: Runc;
  /** Called after every start or restore of a sandbox (its cgroup is new), and before removal. */
  readonly lifecycle = { started: [] as Array<(id: string) => Promise<void>>, removing: [] as Array<(id: string) => Promise<void>> };
  /** Serialises commands per session (a session runs one command at a time). */
  private readonly sessionQueues = new Map<string, Promise<unknown>>();

  constructor(readonly paths: CrabPaths) {
    // Before anything is created in it: CRAB_HOME and its top-level entries private (0700/0600).
    secureStateDir(paths.home);
    // Made here, 0700, before any part makes them with its own umask.
    for (const d of [paths.run, paths.sandboxes, paths.images, paths.store, paths.tmp, path.join(paths.home, 'layers')]) fs.mkdirSync(d, { recursive: true, mode: 0o700 });
    this.runc = new Runc(path.join(paths.run, 'runc'), path.join(paths.run, 'logs'));
  }

  /** A sandbox's paths. Throws INVALID_NAME unless `id` is an id: the one place a sandbox id becomes a path. */
  dirs(id: string): SandboxDirs {
    const root = path.join(this.paths.sandboxes, checkId('sandbox', id));
    return {
      root,
      bundle: path.join(root, 'bundle'),
      rootfs: path.join(root, 'bundle', 'rootfs'),
      upper: path.join(root, 'upper'),
      work: path.join(root, 'work'),
      ckpt: path.join(root, 'ckpt'),
      record: path.join(root, 'sandbox.json'),
      owner: path.join(root, 'owner'),
    };
  }

  channel(id: string): SandboxChannel {
    return new SandboxChannel(this.dirs(id).rootfs);
  }

  record(id: string): SandboxRecord {
    try {
      return JSON.parse(fs.readFileSync(this.dirs(id).record, 'utf8')) as SandboxRecord;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
        throw notFound('SANDBOX_NOT_FOUND', `no sandbox '${id}'`, "List sandboxes with 'crab sandbox ls'.");
      }
      throw err;
    }
  }

  /**
   * Creates and starts a sandbox. On failure nothing is left behind (mount, container, dirs).
   */
  async create(opts: CreateSandboxOptions = {}, progress?: Progress): Promise<SandboxInfo> {
    const id = opts.name ? checkId('sandbox', opts.name) : newId('sb-');
    // Sources resolved now: the mount takes the directory checked here, not what a symlink names later.
    const binds = (opts.binds ?? []).map((b) => resolveBind(b, { allow: null, home: this.paths.home }));
    const image = await span('sb.ensureImage', () => ensureImage(this.paths.images, opts.image ?? BASE_IMAGE, opts.packages ?? [], progress));
    const d = this.dirs(id);
    try {
      fs.mkdirSync(d.root, { recursive: false, mode: 0o700 });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'EEXIST') throw conflict('SANDBOX_EXISTS', `sandbox '${id}' already exists`, 'Pick another --name or remove it first.');
      throw err;
    }
    writeOwnerFile(d.owner);
    const rec: SandboxRecord = {
      id,
      image: image.name,
      lowerDirs: image.lowerDirs,
      memoryLimitBytes: opts.memoryLimitBytes ?? DEFAULT_MEMORY_BYTES,
      pidsLimit: opts.pidsLimit ?? DEFAULT_PIDS_LIMIT,
      env: opts.env ?? {},
      binds,
      createdAt: new Date().toISOString(),
      ephemeral: opts.ephemeral ?? false,
      ownerPid: process.pid,
      ownerStartTicks: processStartTicks(process.pid) ?? 0,
    };
    try {
      if (opts.link) rec.link = leaseLink(this.linkLeaseDir, id, this.linkScope);
      await this.start(rec);
      fs.writeFileSync(d.record, JSON.stringify(rec, null, 2), { mode: 0o600 });
    } catch (err) {
      await this.destroy(id).catch(() => undefined); // the original error is what the caller needs
      throw err;
    }
    return this.info(id);
  }

  /** Where link address leases live (host-wide: one file per leased address, holding the sandbox id and its scope). */
  get linkLeaseDir(): string {
    return LINK_LEASE_DIR;
  }

  /** The scope of this runtime's leases: its CRAB_HOME. */
  get linkScope(): string {
    return path.resolve(this.paths.home);
  }

  /** Mounts the rootfs, writes the bundle and starts init; brings `lo` up. */
  private async start(rec: SandboxRecord): Promise<void> {
    const d = this.dirs(rec.id);
    await span('sb.mount', () => mountOverlay({ lowerDirs: rec.lowerDirs, upper: d.upper, work: d.work, merged: d.rootfs }));
    await this.writeBundle(rec);
    await span('sb.runcRun', () => this.runc.runDetached(rec.id, d.bundle));
    await span('sb.afterStart', () => this.afterStart(rec));
  }

  /**
   * Writes bundle/config.json (and makes the sandbox's link exist, which it names). `criuOptions`
   * go to bundle/criu.conf, read by CRIU on the next checkpoint or restore (e.g. tcp-close), after
   * CRIU_BASE_OPTIONS.
   */
  async writeBundle(rec: SandboxRecord, criuOptions: string[] = []): Promise<void> {
    const d = this.dirs(rec.id);
    if (rec.link) await ensureLink(rec.link);
    const criuConfigPath = path.join(d.bundle, 'criu.conf');
    fs.writeFileSync(criuConfigPath, [...CRIU_BASE_OPTIONS, ...criuOptions].map((o) => `${o}\n`).join(''));
    const spec = buildOciSpec({
      id: rec.id,
      hostname: rec.id,
      rootfsPath: d.rootfs,
      cgroupsPath: cgroupsPathOf(rec.id),
      memoryLimitBytes: rec.memoryLimitBytes,
      pidsLimit: rec.pidsLimit,
      env: rec.env,
      binds: rec.binds,
      netnsPath: rec.link ? netnsPath(rec.link) : undefined,
      criuConfigPath,
    });
    fs.writeFileSync(path.join(d.bundle, 'config.json'), JSON.stringify(spec, null, 2));
  }

  /** After a start or a restore: loopback up (runc leaves it down, and restore brings it back down), init ready. */
  async afterStart(rec: SandboxRecord): Promise<void> {
    const id = rec.id;
    const st = await span('sb.runcState', () => this.runc.state(id));
    if (!st || st.status !== 'running') throw new CrabError('SANDBOX_START_FAILED', 'internal', `sandbox '${id}' is not running after start (${st?.status ?? 'missing'})`);
    await span('sb.nsenterLo', () => run('nsenter', ['-t', String(st.pid), '-n', 'ip', 'link', 'set', 'lo', 'up'], { errorCode: 'SANDBOX_NET_FAILED' }));
    if (rec.link) await abortGatewayConnections(rec.link);
    await span('sb.waitReady', () => this.channel(id).waitReady());
    for (const fn of this.lifecycle.started) await span('sb.lifecycleStarted', () => fn(id));
  }

  async status(id: string): Promise<{ status: SandboxStatus; initPid: number | null }> {
    const st = await this.runc.state(id);
    if (!st) return { status: 'missing', initPid: null };
    return { status: st.status === 'running' || st.status === 'paused' ? st.status : 'stopped', initPid: st.pid || null };
  }

  async info(id: string): Promise<SandboxInfo> {
    const rec = this.record(id);
    const st = await this.status(id);
    const sessions = st.status === 'running' ? this.channel(id).sessions() : [];
    return { ...rec, ...st, sessions };
  }

  async list(): Promise<SandboxInfo[]> {
    const ids = fs.readdirSync(this.paths.sandboxes).filter((n) => fs.existsSync(this.dirs(n).record));
    return Promise.all(ids.sort().map((id) => this.info(id)));
  }

  async requireRunning(id: string): Promise<void> {
    this.record(id);
    let st = await this.status(id);
    // Frozen for a checkpoint (an in-sandbox agent's turn boundary): that lasts well under a second.
    for (const until = Date.now() + PAUSED_WAIT_MS; st.status === 'paused' && Date.now() < until; st = await this.status(id)) await sleep(20);
    if (st.status !== 'running') {
      throw new CrabError('SANDBOX_NOT_RUNNING', 'precondition', `sandbox '${id}' is ${st.status}`, "Restore it from a checkpoint ('crab restore') or create a new one.");
    }
  }

  /** Runs a command: one-shot (`bash` with cwd /) or in a persistent session. */
  async exec(id: string, cmd: string, opts: ExecOptions = {}): Promise<ExecResult> {
    await this.requireRunning(id);
    const timeoutMs = opts.timeoutMs ?? DEFAULT_EXEC_TIMEOUT_MS;
    const ch = this.channel(id);
    if (!opts.session) return ch.exec(cmd, { timeoutMs, cwd: opts.cwd, env: opts.env });
    const session = checkId('session', opts.session);
    const key = `${id}/${session}`;
    const prev = this.sessionQueues.get(key) ?? Promise.resolve();
    const next = prev
      .catch(() => undefined) // the previous command's failure belongs to its own caller
      .then(async () => {
        if (!ch.sessionExists(session)) await ch.openSession(session);
        const before = new Set(processesOf(id).map((p) => p.hostPid));
        return ch.sessionExec(session, cmd, {
          timeoutMs,
          onTimeout: () => this.killSessionCommand(id, session, before),
        });
      });
    this.sessionQueues.set(key, next);
    try {
      return await next;
    } finally {
      if (this.sessionQueues.get(key) === next) this.sessionQueues.delete(key);
    }
  }

  /** Kills the processes a timed-out session command started (not the shell, not older jobs). */
  private async killSessionCommand(id: string, session: string, before: Set<number>): Promise<void> {
    const shellNsPid = this.channel(id).sessionPid(session);
    const procs = processesOf(id);
    const shell = procs.find((p) => p.nsPid === shellNsPid);
    if (!shell) return;
    const victims = descendants(procs, shell.hostPid).filter((p) => !before.has(p.hostPid));
    for (const p of victims) killPid(p.hostPid);
  }

  /** Kills every process of the sandbox and deletes the runc container; files (upper) stay. */
  async stop(id: string): Promise<void> {
    this.record(id);
    await this.killContainer(id);
  }

  /**
   * SIGKILL to every process in the sandbox's cgroup, by pid. In a frozen sandbox each dies when
   * thawed, before it runs again; `stop` then finds them gone.
   */
  killAll(id: string): void {
    this.record(id);
    for (const p of processesOf(id)) killPid(p.hostPid);
  }

  private async killContainer(id: string): Promise<void> {
    for (let attempt = 0; ; attempt++) {
      try {
        return await this.killContainerOnce(id);
      } catch (err) {
        // A checkpoint's freeze landed between two of runc's status reads after init died (a kill
        // during the freeze; seen once in a demo): runc fails the transition stopped → paused.
        // Thaw, let the freeze give up or finish, and try again.
        if (attempt >= 3 || !(err instanceof CrabError) || !/invalid state transition from stopped to paused/.test(err.message)) throw err;
        thaw(id);
        await sleep(50 * (attempt + 1));
      }
    }
  }

  private async killContainerOnce(id: string): Promise<void> {
    const st = await this.runc.state(id);
    if (!st) return;
    if (st.status === 'paused') await this.runc.resume(id).catch(() => undefined); // a frozen cgroup cannot be killed; best effort
    if (st.status !== 'stopped') await this.runc.kill(id, 'KILL');
    for (let i = 0; i < 200; i++) {
      const s = await this.runc.state(id);
      if (!s || s.status === 'stopped') break;
      // A checkpoint may have frozen the sandbox since (a kill is not serialized with it): a
      // frozen task cannot die, and runc's delete then gives up with "container init still running".
      if (s.status === 'paused') await this.runc.resume(id).catch(() => undefined);
      // A CRIU dump killed with its runc mid-way still ptraces the dying init, which waits for
      // its namespace's tasks while CRIU waits for it: that CRIU (ours) has to go.
      if (i === 50) killCriuTracer(s.pid);
      await sleep(10);
    }
    await this.runc.delete(id);
  }

  /** Removes the sandbox entirely: processes, container, mount, cgroups, files. */
  async remove(id: string): Promise<void> {
    this.record(id);
    await this.destroy(id);
  }

  /** Best-effort teardown of whatever exists for `id`; throws if something could not be removed. */
  async destroy(id: string): Promise<void> {
    const d = this.dirs(id);
    for (const fn of this.lifecycle.removing) await span('sb.lifecycleRemoving', () => fn(id));
    await span('sb.killContainer', () => this.killContainer(id));
    await span('sb.unmount', () => unmount(d.rootfs));
    // The link after the processes: a namespace is only gone once nothing lives in it.
    for (const [address, owner] of leases(this.linkLeaseDir, this.linkScope)) {
      if (owner === id) await releaseLink(this.linkLeaseDir, { address, ...linkNames(id) });
    }
    const leftCgroups = removeCgroupDirs(id);
    if (!leftCgroups.length) fs.rmSync(path.join(this.cgroupTombstones, id), { force: true });
    // Not rmSync: a sandbox's tree may hold thousands of files, and this process serves other sandboxes meanwhile.
    await span('sb.rmRoot', () => fs.promises.rm(d.root, { recursive: true, force: true }));
    if (leftCgroups.length) {
      fs.mkdirSync(this.cgroupTombstones, { recursive: true, mode: 0o700 });
      fs.writeFileSync(path.join(this.cgroupTombstones, id), leftCgroups.join('\n'));
      throw new CrabError('SANDBOX_CLEANUP_INCOMPLETE', 'internal', `cgroups still in use: ${leftCgroups.join(', ')}`, "Run 'crab gc' again in a moment.");
    }
  }

  /**
   * Removes what crashed runs left behind: half-made sandboxes, ephemeral sandboxes whose
   * owner died, runc containers and mounts with no sandbox, cgroups a removal could not delete,
   * staging directories. Scratch that another process is still making (its owner mark names a
   * live process) is left alone unless it is older than an hour; so is everything outside this
   * CRAB_HOME (cgroups are host-wide: only those this CRAB_HOME's sandboxes left are touched).
   */
  async gc(opts: { staleAfterMs?: number } = {}): Promise<GcReport> {
    const staleAfterMs = opts.staleAfterMs ?? STALE_AFTER_MS;
    const rep: GcReport = { removedSandboxes: [], removedContainers: [], unmounted: [], removedCgroups: [], removedStaging: [], removedLinks: [], removedLayers: [], problems: [] };
    /** Sandboxes another live process is making right now: none of their parts is garbage. */
    const inProgress = new Set<string>();
    const dirsOnDisk = new Set(fs.readdirSync(this.paths.sandboxes));
    for (const id of dirsOnDisk) {
      if (!isId(id)) {
        rep.problems.push(`${path.join(this.paths.sandboxes, id)}: not a sandbox id; left alone`);
        continue;
      }
      const d = this.dirs(id);
      let orphan: boolean;
      if (fs.existsSync(d.record)) {
        const rec = this.record(id);
        orphan = rec.ephemeral && !isAlive({ pid: rec.ownerPid, startTicks: rec.ownerStartTicks });
      } else {
        const v = this.halfMadeVerdict(id, staleAfterMs);
        orphan = v.remove;
        if (!orphan) inProgress.add(id);
      }
      if (!orphan) continue;
      try {
        await this.destroy(id);
        rep.removedSandboxes.push(id);
      } catch (err) {
        rep.problems.push(`${id}: ${(err as Error).message}`);
      }
    }
    for (const c of await this.runc.list()) {
      if (!isId(c.id) || inProgress.has(c.id) || fs.existsSync(this.dirs(c.id).record)) continue;
      try {
        await this.killContainer(c.id);
        rep.removedContainers.push(c.id);
      } catch (err) {
        rep.problems.push(`container ${c.id}: ${(err as Error).message}`);
      }
    }
    const prefix = this.paths.sandboxes + path.sep;
    for (const line of fs.readFileSync('/proc/self/mountinfo', 'utf8').split('\n')) {
      const target = line.split(' ')[4];
      if (!target?.startsWith(prefix)) continue;
      const id = target.slice(prefix.length).split(path.sep)[0]!;
      if (!isId(id) || inProgress.has(id) || fs.existsSync(this.dirs(id).record)) continue;
      await unmount(target).then(
        () => rep.unmounted.push(target),
        (err: Error) => rep.problems.push(`${target}: ${err.message}`),
      );
    }
    // Cgroups a removal had to leave (still busy then): named by a tombstone in this CRAB_HOME.
    const live = new Set((await this.runc.list()).map((c) => c.id));
    for (const id of fs.existsSync(this.cgroupTombstones) ? fs.readdirSync(this.cgroupTombstones) : []) {
      if (!isId(id) || live.has(id) || inProgress.has(id) || fs.existsSync(this.dirs(id).record)) continue;
      const left = removeCgroupDirs(id);
      if (left.length === 0) {
        rep.removedCgroups.push(id);
        fs.rmSync(path.join(this.cgroupTombstones, id), { force: true });
      } else rep.problems.push(`cgroup ${id} still has processes`);
    }
    for (const [address, owner] of leases(this.linkLeaseDir, this.linkScope)) {
      if (!isId(owner) || fs.existsSync(this.dirs(owner).root)) continue;
      await releaseLink(this.linkLeaseDir, { address, ...linkNames(owner) }).then(
        () => rep.removedLinks.push(address),
        (err: Error) => rep.problems.push(`link ${address}: ${err.message}`),
      );
    }
    for (const root of [this.paths.images, this.paths.tmp]) {
      for (const n of fs.existsSync(root) ? fs.readdirSync(root) : []) {
        if (!n.startsWith('.staging-') && root === this.paths.images) continue;
        const p = path.join(root, n);
        const v = scratchVerdict(p, ownerFromName(n), staleAfterMs);
        if (!v?.remove) continue;
        try {
          await unmountBelow(p);
          await fs.promises.rm(p, { recursive: true, force: true });
          rep.removedStaging.push(p);
        } catch (err) {
          rep.problems.push(`${p}: ${(err as Error).message}`);
        }
      }
    }
    return rep;
  }

  /** Where `destroy` names sandboxes whose cgroups it could not remove yet (for the next gc). */
  private get cgroupTombstones(): string {
    return path.join(this.paths.run, 'cgroups-left');
  }

  /** Whether a sandbox dir without a record is garbage: its maker (the `owner` file) is gone, or it is older than `staleAfterMs`. */
  private halfMadeVerdict(id: string, staleAfterMs: number): { remove: boolean } {
    const d = this.dirs(id);
    const owner = readOwnerFile(d.owner);
    return scratchVerdict(fs.existsSync(d.owner) ? d.owner : d.root, owner, staleAfterMs) ?? { remove: false };
  }
}

/** `staleVerdict` of the entry at `p` (age from its mtime), or null when it vanished meanwhile. */
function scratchVerdict(p: string, owner: ProcessIdentity | null, staleAfterMs: number): ReturnType<typeof staleVerdict> | null {
  let mtimeMs: number;
  try {
    mtimeMs = fs.lstatSync(p).mtimeMs;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw err;
  }
  return staleVerdict({ owner, ownerAlive: owner !== null && isAlive(owner), ageMs: Date.now() - mtimeMs }, staleAfterMs);
}

function descendants(procs: HostProcess[], rootHostPid: number): HostProcess[] {
  const out: HostProcess[] = [];
  const frontier = [rootHostPid];
  while (frontier.length) {
    const parent = frontier.pop()!;
    for (const p of procs) {
      if (p.ppid === parent) {
        out.push(p);
        frontier.push(p.hostPid);
      }
    }
  }
  return out;
}

/** Sends SIGKILL to one host pid this runtime found in its own sandbox's cgroup. */
function killPid(pid: number): void {
  if (!Number.isInteger(pid) || pid <= 1) return;
  try {
    process.kill(pid, 'SIGKILL');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ESRCH') throw err;
  }
}

export { processStartTicks };

async function unmountBelow(dir: string): Promise<void> {
  const targets = fs
    .readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .map((l) => l.split(' ')[4])
    .filter((t): t is string => !!t && (t === dir || t.startsWith(dir + path.sep)))
    .sort((a, b) => b.length - a.length);
  for (const t of targets) if (isMounted(t)) await unmount(t);
}

/**
 * SIGKILLs the CRIU process that ptraces `pid`, if any: only a process named criu that traces a
 * sandbox's init, i.e. one our checkpoint started through runc.
 */
function killCriuTracer(pid: number): void {
  if (!Number.isInteger(pid) || pid <= 1) return;
  try {
    const tracer = Number(/^TracerPid:\s*(\d+)/m.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? 0);
    if (tracer <= 1 || fs.readFileSync(`/proc/${tracer}/comm`, 'utf8').trim() !== 'criu') return;
    rootLogger.warn({ pid, tracer }, 'a CRIU dump outlived its runc and holds the dying sandbox: killing it');
    process.kill(tracer, 'SIGKILL');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT' && (err as NodeJS.ErrnoException).code !== 'ESRCH') throw err;
  }
}
