/**
 * @module `crab bench --colocate N`: N sandboxes at once on one host, each an agent session of
 * generated turns (`session-gen.ts`), on three hosts side by side under the same load: crab mode
 * with the reactive policy, crab mode with FIFO, and mode none (the reference: final states and
 * time). The two crab hosts crash at random times (`--crashes` each): the daemon killed -9 with
 * every sandbox, writable layers discarded, a fresh daemon, and every agent recovers through it
 * from the store and catalog alone, re-runs what the restored state lacks, and goes on.
 *
 * Figures per crab host: correctness (verify + every expect_stdout + the final state equals the
 * none twin's), overhead vs none (the agents' time in turns outside recoveries, summed, against
 * the none twins'), gate wait p99 (the daemon's records, read before each crash and at the end),
 * checkpoints lost (listed before a crash, gone after it), restores, re-run turns.
 */
import fs from 'node:fs';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { ensureImage } from '../image/image-builder.js';
import type { TurnRecord } from '../coordinator/turn-hooks.js';
import type { CheckpointMode } from '../coordinator/turn-controller.js';
import { DaemonHost } from './daemon-host.js';
import { finalState, stateDifference, type FinalState } from './final-state.js';
import { generateSession, SESSION_MIX } from './session-gen.js';
import { percentile } from './run-result.js';
import type { Trace } from './trace.js';
import { seededRandom } from '../core/rng.js';

export interface ColocateOptions {
  sandboxes: number;
  turns: number;
  /** Host crashes per crab host, at random times over the expected session length. */
  crashes: number;
  latencyScale: number;
  upstreamUrl: string;
  home: string;
  memoryBytes: number;
  keepHomes?: boolean;
  signal?: AbortSignal;
  seed?: number;
}

export interface ColocatedHostFigures {
  host: 'reactive' | 'fifo' | 'none';
  sandboxes: number;
  correct: number;
  incorrect: Array<{ sandbox: number; reason: string }>;
  /** Agent time in turns (request sent → actions done) that no crash cut, summed over the turns the none twins also have. */
  turn_ms: number;
  overhead_vs_none: number | null;
  gate_wait_ms: { p50: number; p99: number; max: number; count: number };
  /** The same without each sandbox's first boundary under each daemon (a full checkpoint by design: the session's first, or the first after a recovery). */
  gate_wait_steady_ms: { p50: number; p99: number; max: number; count: number };
  /** Seen by the agent: response time minus the recorded LLM latency (gate hold plus proxy). */
  agent_extra_wait_ms: { p50: number; p99: number };
  crashes: number;
  crash_ms: number[];
  ckpts_lost: number;
  restores: number;
  restore_ms_p50: number | null;
  turns_rerun: number;
  checkpoints: { full: number; process: number; fs: number; skip: number };
  wall_ms: number;
}

export interface ColocateReport {
  options: Omit<ColocateOptions, 'signal' | 'upstreamUrl'>;
  mix: typeof SESSION_MIX;
  hosts: ColocatedHostFigures[];
  started_at: string;
  duration_ms: number;
}

interface Agent {
  index: number;
  id: string;
  trace: Trace;
  answered: number;
  /** Agent time of each turn outside recoveries (request sent → actions done); absent for a turn a crash cut. */
  turnMs: Array<number | undefined>;
  /** Resolves once the sandbox is made and set up (crashes are aimed at sessions, not set-ups). */
  started: Promise<void>;
  markStarted: () => void;
  extraWaits: number[];
  restoreMs: number[];
  rerun: number;
  reason: string | null;
  final: FinalState | null;
}

class CrashingHost {
  /** Bumped when a crash starts: a call that fails after it was started under an older generation is the crash's doing. */
  generation = 0;
  ready: Promise<void> = Promise.resolve();
  records = new Map<string, TurnRecord[]>();
  lost = 0;
  crashMs: number[] = [];
  checkpoints = { full: 0, process: 0, fs: 0, skip: 0 };
  constructor(
    readonly name: ColocatedHostFigures['host'],
    readonly host: DaemonHost,
    readonly mode: CheckpointMode,
  ) {}

  /**
   * Keeps the daemon's turn records of these sandboxes (a crash takes them with it). Each
   * daemon's records of a sandbox start at a (re)start: its first boundary there (the session's
   * first, or the first after a recovery) takes a full checkpoint by design.
   */
  async saveRecords(ids: readonly string[]): Promise<void> {
    for (const id of ids) {
      const got = (await this.host.turns(id).catch(() => [])).sort((a, b) => a.receivedAt - b.receivedAt);
      this.records.set(id, [...(this.records.get(id) ?? []), ...got]);
      this.firstAfterStart.push(...got.slice(0, 1));
    }
  }

  /** Records of the first boundary of each sandbox under each daemon. */
  firstAfterStart: TurnRecord[] = [];

  /** The host dies with every sandbox; a fresh daemon comes up. Agents wait on `ready`, then recover. */
  async crash(ids: readonly string[]): Promise<void> {
    let done!: () => void;
    this.ready = new Promise<void>((r) => (done = r));
    this.generation++;
    try {
      await this.saveRecords(ids);
      const before = new Map<string, string[]>();
      for (const id of ids) before.set(id, (await this.host.api.listCheckpoints(id).catch(() => [])).map((c) => c.id));
      const t0 = performance.now();
      await this.host.crash();
      await this.host.restart();
      this.crashMs.push(performance.now() - t0);
      for (const id of ids) {
        const after = new Set((await this.host.api.listCheckpoints(id).catch(() => [])).map((c) => c.id));
        this.lost += (before.get(id) ?? []).filter((c) => !after.has(c)).length;
      }
    } finally {
      done();
    }
  }
}

export async function runColocated(opts: ColocateOptions, progress: (m: string) => void = () => undefined): Promise<ColocateReport> {
  const startedAt = new Date();
  const t0 = performance.now();
  const seed = opts.seed ?? 21;
  await ensureImage(path.join(opts.home, 'images'), 'debian-bookworm-minbase', [], progress);
  const benchDir = path.join(opts.home, 'bench', `colo-${startedAt.toISOString().replace(/[-:.]/g, '').slice(0, 15)}-${process.pid}`);
  const made: DaemonHost[] = [];
  const start = async (name: string, policy: 'fifo' | 'reactive') => {
    const h = await DaemonHost.start({ home: path.join(benchDir, name), name: `${path.basename(benchDir)}-${name}`, upstreamUrl: opts.upstreamUrl, policy, imagesFrom: path.join(opts.home, 'images') });
    made.push(h);
    return h;
  };
  const hosts = [new CrashingHost('reactive', await start('reactive', 'reactive'), 'crab'), new CrashingHost('fifo', await start('fifo', 'fifo'), 'crab'), new CrashingHost('none', await start('none', 'reactive'), 'off')];
  const sessions = Array.from({ length: opts.sandboxes }, (_, i) => generateSession(`colo-${i}`, seed * 1000 + i, opts.turns));
  const agent = (h: CrashingHost, trace: Trace, index: number): Agent => {
    let markStarted!: () => void;
    const started = new Promise<void>((r) => (markStarted = r));
    return { index, id: `colo-${h.name}-${index}-${process.pid.toString(36)}`, trace, answered: 0, turnMs: [], started, markStarted, extraWaits: [], restoreMs: [], rerun: 0, reason: null, final: null };
  };
  const agents = new Map<CrashingHost, Agent[]>(hosts.map((h) => [h, sessions.map((trace, index) => agent(h, trace, index))]));
  const meanTurnMs = (2000 + 2500 / 2) * opts.latencyScale + 50;
  const expectedMs = opts.turns * meanTurnMs;
  const wall = new Map<CrashingHost, number>();
  try {
    const crashers = hosts
      .filter((h) => h.mode !== 'off')
      .map(async (h) => {
        const rand = seededRandom(seed + h.name.length);
        const at = Array.from({ length: opts.crashes }, () => 0.1 + 0.8 * rand()).sort((a, b) => a - b);
        await Promise.all(agents.get(h)!.map((a) => a.started));
        let waited = 0;
        for (const frac of at) {
          await sleep(Math.max(0, frac * expectedMs - waited));
          waited = frac * expectedMs;
          if (opts.signal?.aborted || agents.get(h)!.every((a) => a.final || a.reason)) return;
          progress(`colocate: crashing host ${h.name}`);
          await h.crash(agents.get(h)!.map((a) => a.id));
        }
      });
    await Promise.all([
      ...hosts.map(async (h) => {
        const t = performance.now();
        await Promise.all(agents.get(h)!.map((a) => runAgent(h, a, opts)));
        wall.set(h, performance.now() - t);
      }),
      ...crashers,
    ]);
    for (const h of hosts) await h.saveRecords(agents.get(h)!.map((a) => a.id));
  } finally {
    for (const [h, as] of agents) for (const a of as) await h.host.api.removeSandbox(a.id).catch(() => undefined);
    for (const h of made) await h.close().catch((err: unknown) => progress(`bench host ${h.opts.name} did not stop cleanly: ${(err as Error).message}`));
    if (!opts.keepHomes) await fs.promises.rm(benchDir, { recursive: true, force: true });
  }
  const none = agents.get(hosts[2]!)!;
  const figures = hosts.map((h): ColocatedHostFigures => {
    const as = agents.get(h)!;
    const incorrect: ColocatedHostFigures['incorrect'] = [];
    for (const a of as) {
      const twin = none[a.index]!;
      const why = a.reason ?? (!twin.final ? `no reference: ${twin.reason}` : !a.final ? 'no final state' : h.mode === 'off' ? null : stateDifference(twin.final, a.final));
      if (why) incorrect.push({ sandbox: a.index, reason: why });
    }
    const all = [...h.records.values()].flat();
    const waits = all.map((r) => r.gateWaitMs ?? 0);
    const firsts = new Set(h.firstAfterStart);
    const steady = all.filter((r) => !firsts.has(r)).map((r) => r.gateWaitMs ?? 0);
    // turn by turn, the same turns of the same sessions: a turn a crash cut counts on neither side
    let turnMs = 0;
    let noneMs = 0;
    for (const a of as) {
      a.turnMs.forEach((ms, t) => {
        const twin = none[a.index]!.turnMs[t];
        if (ms === undefined || twin === undefined) return;
        turnMs += ms;
        noneMs += twin;
      });
    }
    const restores = as.flatMap((a) => a.restoreMs);
    return {
      host: h.name,
      sandboxes: as.length,
      correct: as.length - incorrect.length,
      incorrect: incorrect.slice(0, 20),
      turn_ms: turnMs,
      overhead_vs_none: h.mode === 'off' ? 0 : noneMs ? turnMs / noneMs - 1 : null,
      gate_wait_ms: { p50: percentile(waits, 50), p99: percentile(waits, 99), max: Math.max(0, ...waits), count: waits.length },
      gate_wait_steady_ms: { p50: percentile(steady, 50), p99: percentile(steady, 99), max: Math.max(0, ...steady), count: steady.length },
      agent_extra_wait_ms: { p50: percentile(as.flatMap((a) => a.extraWaits), 50), p99: percentile(as.flatMap((a) => a.extraWaits), 99) },
      crashes: h.crashMs.length,
      crash_ms: h.crashMs.map(Math.round),
      ckpts_lost: h.lost,
      restores: restores.length,
      restore_ms_p50: restores.length ? percentile(restores, 50) : null,
      turns_rerun: as.reduce((s, a) => s + a.rerun, 0),
      checkpoints: h.checkpoints,
      wall_ms: wall.get(h) ?? 0,
    };
  });
  const { signal: _s, upstreamUrl: _u, ...shown } = opts;
  return { options: shown, mix: SESSION_MIX, hosts: figures, started_at: startedAt.toISOString(), duration_ms: performance.now() - t0 };
}

const SESSION = 'agent';

/** One agent: its session's turns through the host's proxy and API; after a crash of its host, recovery through the fresh daemon. */
async function runAgent(h: CrashingHost, a: Agent, opts: ColocateOptions): Promise<void> {
  const api = () => h.host.api;
  const tr = a.trace;
  const exec = (cmd: string, timeoutS: number) => api().exec(a.id, cmd, { session: SESSION, timeoutMs: timeoutS * 1000 });
  const create = async () => {
    await api().createSandbox({ name: a.id, image: tr.header.image.base, packages: [], ephemeral: true, memoryLimitBytes: opts.memoryBytes });
    await h.host.setMode(a.id, h.mode);
    for (const cmd of tr.header.setup) {
      const r = await exec(cmd, 120);
      if (r.exitCode !== 0) throw new Error(`setup failed: ${cmd}: ${r.stderr.slice(0, 200)}`);
    }
  };
  const runActions = async (turn: number) => {
    for (const act of tr.turns[turn - 1]!.actions) {
      const r = await exec(act.cmd, act.timeout_s);
      if (act.expect_stdout !== undefined && !r.stdout.includes(act.expect_stdout)) throw new AgentFailure(`turn ${turn}: stdout of '${act.cmd}' lacks ${JSON.stringify(act.expect_stdout)}`);
    }
  };
  const ask = async (turn: number) => {
    const t = tr.turns[turn - 1];
    const latency = Math.round((t?.llm.latency_ms ?? 1000) * opts.latencyScale);
    const t0 = performance.now();
    const res = await fetch(`${h.host.proxyUrl}/s/${a.id}/v1/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'replay', messages: [{ role: 'user', content: `turn ${turn}` }], crab_replay: { latency_ms: latency, response: 'ok', prompt_tokens: 0, completion_tokens: 0 } }),
    });
    if (!res.ok) throw new Error(`LLM request of turn ${turn}: HTTP ${res.status}`);
    await res.arrayBuffer();
    a.extraWaits.push(Math.max(0, performance.now() - t0 - latency));
  };
  /** After a crash: recover through the fresh daemon, re-run the answered turns the restored state lacks. */
  const recover = async () => {
    await h.ready;
    let resumeAt = 0;
    try {
      const t0 = performance.now();
      const r = await h.host.recover(a.id);
      a.restoreMs.push(performance.now() - t0);
      resumeAt = r.turn ?? 0;
    } catch (err) {
      if ((err as { code?: string }).code !== 'RECOVER_NO_CHECKPOINT') throw err;
      await create();
    }
    await h.host.setMode(a.id, h.mode);
    for (let t = resumeAt + 1; t <= a.answered; t++) {
      await runActions(t);
      a.rerun++;
    }
    await h.host.setNextTurn(a.id, a.answered);
  };
  /** Runs `step`; a failure caused by a host crash (it started under an older generation) is recovered from and tried again. */
  const crashSafe = async (step: () => Promise<void>): Promise<boolean> => {
    const gen = h.generation;
    try {
      await step();
      if (gen === h.generation) return true;
      // it finished, but the host crashed meanwhile: its effect may be lost with the layer
    } catch (err) {
      if (err instanceof AgentFailure || gen === h.generation) throw err;
    }
    await recoverSafe();
    return false;
  };
  const recoverSafe = async (): Promise<void> => {
    for (;;) {
      const gen = h.generation;
      try {
        await recover();
        if (gen === h.generation) return;
      } catch (err) {
        if (err instanceof AgentFailure || gen === h.generation) throw err;
      }
    }
  };
  try {
    // crashed before its first checkpoint: the recovery made it anew (RECOVER_NO_CHECKPOINT)
    await crashSafe(create).finally(() => a.markStarted());
    let turn = 1;
    while (turn <= tr.turns.length + 1) {
      if (opts.signal?.aborted) throw new AgentFailure('stopped');
      const t0 = performance.now();
      if (!(await crashSafe(() => ask(turn)))) {
        turn = a.answered + 1;
        continue;
      }
      if (turn > tr.turns.length) break;
      a.answered = turn;
      if (!(await crashSafe(() => runActions(turn)))) {
        turn = a.answered + 1;
        continue;
      }
      a.turnMs[turn] = performance.now() - t0;
      turn++;
    }
    for (const v of tr.header.verify) {
      const r = await api().exec(a.id, v.cmd, { timeoutMs: v.timeout_s * 1000 });
      if (r.exitCode !== v.expect_exit || (v.expect_stdout !== undefined && !r.stdout.includes(v.expect_stdout))) throw new AgentFailure(`verify '${v.cmd}' failed (exit ${r.exitCode})`);
    }
    a.final = await finalState(h.host.sandboxes, a.id, SESSION);
    const cks = await api().listCheckpoints(a.id);
    for (const c of cks) h.checkpoints[c.kind]++;
  } catch (err) {
    a.reason = err instanceof AgentFailure ? err.message : `error: ${(err as Error).message}`;
  } finally {
    a.markStarted();
  }
}

class AgentFailure extends Error {}

/** The table `crab bench --colocate` prints. */
export function renderColocated(rep: ColocateReport): string {
  const pct = (x: number | null) => (x === null ? '-' : `${(x * 100).toFixed(1)}%`);
  const lines = [
    `${rep.options.sandboxes} sandboxes per host, ${rep.options.turns} turns each (mix per 100 turns: ${Object.entries(rep.mix).map(([k, v]) => `${k} ${v}`).join(', ')}), ` +
      `LLM latency ×${rep.options.latencyScale}, ${rep.options.crashes} host crashes per crab host; ${(rep.duration_ms / 1000).toFixed(0)} s`,
    '',
    'host      correct   overhead vs none  gate p50/p99/max ms  steady p99/max ms  agent extra wait p99  crashes (ms)        ckpts lost  restores p50  re-run turns  ckpts f/p/fs',
  ];
  for (const h of rep.hosts) {
    lines.push(
      [
        h.host.padEnd(8),
        `${h.correct}/${h.sandboxes}`.padEnd(8),
        pct(h.overhead_vs_none).padEnd(16),
        `${Math.round(h.gate_wait_ms.p50)}/${Math.round(h.gate_wait_ms.p99)}/${Math.round(h.gate_wait_ms.max)}`.padEnd(19),
        `${Math.round(h.gate_wait_steady_ms.p99)}/${Math.round(h.gate_wait_steady_ms.max)}`.padEnd(17),
        `${Math.round(h.agent_extra_wait_ms.p99)} ms`.padEnd(20),
        `${h.crashes} (${h.crash_ms.join(', ')})`.padEnd(18),
        String(h.ckpts_lost).padEnd(10),
        (h.restore_ms_p50 === null ? '-' : `${Math.round(h.restore_ms_p50)} ms`).padEnd(12),
        String(h.turns_rerun).padEnd(12),
        `${h.checkpoints.full}/${h.checkpoints.process}/${h.checkpoints.fs}`,
      ].join('  '),
    );
  }
  for (const h of rep.hosts) for (const i of h.incorrect) lines.push(`  incorrect: ${h.host} sandbox ${i.sandbox}: ${i.reason}`);
  lines.push(
    '',
    "overhead: the agents' time in turns (request sent → actions done) that no crash cut, against the same turns of the none twins; gate: the daemons' records; steady: without each sandbox's first boundary under each daemon (the session's first and the first after each recovery take full checkpoints)",
  );
  return lines.join('\n');
}
