/**
 * @module One replay of a trace in one mode with at most one fault, against a real sandbox, with
 * the LLM side going through Crab's proxy (so turn boundaries are real proxied requests).
 * See ../../shared/trace-format.md for the order of events and the recovery rules.
 */
import { noteSandboxCpu, span } from '../core/prof.js';
import { createHash } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import type { CrabHost } from '../daemon/host.js';
import type { CheckpointMode } from '../coordinator/turn-controller.js';
import type { TurnRecord } from '../coordinator/turn-hooks.js';
import type { ExecResult } from '../sandbox/channel.js';
import type { Action, Trace } from './trace.js';
import type { ReplayPayload } from './replay-upstream.js';
import { finalState, stateDifference, type FinalState, type Noise } from './final-state.js';
import { runTraffic, writtenBytes } from './own-traffic.js';
import { rootLogger } from '../core/log.js';

const log = rootLogger.child({ component: 'bench' });


export type BenchMode = 'none' | 'chat-only' | 'full' | 'crab';
export const BENCH_MODES: readonly BenchMode[] = ['none', 'chat-only', 'full', 'crab'];

/** A fault: kill the sandbox after turn K's actions, or in the middle of turn K's LLM wait. */
export interface Fault {
  turn: number;
  when: 'after-actions' | 'mid-wait';
}

export const faultLabel = (f: Fault | null) => (f ? `${f.when}:${f.turn}` : 'none');

export interface RunSpec {
  trace: Trace;
  mode: BenchMode;
  fault: Fault | null;
  latencyScale: number;
  /** A second no-fault run of the reference (reported with fault 'none-repeat'). */
  repeat?: boolean;
  /** Its checkpoint jobs go before other runs' (host.prioritySandboxes): the overhead runs. */
  priority?: boolean;
}

export interface RunResult {
  trace: string;
  mode: BenchMode;
  fault: string;
  latency_scale: number;
  correct: boolean;
  reason: string | null;
  wall_ms: number;
  /**
   * What the mode's checkpoints write (`writtenBytes`): full's each whole, as a conventional C/R
   * writes them; crab's into a deduplicating store of the run's own.
   */
  ckpt_bytes: number;
  /** What the checkpoints would write to a deduplicating store of their own (`own-traffic.ts`): shared content is charged to every run that uses it. */
  ckpt_dedup_bytes: number;
  /** What they would write as full checkpoints, each whole, nothing shared between them (`wholeTraffic`). */
  ckpt_whole_bytes: number;
  /** What the checkpoints actually wrote to the shared store (depends on which run stored shared content first). */
  ckpt_store_bytes: number;
  /** `ckpt_bytes` of the checkpoints at boundaries 1..N: what the agent's turns cost, the setup's base checkpoint left out. */
  ckpt_bytes_turns: number;
  /** The same for `ckpt_dedup_bytes`. */
  ckpt_dedup_bytes_turns: number;
  /** What the checkpoints hold (files + process images) before dedup. */
  ckpt_logical_bytes: number;
  /** Checkpoints by kind over all boundaries, the first (boundary 0: the setup, before turn 1) included. */
  ckpts: { full: number; process: number; fs: number; skip: number };
  /**
   * Agent turns (boundaries 1..N: boundary k judges what turn k did) and how many of them took no
   * checkpoint. Boundary 0 holds the setup, not a turn: every mode takes its base checkpoint there.
   */
  turns: { judged: number; skipped: number };
  /** Every checkpoint the run took: at which boundary, of which kind, its new bytes and why. */
  checkpoints: Array<{ turn: number | null; kind: string; new_bytes: number; store_new_bytes: number; reasons: string[] }>;
  gate_wait_ms: { p50: number; p99: number };
  gate_waits: number[];
  restore_ms: number | null;
  turns_rerun: number;
  tokens_wasted: number;
  /** New bytes per boundary index (traffic per turn), for the charts. */
  bytes_per_turn: number[];
  final?: FinalState;
}

const SESSION = 'agent';

function sandboxName(spec: RunSpec): string {
  const h = createHash('sha256').update(`${spec.trace.header.name}/${spec.mode}/${faultLabel(spec.fault)}/${process.pid}/${Math.random()}`).digest('hex').slice(0, 10);
  return `bench-${spec.trace.header.name.replace(/[^a-z0-9-]/g, '').slice(0, 30)}-${h}`;
}

export function percentile(xs: number[], p: number): number {
  if (xs.length === 0) return 0;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))]!;
}

class RunFailure extends Error {}

export interface Reference {
  state: FinalState;
  /** What differs between two no-fault runs: run-dependent content, not judged. */
  noise: Noise;
}

export async function runReplay(host: CrabHost, spec: RunSpec, reference: Reference | null): Promise<RunResult> {
  const { trace, mode, fault, latencyScale } = spec;
  const h = trace.header;
  const id = sandboxName(spec);
  const svc = host.service;
  const persistent = h.shell === 'persistent';
  const result: RunResult = {
    trace: h.name,
    mode,
    fault: spec.repeat ? 'none-repeat' : faultLabel(fault),
    latency_scale: latencyScale,
    correct: false,
    reason: null,
    wall_ms: 0,
    ckpt_bytes: 0,
    ckpt_store_bytes: 0,
    ckpt_bytes_turns: 0,
    ckpt_dedup_bytes: 0,
    ckpt_dedup_bytes_turns: 0,
    ckpt_whole_bytes: 0,
    ckpt_logical_bytes: 0,
    ckpts: { full: 0, process: 0, fs: 0, skip: 0 },
    turns: { judged: 0, skipped: 0 },
    checkpoints: [],
    gate_wait_ms: { p50: 0, p99: 0 },
    gate_waits: [],
    restore_ms: null,
    turns_rerun: 0,
    tokens_wasted: 0,
    bytes_per_turn: [],
  };
  const controllerMode: CheckpointMode = mode === 'none' ? 'off' : mode;

  const exec = (cmd: string, timeoutS: number): Promise<ExecResult> =>
    persistent ? svc.exec(id, cmd, { session: SESSION, timeoutMs: timeoutS * 1000 }) : svc.exec(id, cmd, { timeoutMs: timeoutS * 1000 });

  const start = async () => {
    await span('r.create', () => svc.createSandbox({ name: id, image: h.image.base, packages: h.image.packages, ephemeral: true }));
    host.setMode(id, controllerMode);
    for (const cmd of h.setup) {
      const r = await span('r.setup', () => exec(cmd, 600));
      if (r.exitCode !== 0) throw new RunFailure(`setup command failed (exit ${r.exitCode}): ${cmd}: ${r.stderr.slice(0, 200)}`);
    }
  };

  const runAction = async (turn: number, a: Action) => {
    const r = await span('r.action', () => exec(a.cmd, a.timeout_s));
    if (a.expect_exit !== undefined && r.exitCode !== a.expect_exit) {
      throw new RunFailure(`turn ${turn}: '${a.cmd.slice(0, 60)}' exited ${r.exitCode}, expected ${a.expect_exit}`);
    }
    if (a.expect_stdout !== undefined && !r.stdout.includes(a.expect_stdout)) {
      throw new RunFailure(`turn ${turn}: stdout of '${a.cmd.slice(0, 60)}' lacks ${JSON.stringify(a.expect_stdout)}`);
    }
  };
  const runTurnActions = async (turn: number) => {
    for (const a of trace.turns[turn - 1]!.actions) await runAction(turn, a);
  };

  /** Sends turn N's LLM request (boundary N-1) through the proxy; resolves with the response. */
  const ask = async (turn: number, opts: { killMidWait?: boolean } = {}): Promise<void> => {
    const t = trace.turns[turn - 1];
    const payload: ReplayPayload = {
      latency_ms: Math.round((t ? t.llm.latency_ms : 1000) * latencyScale),
      response: t?.llm.response ?? (t ? `run: ${t.actions.map((a) => a.cmd).join(' && ')}` : 'done'),
      prompt_tokens: t?.llm.prompt_tokens ?? 0,
      completion_tokens: t?.llm.completion_tokens ?? 0,
    };
    const req = fetch(`${host.proxyUrl}/s/${id}/v1/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: 'Bearer replay' },
      body: JSON.stringify({ model: 'replay', messages: [{ role: 'user', content: `turn ${turn}` }], crab_replay: payload }),
    }).then(async (res) => {
      if (!res.ok) throw new RunFailure(`LLM request of turn ${turn} failed: HTTP ${res.status}`);
      await res.arrayBuffer();
    });
    if (opts.killMidWait) {
      try {
        await sleep(Math.max(1, payload.latency_ms / 2));
        noteSandboxCpu('sandbox.cgroup', id);
        await svc.stopSandbox(id);
      } catch (err) {
        // The run fails with the kill's error; the request's own failure must not go unhandled
        // (it crashed the whole bench once the stop failed).
        req.catch(() => undefined);
        throw err;
      }
    }
    await req;
  };

  const lastTurn = trace.turns.length;
  if (spec.priority) host.prioritySandboxes.add(id);
  const t0 = performance.now();
  try {
    await start();
    let turn = 1;
    let faulted = false;
    while (turn <= lastTurn + 1) {
      const midWait = !faulted && fault?.when === 'mid-wait' && fault.turn === turn;
      await span('r.ask', () => ask(turn, { killMidWait: midWait }));
      if (midWait) {
        faulted = true;
        result.tokens_wasted += trace.turns[turn - 1]!.llm.prompt_tokens + trace.turns[turn - 1]!.llm.completion_tokens;
        turn = await recover(turn - 1, true);
        continue; // ask turn `turn` again
      }
      if (turn > lastTurn) break; // the final request: the last boundary
      await runTurnActions(turn);
      if (!faulted && fault?.when === 'after-actions' && fault.turn === turn) {
        faulted = true;
        noteSandboxCpu('sandbox.cgroup', id);
        await span('r.stop', () => svc.stopSandbox(id));
        turn = await recover(turn, false);
        continue;
      }
      turn++;
    }

    /**
     * After a kill with turns 1..doneTurns completed: bring the sandbox back per the mode and
     * re-run the actions the restored state lacks. Returns the turn whose LLM request comes next.
     */
    async function recover(doneTurns: number, _askAgain: boolean): Promise<number> {
      // After a mid-wait kill the lost request (turn doneTurns+1) is asked again; after an
      // after-actions kill the next request is turn doneTurns+1 too.
      const next = doneTurns + 1;
      if (mode === 'chat-only' || mode === 'none') {
        // The framework only has the chat: a fresh sandbox from the image, and on it goes.
        noteSandboxCpu('sandbox.cgroup', id);
        await span('r.remove', () => svc.removeSandbox(id));
        await start();
        return next;
      }
      // Read before the restore: the gates as they settled in the run that was killed.
      const records = host.proxy!.turns(id);
      let resumeAt: number;
      try {
        const t = performance.now();
        const r = await span('r.host.recover', () => host.recover(id));
        result.restore_ms = performance.now() - t;
        const cks = await host.checkpointer.catalog.listCheckpoints(id);
        resumeAt = resumeTurn(records, new Set(cks.map((c) => c.turn)), r.turn ?? 0, doneTurns);
      } catch (err) {
        if ((err as { code?: string }).code !== 'RECOVER_NO_CHECKPOINT') throw err;
        await svc.removeSandbox(id).catch(() => undefined);
        await start();
        resumeAt = 0;
      }
      for (let t = resumeAt + 1; t <= doneTurns; t++) {
        // Re-run turn t's actions: its LLM response is already in the conversation (no tokens).
        await runTurnActions(t);
        result.turns_rerun++;
      }
      // The next request is the boundary after turn doneTurns.
      host.proxy!.setNextTurnIndex(id, doneTurns);
      return next;
    }

    result.wall_ms = performance.now() - t0;
    for (const v of h.verify) {
      const r = await span('r.verify', () => svc.exec(id, v.cmd, { timeoutMs: 120_000 }));
      if (r.exitCode !== (v.expect_exit ?? 0)) throw new RunFailure(`verify '${v.cmd.slice(0, 60)}' exited ${r.exitCode}, expected ${v.expect_exit ?? 0}`);
      if (v.expect_stdout !== undefined && !r.stdout.includes(v.expect_stdout)) throw new RunFailure(`verify '${v.cmd.slice(0, 60)}' stdout lacks ${JSON.stringify(v.expect_stdout)}`);
    }
    result.final = await span('r.finalState', () => finalState(svc.sandboxes, id, persistent ? SESSION : null));
    // Without a reference the run is judged later (bench.judge), against its trace's no-fault run.
    result.reason = reference ? stateDifference(reference.state, result.final, reference.noise) : null;
    result.correct = result.reason === null;
  } catch (err) {
    result.wall_ms ||= performance.now() - t0;
    result.correct = false;
    result.reason = err instanceof RunFailure ? err.message : `error: ${(err as Error).message}`;
  } finally {
    noteSandboxCpu('sandbox.cgroup', id);
    // figures are best effort (correctness is decided), but a run without them must not pass unnoticed
    await span('r.figures', () => collectFigures(host, id, result)).catch((err: unknown) => log.warn({ err, sandbox: id }, 'figures of this run are incomplete'));
    await span('r.remove', () => svc.removeSandbox(id)).catch(() => undefined);
    await span('r.catalogDelete', () => host.checkpointer.catalog.deleteSandbox(id, { cascade: true })).catch(() => undefined);
    host.prioritySandboxes.delete(id);
  }
  return result;
}

/**
 * The turn a recovery resumes after: the restored checkpoint's boundary, advanced over the
 * boundaries after it that took no checkpoint although their gate settled (boundary b = the state
 * after turns 1..b). Such a boundary changed nothing the checkpoint does not hold, so the restored
 * state is also its state and its turn need not be re-run. A skip shows as gate 'skipped' when
 * the planner needed no job, but as 'committed' when the job itself decided to skip (crab mode:
 * the decision is made inside the checkpoint job), so a settled gate without a checkpoint of its
 * turn in the catalog is the test. Stops at the first boundary that is not such a skip (a
 * checkpoint taken, a failed or pending gate, no record).
 */
export function resumeTurn(
  records: ReadonlyArray<Pick<TurnRecord, 'turnIndex' | 'gate'>>,
  checkpointedTurns: ReadonlySet<number | null>,
  restoredTurn: number,
  doneTurns: number,
): number {
  let resumeAt = restoredTurn;
  for (let b = restoredTurn + 1; b <= doneTurns; b++) {
    // The newest record of the boundary: a recovery asks earlier indexes again.
    const rec = records.findLast((x) => x.turnIndex === b);
    const settledClean = rec?.gate === 'committed' || rec?.gate === 'skipped';
    if (!settledClean || checkpointedTurns.has(b)) break;
    resumeAt = b;
  }
  return resumeAt;
}

async function collectFigures(host: CrabHost, id: string, result: RunResult): Promise<void> {
  const records = host.proxy?.turns(id) ?? [];
  result.gate_waits = records.map((r) => r.gateWaitMs ?? 0);
  result.gate_wait_ms = { p50: percentile(result.gate_waits, 50), p99: percentile(result.gate_waits, 99) };
  const cks = await host.checkpointer.catalog.listCheckpoints(id).catch(() => []);
  // Boundaries that took no checkpoint (skipped by the inspector, or a mode that takes none).
  const taken = new Set(cks.map((c) => c.turn));
  const boundaries = new Set(records.map((r) => r.turnIndex));
  const skipped = [...boundaries].filter((t) => !taken.has(t));
  result.ckpts.skip = skipped.length;
  result.turns = { judged: [...boundaries].filter((t) => t >= 1).length, skipped: skipped.filter((t) => t >= 1).length };
  // charged as if the run had the store to itself: shared content is not free for whoever came second
  const traffic = await runTraffic(host.checkpointer.store, cks);
  cks.forEach((c, i) => {
    const dedup = traffic.own[i]!;
    const whole = traffic.whole[i]!;
    const bytes = writtenBytes(result.mode, dedup, whole);
    result.ckpts[c.kind]++;
    result.ckpt_bytes += bytes;
    result.ckpt_dedup_bytes += dedup;
    result.ckpt_whole_bytes += whole;
    result.ckpt_store_bytes += c.newBytes;
    if (c.turn !== null && c.turn >= 1) {
      result.ckpt_bytes_turns += bytes;
      result.ckpt_dedup_bytes_turns += dedup;
    }
    result.ckpt_logical_bytes += c.logicalBytes;
    if (c.turn !== null) result.bytes_per_turn[c.turn] = (result.bytes_per_turn[c.turn] ?? 0) + bytes;
    result.checkpoints.push({ turn: c.turn, kind: c.kind, new_bytes: bytes, store_new_bytes: c.newBytes, reasons: reasonsOf(c.effects) });
  });
}

/** The turn controller's reasons for a checkpoint's kind, from its effect report (none for manual checkpoints). */
function reasonsOf(effects: unknown): string[] {
  const reasons = (effects as { reasons?: unknown } | null)?.reasons;
  return Array.isArray(reasons) ? reasons.filter((r): r is string => typeof r === 'string') : [];
}
