/**
 * @module The host-scoped checkpoint job scheduler. Mechanism only: it runs opaque jobs with a
 * concurrency limit, keeps each sandbox's jobs strictly in turn order (one at a time), retries a
 * failed job once and then escalates it, and measures everything. Which eligible job goes next
 * is decided by a pure `SchedulingPolicy` chosen by config.
 */
import os from 'node:os';
import { z } from 'zod';
import { CrabError, invalid } from '../core/errors.js';
import { rootLogger, type Logger } from '../core/log.js';
import { Counter, Gauge, Histogram, MetricsRegistry } from './metrics.js';
import { POLICIES, type Candidate, type PolicyName, type SchedulingPolicy } from './policy.js';

export const schedulerConfigSchema = z.object({
  /** Jobs running at once on this host. Default: os.availableParallelism(). */
  maxConcurrentJobs: z.number().int().positive().optional(),
  policy: z.enum(['fifo', 'reactive']).default('reactive'),
  /** Reactive policy: a job that waited this long goes ahead of urgent ones. */
  agingBoundMs: z.number().nonnegative().default(10_000),
  /** Extra attempts after a failure, before escalation. */
  retries: z.number().int().nonnegative().default(1),
});
export type SchedulerConfig = z.input<typeof schedulerConfigSchema>;

export interface JobKey {
  readonly sandboxId: string;
  readonly turnIndex: number;
}

export interface CheckpointJob<R> extends JobKey {
  /** The checkpoint work. Runs at most 1 + retries times; must be safe to re-run after a failure. */
  run: () => Promise<R>;
  /** Expected run time, ms, if the submitter can tell (used by the reactive policy). */
  costHintMs?: number;
  /** Overrides the scheduler's `escalate` for this job. */
  escalate?: (job: JobKey, lastError: unknown) => Promise<R>;
}

/**
 * What happened to a job. `committed`: first attempt succeeded; `retried`: a retry succeeded;
 * `escalated`: every attempt failed and `escalate` succeeded; `failed`: escalation failed too or
 * there was none to call (`value` is then undefined).
 */
export type JobOutcome = 'committed' | 'retried' | 'escalated' | 'failed';

export interface JobResult<R> extends JobKey {
  outcome: JobOutcome;
  value: R | undefined;
  /** Calls of `run` (escalation not counted). */
  attempts: number;
  /** Messages of every failure, in order (attempts, then escalation). */
  errors: string[];
  /** True if the job was urgent (its LLM response had arrived) when it started. */
  urgentAtStart: boolean;
  /** Scheduler clock, ms. */
  enqueuedAt: number;
  startedAt: number;
  finishedAt: number;
  waitMs: number;
  runMs: number;
}

export interface SchedulerDeps<R> {
  /** Called after the last retry failed, e.g. to take a full checkpoint instead. */
  escalate?: (job: JobKey, lastError: unknown) => Promise<R>;
  /** Monotonic clock in ms (default performance.now). */
  now?: () => number;
  logger?: Logger;
  /** Overrides the policy named in config (tests, experiments). */
  policy?: SchedulingPolicy;
}

export interface SchedulerStats {
  queued: number;
  running: number;
  urgentQueued: number;
  maxConcurrentJobs: number;
  policy: string;
}

interface Entry<R> extends Omit<Candidate, 'urgentSince'> {
  urgentSince: number | null;
  job: CheckpointJob<R>;
  resolve: (r: JobResult<R>) => void;
}

interface SandboxState<R> {
  queue: Entry<R>[];
  running: boolean;
  lastSubmittedTurn: number;
  /** Response-arrival marks not yet passed by a started job: turnIndex -> first mark time. */
  marks: Map<number, number>;
}

export class HostScheduler<R = unknown> {
  readonly maxConcurrentJobs: number;
  readonly policyName: string;
  private readonly policy: SchedulingPolicy;
  private readonly agingBoundMs: number;
  private readonly retries: number;
  private readonly now: () => number;
  private readonly log: Logger;
  private readonly sandboxes = new Map<string, SandboxState<R>>();
  private seq = 0;
  private runningCount = 0;
  private queuedCount = 0;
  private idleWaiters: Array<() => void> = [];

  readonly metrics = new MetricsRegistry();
  private readonly submitted: Counter;
  private readonly completed: Counter;
  private readonly attemptFailures: Counter;
  private readonly waitHist: Histogram;
  private readonly runHist: Histogram;
  private readonly gateHist: Histogram;
  private readonly gateOutcomes: Counter;
  private readonly holdLimits: Counter;

  constructor(
    config: SchedulerConfig = {},
    private readonly deps: SchedulerDeps<R> = {},
  ) {
    const parsed = schedulerConfigSchema.safeParse(config);
    if (!parsed.success) {
      throw invalid(
        'CONFIG_INVALID',
        `scheduler config: ${parsed.error.message}`,
        'Fix the scheduler section.',
      );
    }
    const cfg = parsed.data;
    this.maxConcurrentJobs = cfg.maxConcurrentJobs ?? os.availableParallelism();
    this.policyName = deps.policy ? 'custom' : cfg.policy;
    this.policy = deps.policy ?? POLICIES[cfg.policy as PolicyName];
    this.agingBoundMs = cfg.agingBoundMs;
    this.retries = cfg.retries;
    this.now = deps.now ?? (() => performance.now());
    this.log = (deps.logger ?? rootLogger).child({ component: 'engine' });

    const m = this.metrics;
    m.register(
      new Gauge(
        'crab_engine_queue_depth',
        'Checkpoint jobs submitted and not yet started.',
        () => this.queuedCount,
      ),
    );
    m.register(
      new Gauge('crab_engine_jobs_running', 'Checkpoint jobs running now.', () => this.runningCount),
    );
    m.register(
      new Gauge(
        'crab_engine_urgent_queued',
        'Queued jobs whose LLM response already arrived.',
        () => this.stats().urgentQueued,
      ),
    );
    m.register(
      new Gauge('crab_engine_max_concurrent_jobs', 'Concurrency limit.', () => this.maxConcurrentJobs),
    );
    this.submitted = m.register(
      new Counter('crab_engine_jobs_submitted_total', 'Checkpoint jobs submitted.'),
    );
    this.completed = m.register(
      new Counter('crab_engine_jobs_completed_total', 'Checkpoint jobs finished, by outcome.'),
    );
    this.attemptFailures = m.register(
      new Counter('crab_engine_job_attempt_failures_total', 'Failed job attempts.'),
    );
    this.waitHist = m.register(new Histogram('crab_engine_job_wait_seconds', 'Time from submit to start.'));
    this.runHist = m.register(
      new Histogram(
        'crab_engine_job_run_seconds',
        'Time from start to finish (retries and escalation included).',
      ),
    );
    this.gateHist = m.register(
      new Histogram('crab_gate_wait_seconds', 'Time an LLM response was held by its gate.'),
    );
    this.gateOutcomes = m.register(
      new Counter('crab_gate_releases_total', 'Gated responses released, by gate outcome.'),
    );
    this.holdLimits = m.register(
      new Counter(
        'crab_gate_hold_limit_exceeded_total',
        'Responses released by the gate hold limit before their checkpoint committed.',
      ),
    );
    this.holdLimits.inc({}, 0); // present (as 0) before the first one, for alerts on its rate
  }

  /**
   * Queues a job. Resolves when the job has finished (never rejects for job failures: the result
   * says what happened). A sandbox's jobs run one at a time in submission order.
   * Throws (rejects) SCHED_TURN_OUT_OF_ORDER if turnIndex is not greater than the sandbox's last one.
   */
  submit(job: CheckpointJob<R>): Promise<JobResult<R>> {
    const st = this.state(job.sandboxId);
    if (!Number.isInteger(job.turnIndex) || job.turnIndex <= st.lastSubmittedTurn) {
      return Promise.reject(
        new CrabError(
          'SCHED_TURN_OUT_OF_ORDER',
          'invalid',
          `turn ${job.turnIndex} of ${job.sandboxId} submitted out of order`,
          "Submit each sandbox's turns once, in increasing order.",
          {
            sandboxId: job.sandboxId,
            turnIndex: job.turnIndex,
            lastSubmittedTurn: st.lastSubmittedTurn,
          },
        ),
      );
    }
    st.lastSubmittedTurn = job.turnIndex;
    return new Promise<JobResult<R>>((resolve) => {
      st.queue.push({
        seq: this.seq++,
        sandboxId: job.sandboxId,
        turnIndex: job.turnIndex,
        enqueuedAt: this.now(),
        urgentSince: null,
        costHintMs: job.costHintMs ?? null,
        job,
        resolve,
      });
      this.queuedCount++;
      this.submitted.inc();
      this.pump();
    });
  }

  /**
   * The LLM response for `turnIndex` of `sandboxId` has arrived: its agent now waits on the gate.
   * Makes that sandbox's jobs up to this turn urgent (a job submitted later for this turn too).
   * Idempotent; the first mark's time counts.
   */
  markUrgent(sandboxId: string, turnIndex: number): void {
    const st = this.state(sandboxId);
    if (!st.marks.has(turnIndex)) st.marks.set(turnIndex, this.now());
    this.pump();
  }

  /** Records how long a gated response was held (for /metrics). */
  observeGateWait(ms: number, outcome = 'committed'): void {
    this.gateHist.observe(ms / 1000);
    this.gateOutcomes.inc({ outcome });
  }

  /** Counts a response released by the gate hold limit (for /metrics). */
  observeHoldLimit(): void {
    this.holdLimits.inc();
  }

  stats(): SchedulerStats {
    let urgentQueued = 0;
    for (const st of this.sandboxes.values()) {
      for (const e of st.queue) if (this.urgentSince(st, e.turnIndex) !== null) urgentQueued++;
    }
    return {
      queued: this.queuedCount,
      running: this.runningCount,
      urgentQueued,
      maxConcurrentJobs: this.maxConcurrentJobs,
      policy: this.policyName,
    };
  }

  /** Prometheus text exposition of the engine's metrics (content type PROMETHEUS_CONTENT_TYPE). */
  renderMetrics(): string {
    return this.metrics.render();
  }

  /** Resolves once nothing is queued or running. */
  drain(): Promise<void> {
    if (this.queuedCount === 0 && this.runningCount === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  /** Drops a removed sandbox's bookkeeping. Precondition: it has no queued or running job. */
  forget(sandboxId: string): void {
    const st = this.sandboxes.get(sandboxId);
    if (st && (st.running || st.queue.length > 0)) {
      throw new CrabError('SCHED_SANDBOX_BUSY', 'conflict', `sandbox ${sandboxId} still has checkpoint jobs`);
    }
    this.sandboxes.delete(sandboxId);
  }

  private state(sandboxId: string): SandboxState<R> {
    let st = this.sandboxes.get(sandboxId);
    if (!st) {
      st = { queue: [], running: false, lastSubmittedTurn: -Infinity, marks: new Map() };
      this.sandboxes.set(sandboxId, st);
    }
    return st;
  }

  private urgentSince(st: SandboxState<R>, turnIndex: number): number | null {
    let since: number | null = null;
    for (const [t, at] of st.marks) if (t >= turnIndex && (since === null || at < since)) since = at;
    return since;
  }

  private pump(): void {
    while (this.runningCount < this.maxConcurrentJobs) {
      const candidates: Entry<R>[] = [];
      for (const st of this.sandboxes.values()) {
        const head = st.queue[0];
        if (!head || st.running) continue;
        head.urgentSince = this.urgentSince(st, head.turnIndex);
        candidates.push(head);
      }
      if (candidates.length === 0) return;
      const i = this.policy(candidates, { now: this.now(), agingBoundMs: this.agingBoundMs });
      if (i < 0 || i >= candidates.length) return;
      const entry = candidates[i]!;
      const st = this.state(entry.sandboxId);
      st.queue.shift();
      this.queuedCount--;
      st.running = true;
      this.runningCount++;
      void this.execute(st, entry);
    }
  }

  private async execute(st: SandboxState<R>, e: Entry<R>): Promise<void> {
    const startedAt = this.now();
    const urgentAtStart = e.urgentSince !== null;
    // Marks for this turn and earlier are served now.
    for (const t of st.marks.keys()) if (t <= e.turnIndex) st.marks.delete(t);
    const log = this.log.child({ sandboxId: e.sandboxId, turnIndex: e.turnIndex });
    const errors: string[] = [];
    let outcome: JobOutcome = 'failed';
    let value: R | undefined;
    let attempts = 0;
    let lastError: unknown;
    while (attempts <= this.retries) {
      attempts++;
      try {
        value = await e.job.run();
        outcome = attempts === 1 ? 'committed' : 'retried';
        break;
      } catch (err) {
        lastError = err;
        errors.push(message(err));
        this.attemptFailures.inc();
        log.warn({ err, attempt: attempts }, 'checkpoint job attempt failed');
      }
    }
    if (outcome === 'failed') {
      const escalate = e.job.escalate ?? this.deps.escalate;
      if (escalate) {
        try {
          value = await escalate({ sandboxId: e.sandboxId, turnIndex: e.turnIndex }, lastError);
          outcome = 'escalated';
        } catch (err) {
          errors.push(message(err));
          log.error({ err }, 'checkpoint job escalation failed');
        }
      } else {
        log.error({ err: lastError }, 'checkpoint job failed and there is no escalation');
      }
    }
    const finishedAt = this.now();
    const result: JobResult<R> = {
      sandboxId: e.sandboxId,
      turnIndex: e.turnIndex,
      outcome,
      value,
      attempts,
      errors,
      urgentAtStart,
      enqueuedAt: e.enqueuedAt,
      startedAt,
      finishedAt,
      waitMs: startedAt - e.enqueuedAt,
      runMs: finishedAt - startedAt,
    };
    this.waitHist.observe(result.waitMs / 1000);
    this.runHist.observe(result.runMs / 1000);
    this.completed.inc({ outcome });
    st.running = false;
    this.runningCount--;
    e.resolve(result);
    this.pump();
    if (this.queuedCount === 0 && this.runningCount === 0) {
      const waiters = this.idleWaiters;
      this.idleWaiters = [];
      for (const w of waiters) w();
    }
  }
}

/** Factory: `createScheduler({ maxConcurrentJobs: 2, policy: 'reactive' }, { escalate })`. */
export function createScheduler<R = unknown>(
  config: SchedulerConfig = {},
  deps: SchedulerDeps<R> = {},
): HostScheduler<R> {
  return new HostScheduler<R>(config, deps);
}

function message(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
