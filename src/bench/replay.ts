/**
 * @module One replay of a trace in one mode with at most one fault, against a real sandbox on a
 * bench host (a `crab daemon` process, `daemon-host.ts`), with the LLM side going through the
 * daemon's proxy (so turn boundaries are real proxied requests). The replay is the agent
 * framework: it only talks to the daemon's API and proxy, and after a host crash it knows only
 * what the agent itself knows (its conversation) and what the fresh daemon tells it.
 * See ../../shared/trace-format.md for the order of events and the recovery rules.
 */
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { span } from '../core/prof.js';
import { rootLogger } from '../core/log.js';
import type { CheckpointMode } from '../coordinator/turn-controller.js';
import type { TurnRecord } from '../coordinator/turn-hooks.js';
import type { ExecResult } from '../sandbox/channel.js';
import { freezerStateFile, hostPidsOf } from '../sandbox/cgroup.js';
import type { Action, Trace } from './trace.js';
import type { ReplayPayload } from './replay-upstream.js';
import { finalState } from './final-state.js';
import type { DaemonHost } from './daemon-host.js';
import { faultLabel, type Fault } from './faults.js';
import { memoryPressure, pressureNote } from './memory-limit.js';
import { collectFigures, emptyResult, notePressure, type BenchMode, type RunResult } from './run-result.js';

export { BENCH_MODES, percentile, type BenchMode, type RunResult } from './run-result.js';

const log = rootLogger.child({ component: 'bench' });

/** Replays get this much memory unless told otherwise: real builds (a C++ compiler on catch.hpp) fit. */
export const DEFAULT_REPLAY_MEMORY_BYTES = 2 * 2 ** 30;

export interface RunSpec {
  trace: Trace;
  mode: BenchMode;
  fault: Fault | null;
  latencyScale: number;
  /** The label of a no-fault run (`none`, `none-repeat`, `none#2`…); fault runs are labelled by their fault. */
  label?: string;
  /** The sandbox's memory limit (default DEFAULT_REPLAY_MEMORY_BYTES). */
  memoryBytes?: number;
}

const SESSION = 'agent';

function sandboxName(spec: RunSpec): string {
  const h = createHash('sha256').update(`${spec.trace.header.name}/${spec.mode}/${faultLabel(spec.fault)}/${process.pid}/${Math.random()}`).digest('hex').slice(0, 10);
  return `bench-${spec.trace.header.name.replace(/[^a-z0-9-]/g, '').slice(0, 30)}-${h}`;
}

class RunFailure extends Error {}

/** The fault's host crash cut the replay short: recover. */
class Crashed extends Error {}

/** Whether the daemon is checkpointing the sandbox now: its cgroup frozen, or a dump's scratch dir there. */
function busyWith(host: DaemonHost, id: string): boolean {
  try {
    if (fs.readFileSync(freezerStateFile(id), 'utf8').trim() !== 'THAWED') return true;
  } catch {
    // no freezer cgroup (not running): not busy with it
  }
  try {
    return fs.readdirSync(path.join(host.sandboxes.dirs(id).ckpt)).length > 0;
  } catch {
    return false; // no scratch dir: no dump in flight
  }
}

export async function runReplay(host: DaemonHost, spec: RunSpec): Promise<RunResult> {
  const { trace, mode, fault, latencyScale } = spec;
  const h = trace.header;
  const id = sandboxName(spec);
  const persistent = h.shell === 'persistent';
  const memoryBytes = spec.memoryBytes ?? DEFAULT_REPLAY_MEMORY_BYTES;
  const result = emptyResult(h.name, mode, spec.label ?? faultLabel(fault), latencyScale, memoryBytes);
  const controllerMode: CheckpointMode = mode === 'none' ? 'off' : mode;
  const api = host.api;

  const exec = (cmd: string, timeoutS: number): Promise<ExecResult> =>
    persistent ? api.exec(id, cmd, { session: SESSION, timeoutMs: timeoutS * 1000 }) : api.exec(id, cmd, { timeoutMs: timeoutS * 1000 });

  const start = async () => {
    await span('r.create', () => api.createSandbox({ name: id, image: h.image.base, packages: h.image.packages, ephemeral: true, memoryLimitBytes: memoryBytes }));
    await host.setMode(id, controllerMode);
    for (const cmd of h.setup) {
      const r = await span('r.setup', () => exec(cmd, 600));
      if (r.exitCode !== 0) throw new RunFailure(`setup command failed (exit ${r.exitCode}): ${cmd}: ${r.stderr.slice(0, 200)}`);
    }
  };

  /** The fault: a kill of the sandbox (the daemon runs on), or the host's crash and a fresh daemon. */
  const strike = async (f: Fault): Promise<void> => {
    notePressure(result, memoryPressure(id)); // its counters go with its cgroup
    if (f.kind === 'kill') {
      await span('r.stop', () => api.stopSandbox(id));
      return;
    }
    const before = await api.listCheckpoints(id).catch(() => []); // what the catalog holds when the host dies
    await span('r.crash', () => host.crash());
    result.crashes.total++;
    await span('r.restart', () => host.restart());
    const after = new Set((await api.listCheckpoints(id).catch(() => [])).map((c) => c.id));
    result.ckpts_lost += before.filter((c) => !after.has(c.id)).length;
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

  /** Turn `turn`'s actions; with `crash`, the host crashes while the first one runs (then `Crashed`). */
  const runTurnActions = async (turn: number, crash?: Fault) => {
    const actions = trace.turns[turn - 1]!.actions;
    for (let i = 0; i < actions.length; i++) {
      if (crash && i === 0) {
        const a = actions[0]!;
        const procs = hostPidsOf(id).length;
        let settled = false;
        const p = exec(a.cmd, a.timeout_s).then(
          () => void (settled = true),
          () => void (settled = true), // the daemon dies under it: expected
        );
        // crash once the action has started a process (a builtin starts none: then once it answered)
        for (const until = Date.now() + 2000; !settled && Date.now() < until && hostPidsOf(id).length <= procs; ) await sleep(2);
        if (!settled) result.crashes.mid_action++;
        await strike(crash);
        await p;
        throw new Crashed();
      }
      await runAction(turn, actions[i]!);
    }
  };

  /** Sends turn N's LLM request (boundary N-1) through the proxy; resolves with the response. With `crash`, the fault strikes mid-wait. */
  const ask = async (turn: number, crash?: Fault): Promise<void> => {
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
    if (!crash) return req;
    // The request's own failure (the proxy dies with the host) must not go unhandled.
    req.catch(() => undefined);
    const half = Math.max(1, payload.latency_ms / 2);
    if (crash.kind === 'kill') {
      await sleep(half);
      await strike(crash);
      return req; // the daemon's proxy still answers
    }
    // A host crash strikes while the daemon checkpoints the boundary when it does so within half the wait.
    let busy = false;
    for (const until = Date.now() + half; !busy && Date.now() < until; ) {
      busy = busyWith(host, id);
      if (!busy) await sleep(3);
    }
    if (busy) result.crashes.busy++;
    await strike(crash);
  };

  const lastTurn = trace.turns.length;
  const t0 = performance.now();
  try {
    await start();
    let turn = 1;
    let faulted = false;
    while (turn <= lastTurn + 1) {
      const f = !faulted && fault?.turn === turn ? fault : undefined;
      if (f?.when === 'mid-wait') {
        faulted = true;
        await span('r.ask', () => ask(turn, f));
        result.tokens_wasted += trace.turns[turn - 1]!.llm.prompt_tokens + trace.turns[turn - 1]!.llm.completion_tokens;
        turn = await recover(turn - 1, f);
        continue; // ask turn `turn` again
      }
      await span('r.ask', () => ask(turn));
      if (turn > lastTurn) break; // the final request: the last boundary
      if (f?.when === 'mid-action') {
        faulted = true;
        await runTurnActions(turn, f).catch((err: unknown) => {
          if (!(err instanceof Crashed)) throw err;
        });
        // the agent has turn `turn`'s response: the interrupted action and the rest of its turn run again
        turn = await recover(turn, f);
        continue;
      }
      await runTurnActions(turn);
      if (f?.when === 'after-actions') {
        faulted = true;
        await strike(f);
        turn = await recover(turn, f);
        continue;
      }
      turn++;
    }

    /**
     * After the fault with turns 1..doneTurns completed in the agent's conversation: bring the
     * sandbox back per the mode and re-run the actions the restored state lacks. Returns the turn
     * whose LLM request comes next.
     */
    async function recover(doneTurns: number, f: Fault): Promise<number> {
      const next = doneTurns + 1;
      if (mode === 'chat-only' || mode === 'none') {
        // The framework only has the chat: a fresh sandbox from the image, and on it goes.
        await span('r.remove', () => api.removeSandbox(id)).catch(() => undefined); // after a crash it is gone already
        await start();
        return next;
      }
      // The gates as they settled before the fault: a killed sandbox's daemon still knows them; a crashed one's died with it.
      const records: TurnRecord[] = f.kind === 'kill' ? await host.turns(id) : [];
      let resumeAt: number;
      try {
        const t = performance.now();
        const r = await span('r.recover', () => host.recover(id));
        result.restore_ms = performance.now() - t;
        const cks = await api.listCheckpoints(id);
        resumeAt = resumeTurn(records, new Set(cks.map((c) => c.turn)), r.turn ?? 0, doneTurns);
      } catch (err) {
        if ((err as { code?: string }).code !== 'RECOVER_NO_CHECKPOINT') throw err;
        await api.removeSandbox(id).catch(() => undefined); // a crash took it already
        await start();
        resumeAt = 0;
      }
      await host.setMode(id, controllerMode); // a fresh daemon knows no sandbox's mode
      for (let t = resumeAt + 1; t <= doneTurns; t++) {
        // Re-run turn t's actions: its LLM response is already in the conversation (no tokens).
        await runTurnActions(t);
        result.turns_rerun++;
      }
      // The next request is the boundary after turn doneTurns.
      await host.setNextTurn(id, doneTurns);
      return next;
    }

    result.wall_ms = performance.now() - t0;
    for (const v of h.verify) {
      const r = await span('r.verify', () => api.exec(id, v.cmd, { timeoutMs: v.timeout_s * 1000 }));
      if (r.exitCode !== v.expect_exit) throw new RunFailure(`verify '${v.cmd.slice(0, 60)}' exited ${r.exitCode}, expected ${v.expect_exit}`);
      if (v.expect_stdout !== undefined && !r.stdout.includes(v.expect_stdout)) throw new RunFailure(`verify '${v.cmd.slice(0, 60)}' stdout lacks ${JSON.stringify(v.expect_stdout)}`);
    }
    result.final = await span('r.finalState', () => finalState(host.sandboxes, id, persistent ? SESSION : null));
    // judged later (bench.judge), against its trace's no-fault runs
    result.correct = true;
  } catch (err) {
    result.wall_ms ||= performance.now() - t0;
    result.correct = false;
    result.reason = err instanceof RunFailure ? err.message : `error: ${(err as Error).message}`;
  } finally {
    notePressure(result, memoryPressure(id));
    // figures are best effort (correctness is decided), but a run without them must not pass unnoticed
    await span('r.figures', () => collectFigures(host, id, result)).catch((err: unknown) => log.warn({ err, sandbox: id }, 'figures of this run are incomplete'));
    await span('r.remove', () => api.removeSandbox(id)).catch(() => undefined);
  }
  const note = result.reason && pressureNote({ limitHits: result.memory.limit_hits, oomKills: result.memory.oom_kills }, memoryBytes);
  if (note) result.reason += `; ${note}`;
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
 * checkpoint taken, a failed or pending gate, no record). After a host crash there are no
 * records (they died with the daemon): the restored boundary is where it resumes.
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
