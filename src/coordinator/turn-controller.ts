/**
 * @module What happens at a turn boundary of one sandbox, per its checkpoint mode:
 * - `off` / `chat-only`: nothing (no sandbox checkpoints);
 * - `full`: a full checkpoint every boundary;
 * - `crab`: with the sandbox frozen, ask the inspector what the turn did, probe processes
 *   (set, CPU time, memory digests of pollers) and session shells (semantic state digest), let
 *   pollers that only followed the clock pass (`judgeTimeOnly`), decide the granularity
 *   (`decideGranularity`), and take exactly that checkpoint — or none.
 */
import { span } from '../core/prof.js';
import type { Logger } from '../core/log.js';
import type { Checkpointer } from '../checkpoint/checkpointer.js';
import type { TakeResult } from '../checkpoint/checkpoint.js';
import type { SandboxManager } from '../sandbox/sandbox-manager.js';
import { CGROUP_PARENT, processesOf, type HostProcess } from '../sandbox/cgroup.js';
import { CONTROL_DIR } from '../sandbox/init-script.js';
import type { Inspector, TurnEffects } from '../inspector/inspector.js';
import { decideGranularity, type Granularity } from '../inspector/granularity.js';
import { diffSnapshots, netCountersDigest, procChannels, refreshIoCounters, snapshotProcesses, type ProcChannels, type ProcessDiff, type ProcSnapshot } from '../inspector/process-probe.js';
import { changedSurvivors, judgeTimeOnly, type TimeOnlyVerdict } from '../inspector/time-only.js';
import { processesConnectedTo, type Endpoint } from '../inspector/agent-probe.js';
import { replayScript } from '../sandbox/shell-replay.js';
import { HoldLedger } from './hold-ledger.js';

export type CheckpointMode = 'off' | 'chat-only' | 'full' | 'crab';
export const CHECKPOINT_MODES: readonly CheckpointMode[] = ['off', 'chat-only', 'full', 'crab'];

export interface BoundaryResult {
  sandboxId: string;
  turn: number;
  mode: CheckpointMode;
  /** What was decided: a checkpoint kind, 'skip', or 'off' (mode takes none). */
  decision: Granularity | 'off';
  reasons: string[];
  checkpoint: TakeResult | null;
}

/** Process digests are only worth their cost for small processes (see bench/inspector-digest). */
const MAX_DIGEST_BYTES = 64 * 1024 * 1024;

/** Process-side state at a sandbox's last process (or full) checkpoint: what later turns are judged against. */
interface Baseline {
  procs: ProcSnapshot;
  /** The session shells' state digests at the newest checkpoint (a replayed shell moves them on). */
  shells: Record<string, string | null>;
  /** The session shells' state texts and digests in the process image: what a replay starts from. */
  imageShells: Record<string, { text: string | null; digest: string | null }>;
  /** Shell digests at each checkpoint of `imageOf` (a restore of one carries its own over). */
  shellsAt: Record<string, Record<string, string | null>>;
  /** The network namespace's packet counters (netCountersDigest). */
  net: string | null;
  /** Pid inside the sandbox of each host pid in `procs` (a restore keeps those, not host pids). */
  nsPids: Record<number, number>;
  /** Checkpoints whose process image this baseline describes: the process checkpoint and the fs ones after it. */
  imageOf: string[];
}

export class TurnController {
  private readonly modes = new Map<string, CheckpointMode>();
  /** Process and shell state at each sandbox's last process or full checkpoint. */
  private readonly baselines = new Map<string, Baseline>();
  /** The baseline a sandbox had before its last (re)start: a recovery may carry it over. */
  private readonly previous = new Map<string, Baseline>();
  /** Interactions (signals, ptrace…) the inspector counted in each sandbox since that checkpoint. */
  private readonly interactions = new Map<string, number>();
  /** Sandboxes whose next checkpoint must be full (a failed one lost its turn's effects). */
  private readonly forceFull = new Set<string>();
  /** Turns whose gate hit the hold limit: the next boundary after each takes a full checkpoint. */
  private readonly heldTooLong = new HoldLedger();
  /**
   * Restored sandboxes whose next boundary rescans the whole writable layer: restored processes
   * ran before the inspector followed the new cgroup, so its path list may lack their writes.
   */
  private readonly rescanFs = new Set<string>();

  /** Where in-sandbox agents reach the LLM proxy (the link gateway), when the proxy serves links. */
  agentEndpoint: Endpoint | null = null;

  constructor(
    private readonly deps: { sandboxes: SandboxManager; checkpointer: Checkpointer; inspector: Inspector | null; log: Logger },
  ) {}

  setMode(sandboxId: string, mode: CheckpointMode): void {
    this.modes.set(sandboxId, mode);
  }

  mode(sandboxId: string): CheckpointMode {
    return this.modes.get(sandboxId) ?? 'crab';
  }

  /** Starts following a sandbox's effects; call after every start and restore (the cgroup is new). */
  async attach(sandboxId: string): Promise<void> {
    const b = this.baselines.get(sandboxId);
    if (b) this.previous.set(sandboxId, b);
    this.baselines.delete(sandboxId);
    this.interactions.delete(sandboxId);
    if (!this.deps.inspector) return;
    // A restored sandbox has a new cgroup (new id): drop the old registration first.
    await this.deps.inspector.remove(sandboxId).catch(() => undefined);
    await this.deps.inspector.add(sandboxId, { path: `/sys/fs/cgroup/unified/${CGROUP_PARENT}/${sandboxId}` });
  }

  /**
   * The gate of `turn` released its response at the hold limit, before the checkpoint committed:
   * the sandbox's next boundary (a later turn) takes a full checkpoint, reason `gate-hold-limit`.
   */
  holdLimitExceeded(sandboxId: string, turn: number): void {
    this.heldTooLong.add(sandboxId, turn);
  }

  async detach(sandboxId: string): Promise<void> {
    this.heldTooLong.forget(sandboxId);
    this.baselines.delete(sandboxId);
    this.previous.delete(sandboxId);
    this.interactions.delete(sandboxId);
    this.modes.delete(sandboxId);
    this.forceFull.delete(sandboxId);
    this.rescanFs.delete(sandboxId);
    await this.deps.inspector?.remove(sandboxId);
  }

  /**
   * After a restore of checkpoint `restored` into its own sandbox. When the process baseline
   * describes that checkpoint's process image (the usual recovery: the newest checkpoint), it is
   * carried over to the restored processes (same pids inside the sandbox, new host pids): a turn
   * after the restore is judged against the memory digests taken when the image was dumped. What
   * the restored processes did before the inspector followed them is covered by rescanning the
   * writable layer at the next boundary, and by allowing no time-only judgment until the next
   * process checkpoint. Otherwise (an older checkpoint, a restarted daemon) the next checkpoint is full.
   */
  async afterRestore(sandboxId: string, restored?: { id: string }): Promise<void> {
    await this.attach(sandboxId);
    const old = this.previous.get(sandboxId);
    this.previous.delete(sandboxId);
    const carried = old && restored && old.imageOf.includes(restored.id) ? await carryOver({ ...old, shells: old.shellsAt[restored.id] ?? old.shells }, processesOf(sandboxId)) : null;
    if (!carried) {
      this.forceFull.add(sandboxId); // no baseline for the restored processes: be conservative once
      return;
    }
    this.baselines.set(sandboxId, carried);
    this.interactions.set(sandboxId, Number.POSITIVE_INFINITY);
    this.rescanFs.add(sandboxId);
    // A checkpoint that failed before the crash (a kill mid-dump) left forceFull: the restored
    // state is the checkpoint's, fully described by the carried baseline and the rescan.
    this.forceFull.delete(sandboxId);
  }

  /** The checkpoint job of one boundary (run it through the host scheduler). */
  async onBoundary(sandboxId: string, turn: number, opts: { escalate?: boolean } = {}): Promise<BoundaryResult> {
    const mode = this.mode(sandboxId);
    const base = { sandboxId, turn, mode };
    if (mode === 'off' || mode === 'chat-only') return { ...base, decision: 'off', reasons: [], checkpoint: null };
    const held = this.heldTooLong.before(sandboxId, turn);
    const afterHoldLimit = held.length > 0;
    if (mode === 'full' || opts.escalate) {
      const checkpoint = await this.deps.checkpointer.take(sandboxId, { kind: 'full', turn });
      this.heldTooLong.settle(sandboxId, held);
      return { ...base, decision: 'full', reasons: [opts.escalate ? 'escalated' : 'mode-full'], checkpoint };
    }
    let decision: Granularity = 'skip';
    let reasons: string[] = [];
    let pending = null as Baseline | null; // set inside the plan callback (no narrowing to null)
    let nextShells = null as Record<string, string | null> | null;
    let interactions = Number.POSITIVE_INFINITY;
    try {
      const checkpoint = await this.deps.checkpointer.takePlanned(sandboxId, turn, async ({ first }) => {
        const raw = this.deps.inspector ? await span('tc.effects', () => this.deps.inspector!.effects(sandboxId, { reset: true })) : null;
        // CRIU runs in the sandbox's cgroup during dumps and restores: its logs are not the agent's.
        // Nor is an in-sandbox agent's connection to the proxy an external effect.
        const effects = raw && withoutProxyTraffic(withoutControlFiles(raw, [this.deps.sandboxes.dirs(sandboxId).ckpt]), this.agentEndpoint);
        // (the helper counts a write into /proc, a process's mem or fds, as an interaction too)
        interactions = (this.interactions.get(sandboxId) ?? 0) + (effects?.interactions ?? Number.POSITIVE_INFINITY);
        // The sandbox is frozen: its process list is read once for the whole decision.
        const live = processesOf(sandboxId);
        const init = live.find((p) => p.nsPid === 1);
        let net: Promise<string | null> | undefined;
        const netNow = () => (net ??= init ? netCountersDigest(init.hostPid) : Promise.resolve(null));
        const { ignorePids, shells, shellTexts, agents } = await this.crabProcesses(sandboxId, live);
        const baseline = this.baselines.get(sandboxId);
        const procs = await span('tc.snapProcs', () => snapshotProcesses(live.map((p) => p.hostPid), { ignorePids }));
        let probe = baseline ? diffSnapshots(baseline.procs, procs) : null;
        if (probe && probe.changed && !probe.started.length && !probe.exited.length && !probe.execed.length) {
          // Only ran: pollers wake up without changing anything. Compare memory digests.
          const dig = await span('tc.digestRan', () => snapshotProcesses(probe!.ran, { ignorePids, digest: true, maxDigestBytes: MAX_DIGEST_BYTES }));
          for (const [pid, info] of Object.entries(dig.procs)) procs.procs[Number(pid)] = info;
          probe = diffSnapshots(baseline!.procs, procs);
        }
        let timeOnly: TimeOnlyVerdict | null = null;
        if (probe?.changed && baseline && effects && effects.unknown === null) {
          timeOnly = await span('tc.timeOnly', () => timeOnlySince(baseline, procs, probe!, interactions, netNow));
          if (timeOnly.timeOnly) probe = { ...probe, changed: false };
        }
        const d = decideGranularity({
          first: first || !baseline || this.forceFull.has(sandboxId),
          effects,
          probe,
          agentInside: agents.length > 0,
          afterRestore: this.rescanFs.has(sandboxId),
        });
        decision = d.granularity;
        reasons = timeOnly?.timeOnly ? [...d.reasons, `time-only ${timeOnly.pids.join(',')}`] : d.reasons;
        if (afterHoldLimit) {
          // The agent had those turns' responses before their checkpoints committed: take everything.
          decision = 'full';
          reasons = [`gate-hold-limit ${held.join(',')}`, ...reasons.filter((r) => r !== 'first-boundary')];
        }
        const shellChanged = !!baseline && Object.entries(shells).some(([n, st]) => baseline.shells[n] !== st);
        if (shellChanged && (decision === 'skip' || decision === 'fs')) {
          decision = 'fs';
          reasons = [...reasons, 'shell-state'];
        }
        // An fs checkpoint reuses the image: shells that moved on since are replayed from a script, or dumped.
        let shellReplay: Record<string, string> | undefined;
        if (decision === 'fs' && baseline) {
          const ch = this.deps.sandboxes.channel(sandboxId);
          const r = replayShells(baseline, shells, shellTexts, (p) => ch.isDirectoryInside(p));
          if ('refused' in r) {
            decision = 'process';
            reasons = [...reasons, `no shell replay: ${r.refused}`];
          } else if (Object.keys(r.scripts).length) {
            for (const [name, script] of Object.entries(r.scripts)) ch.writeReplayScript(name, script);
            shellReplay = Object.fromEntries(Object.keys(r.scripts).map((n) => [n, shells[n]!]));
            if (shellChanged) reasons = [...reasons, 'shell-replay'];
          }
        }
        nextShells = shells;
        if (decision === 'skip') return null;
        if (decision === 'process' || decision === 'full') {
          // The new baseline: this frozen moment, with digests so later idle turns can be told apart.
          const digested = await span('tc.digestAll', () => snapshotProcesses(Object.keys(procs.procs).map(Number), { ignorePids, digest: true, maxDigestBytes: MAX_DIGEST_BYTES }));
          const imageShells = Object.fromEntries(Object.keys(shells).map((n) => [n, { text: shellTexts[n] ?? null, digest: shells[n] ?? null }]));
          pending = { procs: digested, shells, imageShells, shellsAt: {}, net: await netNow(), nsPids: Object.fromEntries(live.map((p) => [p.hostPid, p.nsPid])), imageOf: [] };
        }
        const hintPaths = effects && d.pathsComplete && decision !== 'full' ? [...effects.fs.changedPaths, CONTROL_DIR] : undefined;
        // Which processes made the probe say "changed" (command lines: pids alone say little later).
        const who = (pids: number[]) => pids.map((pid) => `${pid} ${procs.procs[pid]?.cmdline ?? baseline?.procs.procs[pid]?.cmdline ?? '?'}`.slice(0, 120));
        const probeReport = probe && (probe.changed || timeOnly) ? { started: who(probe.started), exited: who(probe.exited), ran: who(probe.ran), memChanged: who(probe.memChanged), timeOnly: timeOnly ? { ...timeOnly, pids: who(timeOnly.pids) } : undefined } : undefined;
        // CRIU acts in the sandbox during the dump: its syscalls in the cgroup are not the next
        // turn's effects, and its parasite's writes count in each process's io counters.
        const afterDump = async () => {
          if (this.deps.inspector) await this.deps.inspector.effects(sandboxId, { reset: true });
          if (pending) await refreshIoCounters(pending.procs);
        };
        return { kind: decision, hintPaths, afterDump, shellReplay, effects: { ...(effects ?? { unknown: 'no inspector' }), decision, reasons, probe: probeReport } };
      });
      if (checkpoint) {
        this.forceFull.delete(sandboxId);
        this.rescanFs.delete(sandboxId);
        this.heldTooLong.settle(sandboxId, held);
      }
      if (pending && checkpoint) {
        // Processes are in this checkpoint: later turns are judged against it.
        const id = checkpoint.checkpoint.id;
        this.baselines.set(sandboxId, { ...pending, imageOf: [id], shellsAt: { [id]: pending.shells } });
        this.interactions.set(sandboxId, 0);
      } else {
        const b = this.baselines.get(sandboxId);
        if (checkpoint && b) {
          // an fs checkpoint reuses the image; the shells it holds (replayed or not) are now's
          b.imageOf.push(checkpoint.checkpoint.id);
          if (nextShells) b.shells = b.shellsAt[checkpoint.checkpoint.id] = nextShells;
        }
        // Skip or fs: the process baseline stays the last process checkpoint's.
        this.interactions.set(sandboxId, interactions);
      }
      return { ...base, decision, reasons, checkpoint };
    } catch (err) {
      // This turn's effects were consumed: only a full checkpoint is safe next.
      this.forceFull.add(sandboxId);
      throw err;
    }
  }

  /**
   * Processes the signal leaves out, with the shells' states: Crab's own (init, and the session
   * shells, judged semantically instead) and an in-sandbox agent (the process whose request to
   * the proxy is in flight: its memory changes every turn by design).
   */
  private async crabProcesses(
    sandboxId: string,
    procs: readonly HostProcess[],
  ): Promise<{ ignorePids: number[]; shells: Record<string, string | null>; shellTexts: Record<string, string | null>; agents: number[] }> {
    const ch = this.deps.sandboxes.channel(sandboxId);
    // Only a sandbox with a link can reach the proxy's link address: no other pays for the probe.
    const linked = !!this.deps.sandboxes.record(sandboxId).link;
    const agents = this.agentEndpoint && linked ? await processesConnectedTo(procs.map((p) => p.hostPid), this.agentEndpoint) : [];
    const ignoreNs = new Set<number>([1]);
    const shells: Record<string, string | null> = {};
    const shellTexts: Record<string, string | null> = {};
    for (const name of ch.sessions()) {
      try {
        ignoreNs.add(ch.sessionPid(name));
      } catch {
        continue; // session still starting
      }
      shells[name] = ch.sessionState(name);
      shellTexts[name] = ch.sessionStateText(name);
    }
    return { ignorePids: [...procs.filter((p) => ignoreNs.has(p.nsPid)).map((p) => p.hostPid), ...agents], shells, shellTexts, agents };
  }
}

/** Crab's control files (request scripts, command output; CRIU's own scratch) are not the agent's effects. */
export function withoutControlFiles(e: TurnEffects, hostScratchDirs: readonly string[] = []): TurnEffects {
  const ignored = [CONTROL_DIR, ...hostScratchDirs];
  const keep = (p: string) => !ignored.some((d) => p === d || p.startsWith(d + '/'));
  const changedPaths = e.fs.changedPaths.filter(keep);
  const changes = e.fs.changes.filter((c) => keep(c.path));
  const onlyControl = changedPaths.length === 0 && e.fs.unresolved === 0 && !e.fs.overflow;
  return { ...e, fs: { ...e.fs, changedPaths, changes, bytesWritten: onlyControl ? 0 : e.fs.bytesWritten } };
}

/** Connections to the LLM proxy itself (an in-sandbox agent's requests) are not external effects. */
export function withoutProxyTraffic(e: TurnEffects, proxy: Endpoint | null): TurnEffects {
  if (!proxy) return e;
  return { ...e, external: e.external.filter((x) => !(x.addr === proxy.address && x.port === proxy.port)) };
}

/**
 * Whether every process that changed since the last process checkpoint only followed the clock
 * (see inspector/time-only.ts). Reads each changed survivor's channels and the namespace's packet
 * counters (`netNow`); the sandbox is frozen.
 */
async function timeOnlySince(baseline: Baseline, procs: ProcSnapshot, probe: ProcessDiff, interactions: number, netNow: () => Promise<string | null>): Promise<TimeOnlyVerdict> {
  const setChanged = probe.started.length > 0 || probe.exited.length > 0 || probe.execed.length > 0;
  const channels: Record<number, ProcChannels | null> = {};
  if (!setChanged) for (const pid of changedSurvivors(baseline.procs, procs)) channels[pid] = await procChannels(pid);
  const net = setChanged ? null : await netNow();
  return judgeTimeOnly({ prev: baseline.procs, next: procs, setChanged, channels, netUnchanged: net !== null && net === baseline.net, interactions });
}

/**
 * The baseline of a checkpoint's processes, moved onto the same processes after a restore (found by
 * their pid inside the sandbox). Memory digests, threads and command lines carry over; CPU time is
 * set so that every process counts as having run (its memory is compared), and io counters and
 * packet counters are unknown (no time-only judgment). Null when a process cannot be found.
 */
async function carryOver(old: Baseline, live: readonly HostProcess[]): Promise<Baseline | null> {
  const hostByNs: Record<number, number> = Object.fromEntries(live.map((p) => [p.nsPid, p.hostPid]));
  const procs: ProcSnapshot = { takenAt: Date.now(), procs: {} };
  const nsPids: Record<number, number> = {};
  const now = await snapshotProcesses(Object.values(hostByNs));
  for (const info of Object.values(old.procs.procs)) {
    const ns = old.nsPids[info.pid];
    const host = ns === undefined ? undefined : hostByNs[ns];
    const cur = host === undefined ? undefined : now.procs[host];
    if (ns === undefined || host === undefined || !cur) return null;
    procs.procs[host] = { ...info, pid: host, startTime: cur.startTime, cpuTicks: -1, runtimeNs: -1, io: undefined };
    nsPids[host] = ns;
  }
  return { ...old, procs, net: null, nsPids };
}

/**
 * The replay script of each session shell whose state is not the image's any more (none when all
 * are), or why one cannot be replayed. A session the image lacks cannot be replayed.
 */
export function replayShells(
  baseline: Pick<Baseline, 'imageShells'>,
  shells: Record<string, string | null>,
  texts: Record<string, string | null>,
  isDir: (pathInSandbox: string) => boolean = () => true,
): { scripts: Record<string, string> } | { refused: string } {
  const scripts: Record<string, string> = {};
  for (const [name, digest] of Object.entries(shells)) {
    const image = baseline.imageShells[name];
    if (image && image.digest === digest) continue;
    const from = image?.text;
    const to = texts[name];
    if (!from || !to || !digest) return { refused: `session ${name} has no state in the image to start from` };
    // the digest is `cksum` of the text ("CRC SIZE"): a text read apart from its digest would be replayed to the wrong state
    if (Number(digest.split(' ')[1]) !== Buffer.byteLength(to)) return { refused: `session ${name}: its state text and digest disagree` };
    const r = replayScript(from, to, isDir);
    if ('refused' in r) return { refused: `session ${name}: ${r.refused}` };
    scripts[name] = r.script;
  }
  return { scripts };
}
