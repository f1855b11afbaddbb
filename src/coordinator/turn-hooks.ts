/** @module The contract between the LLM proxy and whatever takes checkpoints at turn boundaries. */

export interface TurnBoundary {
  readonly sandboxId: string;
  /** 0 for the first counted request the proxy sees for this sandbox, then 1, 2… */
  readonly turnIndex: number;
  /** Epoch ms (proxy clock) at which the request arrived. */
  readonly receivedAt: number;
}

/** How a gate settled. A gate that resolves with nothing (undefined) counts as 'committed'. */
export interface GateSettlement {
  /** 'committed': checkpoint saved; 'skipped': none needed; 'failed': it failed (response still released). */
  outcome: 'committed' | 'skipped' | 'failed';
  detail?: string;
}

/**
 * Resolves when the checkpoint for the boundary is committed, or known to have failed. A rejection
 * counts as 'failed'. Either way the held response is then released: the gate fails open.
 */
export type TurnGate = PromiseLike<GateSettlement | void>;

export interface TurnHooks {
  /**
   * Called once per counted request, right after the proxy has started forwarding it upstream
   * (forwarding never waits for this). Must return quickly; the checkpoint work goes into the gate.
   * A synchronous throw counts as a failed gate.
   */
  onTurnBoundary(boundary: TurnBoundary): TurnGate;
  /**
   * The upstream response (status and headers, or a proxy-made 502/504) for this turn has arrived
   * and is now held by the gate: the agent is waiting. Called at most once per turn, never throws
   * into the proxy (exceptions are logged).
   */
  onResponseArrived(sandboxId: string, turnIndex: number): void;
  /** Optional: the turn's response was released to the agent (gate wait now known). */
  onTurnReleased?(record: Readonly<TurnRecord>): void;
  /**
   * Optional: the gate did not settle within the proxy's hold limit, so the response is released
   * before the turn's checkpoint committed (`record.gate` is 'timeout'). The agent may now act on
   * a state no checkpoint holds yet: the sandbox's next boundary should take a full checkpoint.
   * Called once, before the release; never throws into the proxy (exceptions are logged).
   */
  onHoldLimit?(record: Readonly<TurnRecord>): void;
}

export type GateState = 'pending' | 'committed' | 'skipped' | 'failed' | 'timeout';

/** What the proxy knows about one counted turn. Times `*At` are epoch ms of the proxy clock. */
export interface TurnRecord {
  sandboxId: string;
  turnIndex: number;
  method: string;
  /** Forwarded path without the query string. */
  path: string;
  receivedAt: number;
  /** When upstream status+headers arrived (or the proxy decided on a 502/504). */
  responseArrivedAt: number | null;
  /** When the gate settled. */
  gateSettledAt: number | null;
  /** When the response head was written to the agent. */
  releasedAt: number | null;
  /** How long the arrived response was held by the gate, ms (0 if the gate had settled before). */
  gateWaitMs: number | null;
  gate: GateState;
  /** Error message of a failed gate, or the settlement's detail. */
  gateDetail: string | null;
  /** Status sent to the agent. */
  status: number | null;
  /** Set when the proxy answered on the upstream's behalf. */
  upstreamError: 'unreachable' | 'timeout' | null;
  /** 'completed': body fully sent; 'aborted': agent went away; 'error': upstream broke mid-body. */
  end: 'completed' | 'aborted' | 'error' | null;
  completedAt: number | null;
}
