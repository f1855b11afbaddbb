/**
 * @module The composition of one host's runtime: sandboxes, the C/R chain, the eBPF inspector,
 * the turn controller, the host-scoped checkpoint scheduler and (optionally) the LLM proxy.
 * `crab daemon` runs one; `crab bench` runs one in-process.
 */
import fs from 'node:fs';
import type { CrabPaths } from '../core/paths.js';
import type { Logger } from '../core/log.js';
import { CrabError, notFound } from '../core/errors.js';
import { checkId } from '../core/ids.js';
import { LocalService } from '../api/local-service.js';
import type { Checkpointer } from '../checkpoint/checkpointer.js';
import { EbpfInspector, DEFAULT_HELPER } from '../inspector/ebpf-inspector.js';
import type { Inspector, TurnEffects } from '../inspector/inspector.js';
import { TurnController, type BoundaryResult, type CheckpointMode } from '../coordinator/turn-controller.js';
import { DEFAULT_GATE_MAX_HOLD_MS, createLlmProxy, type LlmProxy } from '../coordinator/proxy.js';
import { schedulerTurnHooks } from '../coordinator/scheduler-hooks.js';
import { createScheduler, type HostScheduler, type JobResult } from '../engine/scheduler.js';
import { POLICIES, type SchedulingPolicy } from '../engine/policy.js';
import { buildTrace, type ObservedExec } from '../bench/record.js';
import { readImage } from '../image/image-store.js';
import { LINK_GATEWAY, ensureGateway, leaseOwner } from '../sandbox/net-link.js';

export interface HostOptions {
  paths: CrabPaths;
  log: Logger;
  /** Use the eBPF inspector (default true; without it, crab mode takes full checkpoints). */
  inspector?: boolean;
  policy?: 'fifo' | 'reactive';
  maxConcurrentJobs?: number;
  /** Let callers put sandboxes in `prioritySandboxes`, whose checkpoint jobs start first. */
  prioritySandboxes?: boolean;
  /** Start the LLM proxy in front of this upstream. */
  /** `link`: also listen on the sandbox link gateway for in-sandbox agents (default true). */
  proxy?: { upstreamUrl: string; port?: number; host?: string; link?: boolean };
  /**
   * Longest the proxy holds an LLM response for its turn's checkpoint (default
   * DEFAULT_GATE_MAX_HOLD_MS, 30 s). Past it the response goes out, the turn's record says
   * 'timeout', /metrics counts it, and the sandbox's next boundary takes a full checkpoint.
   */
  gateLimitMs?: number;
}

export interface RecoverResult {
  sandboxId: string;
  checkpointId: string;
  /** Turns completed in the restored state (the checkpoint's turn). */
  turn: number | null;
  restoreMs: number;
}

export class CrabHost {
  private constructor(
    readonly service: LocalService,
    readonly checkpointer: Checkpointer,
    readonly inspector: Inspector | null,
    readonly controller: TurnController,
    readonly scheduler: HostScheduler<BoundaryResult>,
    readonly proxy: LlmProxy | null,
    readonly proxyUrl: string | null,
    /**
     * Sandboxes whose checkpoint jobs the scheduler starts before any other's (the policy orders
     * each group). `crab bench` puts its overhead runs here, so the fault sweep running alongside
     * does not queue their checkpoints.
     */
    readonly prioritySandboxes: Set<string> = new Set(),
  ) {
    service.execObservers.push((id, cmd, o, r, at) => {
      const list = this.execJournal.get(id) ?? [];
      list.push({ at, cmd, session: o.session ?? null, exitCode: r.exitCode, timeoutMs: o.timeoutMs ?? 60_000 });
      this.execJournal.set(id, list);
    });
    service.sandboxes.lifecycle.removing.push(async (id) => void this.execJournal.delete(id));
  }

  /** Commands run per sandbox, for `crab record`. */
  private readonly execJournal = new Map<string, ObservedExec[]>();

  static async start(opts: HostOptions): Promise<CrabHost> {
    const log = opts.log;
    const service = new LocalService(opts.paths, (m) => log.info({ progress: m }, 'progress'));
    const checkpointer = await service.checkpointer();
    let inspector: EbpfInspector | null = null;
    if (opts.inspector !== false) {
      if (!fs.existsSync(DEFAULT_HELPER)) {
        log.warn({ helper: DEFAULT_HELPER }, "eBPF helper not built (run 'crab setup'): crab mode takes full checkpoints");
      } else {
        inspector = new EbpfInspector({ logger: log.child({ component: 'inspector' }) });
        await inspector.start();
      }
    }
    const controller = new TurnController({ sandboxes: service.sandboxes, checkpointer, inspector, log: log.child({ component: 'turns' }) });
    const prioritySandboxes = new Set<string>();
    const scheduler = createScheduler<BoundaryResult>(
      { policy: opts.policy ?? 'reactive', maxConcurrentJobs: opts.maxConcurrentJobs },
      {
        escalate: (job) => controller.onBoundary(job.sandboxId, job.turnIndex, { escalate: true }),
        logger: log.child({ component: 'engine' }),
        policy: opts.prioritySandboxes ? prioritizing(POLICIES[opts.policy ?? 'reactive'], prioritySandboxes) : undefined,
      },
    );
    service.sandboxes.lifecycle.started.push((id) => controller.attach(id));
    service.sandboxes.lifecycle.removing.push((id) => controller.detach(id));
    // Sandboxes that survived a daemon restart: follow them again (their turns start now).
    for (const sb of await service.sandboxes.list()) if (sb.status === 'running') await controller.attach(sb.id).catch(() => undefined);

    let proxy: LlmProxy | null = null;
    let proxyUrl: string | null = null;
    if (opts.proxy) {
      const sandboxes = service.sandboxes;
      proxy = createLlmProxy(
        { upstreamUrl: opts.proxy.upstreamUrl, gateMaxHoldMs: opts.gateLimitMs ?? DEFAULT_GATE_MAX_HOLD_MS },
        {
          hooks: schedulerTurnHooks(
            scheduler,
            (b) => {
              const mode = controller.mode(b.sandboxId);
              return mode === 'off' || mode === 'chat-only' ? null : () => controller.onBoundary(b.sandboxId, b.turnIndex);
            },
            { onHoldLimit: (b) => controller.holdLimitExceeded(b.sandboxId, b.turnIndex) },
          ),
          isKnownSandbox: (id) => fs.existsSync(sandboxes.dirs(id).record),
          // An agent inside a sandbox created with --link: its source address names the sandbox.
          sandboxByAddress: (addr) => leaseOwner(sandboxes.linkLeaseDir, addr.replace(/^::ffff:/, ''), sandboxes.linkScope) ?? undefined,
          logger: log.child({ component: 'proxy' }),
        },
      );
      proxyUrl = await proxy.listen(opts.proxy.port ?? 0, opts.proxy.host ?? '127.0.0.1');
      log.info({ proxyUrl }, 'LLM proxy listening');
      if (opts.proxy.link !== false) {
        await ensureGateway();
        const linkUrl = await proxy.listenAlso(Number(new URL(proxyUrl).port), LINK_GATEWAY);
        controller.agentEndpoint = { address: LINK_GATEWAY, port: Number(new URL(linkUrl).port) };
        log.info({ linkUrl }, 'LLM proxy listening for in-sandbox agents (sandboxes created with --link)');
      }
    }
    return new CrabHost(service, checkpointer, inspector, controller, scheduler, proxy, proxyUrl, prioritySandboxes);
  }

  /** A turn boundary signalled directly (without the proxy): the checkpoint job, through the engine. */
  boundary(sandboxId: string, turn: number): Promise<JobResult<BoundaryResult>> {
    this.service.sandboxes.record(sandboxId); // an unknown sandbox is a 404, not a failed job
    return this.scheduler.submit({ sandboxId, turnIndex: turn, run: () => this.controller.onBoundary(sandboxId, turn) });
  }

  setMode(sandboxId: string, mode: CheckpointMode): void {
    this.service.sandboxes.record(sandboxId);
    this.controller.setMode(sandboxId, mode);
  }

  /** Effects of the current turn so far (live; does not start a new turn). */
  async inspect(sandboxId: string): Promise<TurnEffects> {
    this.service.sandboxes.record(sandboxId);
    if (!this.inspector) throw new CrabError('INSPECTOR_UNAVAILABLE', 'unavailable', 'the eBPF inspector is not running', "Run 'crab setup' to build it, then restart the daemon.");
    return this.inspector.effects(sandboxId, { reset: false });
  }

  /** After a sandbox died: restore its newest checkpoint; says which turn it is back at. */
  async recover(sandboxId: string): Promise<RecoverResult> {
    checkId('sandbox', sandboxId);
    const head = await this.checkpointer.head(sandboxId);
    if (!head) throw notFound('RECOVER_NO_CHECKPOINT', `sandbox '${sandboxId}' has no checkpoint to recover from`, 'Only sandboxes checkpointed at least once (mode full or crab) can be recovered.');
    const r = await this.checkpointer.restore(head, { force: true });
    await this.controller.afterRestore(sandboxId, { id: head });
    this.scheduler.forget(sandboxId); // turns after the checkpoint are replayed: their indexes come again
    const ck = await this.checkpointer.catalog.getCheckpoint(head);
    if (ck.turn !== null) this.proxy?.setNextTurnIndex(sandboxId, ck.turn + 1);
    return { sandboxId, checkpointId: head, turn: ck.turn, restoreMs: r.totalMs };
  }

  /** Spot preemption: a final full checkpoint within the grace window; says whether it made it. */
  async preempt(sandboxId: string, graceMs: number): Promise<{ madeIt: boolean; checkpointId: string | null; tookMs: number; error?: string }> {
    this.service.sandboxes.record(sandboxId);
    const t0 = performance.now();
    const take = this.checkpointer.take(sandboxId, { kind: 'full', turn: null });
    const timer = new Promise<'late'>((r) => setTimeout(() => r('late'), graceMs).unref());
    const first = await Promise.race([take.then((x) => ({ ok: x }), (e: unknown) => ({ err: e })), timer]);
    const tookMs = performance.now() - t0;
    if (first === 'late') {
      take.catch(() => undefined); // it may still commit later; the report says it missed the window
      return { madeIt: false, checkpointId: null, tookMs, error: `no checkpoint within ${graceMs} ms` };
    }
    if ('err' in first) return { madeIt: false, checkpointId: null, tookMs, error: String((first.err as Error).message ?? first.err) };
    return { madeIt: true, checkpointId: first.ok.checkpoint.id, tookMs };
  }

  /** The session so far as a crab-trace/1 file (LLM requests through the proxy + the commands run). */
  record(sandboxId: string, opts: { name?: string; source?: string } = {}): string {
    const rec = this.service.sandboxes.record(sandboxId);
    if (!this.proxy) throw new CrabError('RECORD_NO_PROXY', 'precondition', 'recording needs the LLM proxy', "Start the daemon with --proxy-upstream URL and point the agent's base URL at it.");
    const image = this.service.sandboxes.paths.images;
    const packages = readImage(image, rec.image)?.packages ?? [];
    return buildTrace(this.proxy.turns(sandboxId), this.execJournal.get(sandboxId) ?? [], {
      name: checkId('trace', opts.name ?? sandboxId),
      source: opts.source ?? `recorded by crab record from sandbox ${sandboxId} on ${new Date().toISOString().slice(0, 10)}`,
      packages,
    });
  }

  metrics(): string {
    return this.scheduler.renderMetrics();
  }

  async close(): Promise<void> {
    await this.proxy?.close();
    await this.inspector?.close();
  }
}

/** `base`, applied to the jobs of `first` sandboxes alone whenever one of them may start. */
export function prioritizing(base: SchedulingPolicy, first: ReadonlySet<string>): SchedulingPolicy {
  return (candidates, ctx) => {
    if (first.size === 0) return base(candidates, ctx);
    const idx: number[] = [];
    for (let i = 0; i < candidates.length; i++) if (first.has(candidates[i]!.sandboxId)) idx.push(i);
    if (idx.length === 0 || idx.length === candidates.length) return base(candidates, ctx);
    const i = base(idx.map((j) => candidates[j]!), ctx);
    return i < 0 ? -1 : idx[i]!;
  };
}
