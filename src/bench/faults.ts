/**
 * @module Fault plans of `crab bench --faults [KIND:]PLAN` (pure).
 *
 * Kinds (what a fault does):
 * - `kill`: the sandbox's processes are killed; its writable layer stays on disk, the daemon runs on.
 * - `host-crash`: the host dies: the daemon is killed -9 (mid-operation when it is busy: a
 *   checkpoint of the boundary in flight), with every process it started and every sandbox it
 *   ran; what a reboot or a lost host takes goes too (the sandbox's directory with its writable
 *   layer, its mount, cgroups, runc state, network namespace). A fresh daemon on the same
 *   CRAB_HOME recovers from the store and catalog alone. The default of `every-turn` and `random:N`.
 * - `mid-action`: a host crash while one of the turn's actions runs; that action (and the rest
 *   of its turn) runs again after the recovery.
 *
 * Points (when): after turn K's actions, in the middle of turn K's LLM wait, or during turn K's
 * first action (`mid-action`).
 */

export type FaultKind = 'kill' | 'host-crash' | 'mid-action';
export const FAULT_KINDS: readonly FaultKind[] = ['kill', 'host-crash', 'mid-action'];

export type FaultWhen = 'after-actions' | 'mid-wait' | 'mid-action';

/** One fault of one run. */
export interface Fault {
  turn: number;
  when: FaultWhen;
  kind: FaultKind;
}

export type FaultPoints = { kind: 'none' } | { kind: 'every-turn' } | { kind: 'random'; count: number } | { kind: 'turn'; turn: number; when?: 'after-actions' | 'mid-wait' };

/** A plan: where the faults go, and what kind they are (null: the plan's default kind). */
export type FaultPlan = FaultPoints & { fault?: FaultKind };

export const faultLabel = (f: Fault | null): string => (f ? `${f.kind === 'kill' ? '' : `${f.kind}@`}${f.when}:${f.turn}` : 'none');

/** The kind a plan's faults have: its own, else host-crash for every-turn and random:N, kill for turn:K. */
export function planKind(plan: FaultPlan): FaultKind {
  if (plan.fault) return plan.fault;
  return plan.kind === 'turn' ? 'kill' : 'host-crash';
}

/**
 * The fault points of one trace under a plan. Without `mid-action`, every-turn alternates
 * after-actions and mid-wait so both are covered; with it, every point is during an action.
 * Turns without actions cannot take a mid-action fault: theirs is after the (empty) actions.
 */
export function faultPoints(plan: FaultPlan, turns: number, rand: () => number = Math.random, actionsOf: (turn: number) => number = () => 1): Fault[] {
  const kind = planKind(plan);
  const at = (turn: number, when: FaultWhen): Fault => {
    if (kind === 'mid-action') return { turn, when: actionsOf(turn) > 0 ? 'mid-action' : 'after-actions', kind };
    return { turn, when, kind };
  };
  switch (plan.kind) {
    case 'none':
      return [];
    case 'every-turn':
      return Array.from({ length: turns }, (_, i) => at(i + 1, i % 2 === 0 ? 'after-actions' : 'mid-wait'));
    case 'random': {
      const out: Fault[] = [];
      for (let i = 0; i < plan.count; i++) {
        const turn = 1 + Math.floor(rand() * turns);
        out.push(at(turn, rand() < 0.5 ? 'after-actions' : 'mid-wait'));
      }
      return out;
    }
    case 'turn':
      return plan.turn <= turns ? [at(plan.turn, plan.when ?? 'after-actions')] : [];
  }
}

/** Parses `[KIND:]none|every-turn|random:N|turn:K[:after-actions|:mid-wait]`; null when it is not a plan. */
export function parseFaultPlan(text: string): FaultPlan | null {
  let fault: FaultKind | undefined;
  const k = /^(kill|host-crash|mid-action):(.+)$/.exec(text);
  if (k) {
    fault = k[1] as FaultKind;
    text = k[2]!;
  }
  const points = parsePoints(text);
  if (!points) return null;
  if (fault === 'mid-action' && points.kind === 'turn' && points.when) return null; // the point is the action
  if (fault && points.kind === 'none') return null; // a kind of no fault
  return fault ? { ...points, fault } : points;
}

function parsePoints(text: string): FaultPoints | null {
  if (text === 'none') return { kind: 'none' };
  if (text === 'every-turn') return { kind: 'every-turn' };
  let m = /^random:(\d+)$/.exec(text);
  if (m) return { kind: 'random', count: Number(m[1]) };
  m = /^turn:(\d+)(?::(after-actions|mid-wait))?$/.exec(text);
  if (m && Number(m[1]) >= 1) return { kind: 'turn', turn: Number(m[1]), when: m[2] as 'after-actions' | 'mid-wait' | undefined };
  return null;
}

/** Whether a fault takes the daemon down (the bench must run it on a host of its own). */
export const crashesHost = (f: Fault | null): boolean => !!f && f.kind !== 'kill';
