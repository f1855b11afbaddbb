#!/usr/bin/env node
/** @module The `crab` command line. */
import path from 'node:path';
import { Command, Option, InvalidArgumentError } from 'commander';
import type { BindMount } from '../sandbox/sandbox.js';
import { crabPaths, REPO_ROOT } from '../core/paths.js';
import { rootLogger } from '../core/log.js';
import { CrabError, invalid } from '../core/errors.js';
import { LocalService } from '../api/local-service.js';
import { HttpService } from '../api/http-service.js';
import type { CrabService } from '../api/service.js';
import { parseSizeBytes } from '../sandbox/oci-spec.js';
import { BASE_IMAGE } from '../image/image-store.js';
import { LINK_GATEWAY } from '../sandbox/net-link.js';
import { startDaemon } from '../daemon/daemon.js';
import { readTokenFile } from '../api/token.js';
import { checkId } from '../core/ids.js';
import { DEFAULT_GATE_MAX_HOLD_MS } from '../coordinator/proxy.js';
import { recoverAfterCrash } from '../checkpoint/crash-recovery.js';
import { formatBytes, printJson, printTable, reportError } from './output.js';
import { runDemo } from './demo.js';

// `crab … | head` closes our stdout early: that is the reader's choice, not an error.
process.stdout.on('error', (err: NodeJS.ErrnoException) => {
  if (err.code === 'EPIPE') process.exit(process.exitCode ?? 0);
  throw err;
});

const paths = crabPaths();
const progress = (m: string) => process.stderr.write(`  ${m}\n`);

/**
 * A daemon over TCP when CRAB_URL is set (its token from CRAB_TOKEN or the file CRAB_TOKEN_FILE
 * names), else the daemon on the unix socket; null when neither is wanted or answers.
 */
async function remoteDaemon(): Promise<HttpService | null> {
  if (process.env.CRAB_NO_DAEMON === '1') return null;
  const url = process.env.CRAB_URL;
  if (url) {
    const file = process.env.CRAB_TOKEN_FILE;
    const token = file ? readTokenFile(file) : process.env.CRAB_TOKEN;
    // A URL was asked for: no silent fallback to in-process work on this host.
    return new HttpService({ url, token });
  }
  const local = new HttpService({ socketPath: paths.socket });
  return (await local.ping()) ? local : null;
}

/** The daemon's API when a daemon answers (see remoteDaemon), else in-process. */
async function connect(): Promise<CrabService> {
  // First undo what a Crab process killed mid-checkpoint left on this host: it may have been the previous command.
  if (!process.env.CRAB_URL) await recoverAfterCrash(paths.sandboxes, path.join(paths.store, 'tmp'));
  return (await remoteDaemon()) ?? new LocalService(paths, progress);
}

function csv(v: string): string[] {
  return v.split(',').map((s) => s.trim()).filter(Boolean);
}

function size(v: string): number {
  const n = parseSizeBytes(v);
  if (n === null) throw new InvalidArgumentError('expected a size such as 512m or 1g');
  return n;
}

/** `SRC:DST[:ro|:rw]`: read-only unless `:rw`. */
function parseBind(v: string): BindMount {
  const [source, target, mode, ...rest] = v.split(':');
  if (!source || !target || rest.length || (mode !== undefined && mode !== 'ro' && mode !== 'rw')) throw new InvalidArgumentError('expected SRC:DST, SRC:DST:ro or SRC:DST:rw');
  return { source: path.resolve(source), target, readonly: mode !== 'rw' };
}

function positiveInt(v: string): number {
  const n = Number(v);
  if (!Number.isInteger(n) || n <= 0) throw new InvalidArgumentError('expected a positive integer');
  return n;
}

let jsonErrors = false;
function action<A extends unknown[]>(fn: (...args: A) => Promise<void>): (...args: A) => Promise<void> {
  return async (...args: A) => {
    const opts = args.find((a): a is { json?: boolean } => typeof a === 'object' && a !== null && 'json' in (a as object));
    jsonErrors = !!opts?.json;
    await fn(...args);
  };
}

const program = new Command('crab')
  .description('Crab: turn-aligned checkpoint/restore for AI-agent sandboxes (runc + CRIU)')
  .showHelpAfterError()
  .configureOutput({ outputError: (s, write) => write(s) });

program.command('setup').description('install everything Crab needs (packages, CRIU 4.2.1, build, base image); idempotent');

const image = program.command('image').description('build, import and list read-only images');
image
  .command('build [name]')
  .description(`build an image (default ${BASE_IMAGE}); with --packages, a derived image cached per package set`)
  .option('--packages <list>', 'comma-separated Debian packages to add', csv, [])
  .option('--json', 'print JSON')
  .action(
    action(async (name: string | undefined, o: { packages: string[]; json?: boolean }) => {
      const info = await (await connect()).buildImage(name ?? BASE_IMAGE, o.packages);
      if (o.json) printJson(info);
      else process.stdout.write(`${info.name}  ${formatBytes(info.sizeBytes)}  ${info.packages.join(',') || '(base)'}\n`);
    }),
  );
image
  .command('ls')
  .description('list images')
  .option('--json', 'print JSON')
  .action(
    action(async (o: { json?: boolean }) => {
      const list = await (await connect()).listImages();
      if (o.json) return printJson(list);
      printTable(
        list.map((i) => ({ NAME: i.name, SOURCE: i.source, SIZE: formatBytes(i.sizeBytes), PACKAGES: i.packages.join(',') || '-', CREATED: i.createdAt })),
        ['NAME', 'SOURCE', 'SIZE', 'PACKAGES', 'CREATED'],
      );
    }),
  );
image
  .command('import <name> <archive>')
  .description('import a `docker save` or OCI-layout tarball as an image')
  .option('--json', 'print JSON')
  .action(
    action(async (name: string, archive: string, o: { json?: boolean }) => {
      const info = await (await connect()).importImage(name, path.resolve(archive));
      if (o.json) printJson(info);
      else process.stdout.write(`imported ${info.name} (${formatBytes(info.sizeBytes)})\n`);
    }),
  );

const sandbox = program.command('sandbox').description('create, run commands in, list, stop and remove sandboxes');
sandbox
  .command('create')
  .description('create and start a sandbox')
  .option('--image <image>', 'image name', BASE_IMAGE)
  .option('--packages <list>', 'extra Debian packages (derived image built once and cached)', csv, [])
  .option('--name <name>', 'sandbox name (default: generated)')
  .option('--memory <size>', 'memory limit, e.g. 512m', size)
  .option('--pids <n>', 'process limit', positiveInt)
  .option('--ephemeral', 'remove it in `crab gc` once the creating process is gone')
  .option('--bind <src:dst[:ro|:rw]>', 'bind a host directory into the sandbox, read-only unless :rw (repeatable; nosuid, nodev)', (v: string, acc: BindMount[]) => [...acc, parseBind(v)], [])
  .option('--link', `a network link to the daemon's LLM proxy: an agent inside reaches it at http://${LINK_GATEWAY}:PORT/v1 and is known by its source address`)
  .option('--json', 'print JSON')
  .action(
    action(async (o: { image: string; packages: string[]; name?: string; memory?: number; pids?: number; ephemeral?: boolean; bind: BindMount[]; link?: boolean; json?: boolean }) => {
      const t0 = performance.now();
      const info = await (await connect()).createSandbox({
        image: o.image,
        packages: o.packages,
        name: o.name,
        memoryLimitBytes: o.memory,
        pidsLimit: o.pids,
        ephemeral: o.ephemeral,
        binds: o.bind,
        link: o.link,
      });
      if (o.json) printJson(info);
      else process.stdout.write(`${info.id}\t(${Math.round(performance.now() - t0)} ms)\n`);
    }),
  );
sandbox
  .command('exec <id> <cmd...>')
  .description('run a command (put it after --); with --session, in a persistent bash session')
  .option('--session <name>', 'persistent session name (created on first use)')
  .option('--timeout <ms>', 'kill the command after this many ms', positiveInt)
  .option('--cwd <dir>', 'working directory (one-shot commands)')
  .option('--json', 'print the result as JSON')
  .action(
    action(async (id: string, cmd: string[], o: { session?: string; timeout?: number; cwd?: string; json?: boolean }) => {
      const r = await (await connect()).exec(id, cmd.join(' '), { session: o.session, timeoutMs: o.timeout, cwd: o.cwd });
      if (o.json) printJson(r);
      else {
        process.stdout.write(r.stdout);
        process.stderr.write(r.stderr);
        if (r.timedOut) process.stderr.write(`crab: command timed out\n`);
      }
      process.exitCode = r.exitCode;
    }),
  );
sandbox
  .command('ls')
  .description('list sandboxes')
  .option('--json', 'print JSON')
  .action(
    action(async (o: { json?: boolean }) => {
      const list = await (await connect()).listSandboxes();
      if (o.json) return printJson(list);
      printTable(
        list.map((s) => ({ ID: s.id, STATUS: s.status, IMAGE: s.image, MEMORY: formatBytes(s.memoryLimitBytes), SESSIONS: s.sessions.join(',') || '-', CREATED: s.createdAt })),
        ['ID', 'STATUS', 'IMAGE', 'MEMORY', 'SESSIONS', 'CREATED'],
      );
    }),
  );
sandbox
  .command('stop <id>')
  .description('kill every process of the sandbox (its files stay)')
  .action(action(async (id: string) => (await connect()).stopSandbox(id)));
sandbox
  .command('rm <id>')
  .description('remove the sandbox: processes, mount, cgroups and files')
  .action(action(async (id: string) => (await connect()).removeSandbox(id)));

program
  .command('gc')
  .description('remove what crashed runs left behind (half-made or orphaned ephemeral sandboxes, mounts, cgroups, staging dirs) and shared fork layers nothing uses')
  .option('--json', 'print JSON')
  .action(
    action(async (o: { json?: boolean }) => {
      const r = await (await connect()).gc();
      if (o.json) return printJson(r);
      for (const [k, v] of Object.entries(r)) process.stdout.write(`${k}: ${(v as string[]).length ? (v as string[]).join(', ') : '-'}\n`);
    }),
  );

program
  .command('checkpoint <id>')
  .description('checkpoint a running sandbox: full (processes + files), fs (files only), process (processes + file delta)')
  .addOption(new Option('--kind <kind>', 'checkpoint kind').choices(['full', 'fs', 'process']).default('full'))
  .option('--turn <n>', 'turn number to record', positiveInt)
  .option('--json', 'print JSON')
  .action(
    action(async (id: string, o: { kind: 'full' | 'fs' | 'process'; turn?: number; json?: boolean }) => {
      const r = await (await connect()).checkpoint(id, { kind: o.kind, turn: o.turn ?? null });
      if (o.json) return printJson(r);
      process.stdout.write(
        `${r.checkpoint.id}  ${r.kind}  ${formatBytes(r.logicalBytes)} logical, ${formatBytes(r.newBytes)} new  (${Math.round(r.totalMs)} ms, frozen ${Math.round(r.frozenMs)} ms)\n`,
      );
    }),
  );
program
  .command('checkpoints <id>')
  .description("list a sandbox's checkpoints with lineage, kinds, sizes and effect reports")
  .option('--json', 'print JSON')
  .action(
    action(async (id: string, o: { json?: boolean }) => {
      const list = await (await connect()).listCheckpoints(id);
      if (o.json) return printJson(list);
      printTable(
        list.map((c) => ({
          ID: c.id,
          PARENT: c.parentId,
          KIND: c.kind,
          TURN: c.turn,
          LOGICAL: formatBytes(c.logicalBytes),
          NEW: formatBytes(c.newBytes),
          CREATED: new Date(c.createdAtMs).toISOString(),
          EFFECTS: c.corrupt ? `CORRUPT: ${c.corrupt}` : c.effects ? JSON.stringify(c.effects).slice(0, 60) : '-',
        })),
        ['ID', 'PARENT', 'KIND', 'TURN', 'LOGICAL', 'NEW', 'CREATED', 'EFFECTS'],
      );
    }),
  );
program
  .command('restore <checkpoint>')
  .description('restore a checkpoint (files, then processes) into its sandbox, or into a new one with --as')
  .option('--as <name>', 'restore into a new sandbox of this name')
  .option('--force', 'restore even if the host bind mounts changed since the checkpoint')
  .option('--json', 'print JSON')
  .action(
    action(async (ck: string, o: { as?: string; force?: boolean; json?: boolean }) => {
      const r = await (await connect()).restore(ck, { as: o.as, force: o.force });
      if (o.json) return printJson(r);
      process.stdout.write(`restored ${r.checkpointId} into ${r.sandboxId} in ${Math.round(r.totalMs)} ms\n`);
    }),
  );
program
  .command('rollback <id> <checkpoint>')
  .description('roll a sandbox back to one of its earlier checkpoints')
  .option('--force', 'roll back even if the host bind mounts changed since the checkpoint')
  .option('--json', 'print JSON')
  .action(
    action(async (id: string, ck: string, o: { force?: boolean; json?: boolean }) => {
      const r = await (await connect()).rollback(id, ck, { force: o.force });
      if (o.json) return printJson(r);
      process.stdout.write(`rolled ${r.sandboxId} back to ${r.checkpointId} in ${Math.round(r.totalMs)} ms\n`);
    }),
  );
program
  .command('fork <checkpoint>')
  .description('start N new sandboxes from one checkpoint (each its own id, cgroup and writable layer)')
  .option('-n, --count <n>', 'how many', positiveInt, 1)
  .option('--json', 'print JSON')
  .action(
    action(async (ck: string, o: { count: number; json?: boolean }) => {
      const r = await (await connect()).fork(ck, o.count);
      if (o.json) return printJson(r);
      for (const f of r) process.stdout.write(`${f.sandboxId}\t(${Math.round(f.totalMs)} ms)\n`);
    }),
  );
const store = program.command('store').description('the content-addressed checkpoint store');
store
  .command('stats')
  .description('chunks, bytes on disk and checkpoints')
  .option('--json', 'print JSON')
  .action(
    action(async (o: { json?: boolean }) => {
      const r = await (await connect()).storeStats();
      if (o.json) return printJson(r);
      process.stdout.write(`chunks: ${r.chunkCount}\nstored: ${formatBytes(r.storedBytes)}\ncheckpoints: ${r.checkpoints}\n`);
    }),
  );
store
  .command('verify')
  .description('re-hash every chunk; exit 1 when any is corrupt')
  .option('--json', 'print JSON')
  .action(
    action(async (o: { json?: boolean }) => {
      const bad = await (await connect()).storeVerify();
      if (o.json) printJson(bad);
      else process.stdout.write(bad.length ? bad.map((b) => `CORRUPT ${b.digest}: ${b.why}`).join('\n') + '\n' : 'all chunks verified\n');
      if (bad.length) process.exitCode = 1;
    }),
  );
store
  .command('gc')
  .description('delete chunks no live checkpoint references')
  .option('--json', 'print JSON')
  .action(
    action(async (o: { json?: boolean }) => {
      const r = await (await connect()).storeGc();
      if (o.json) return printJson(r);
      process.stdout.write(`deleted ${r.deletedChunks} chunks (${formatBytes(r.freedBytes)}); live ${r.liveChunks}; kept young ${r.keptYoung}\n`);
    }),
  );

/** Commands that need the daemon's runtime (inspector, engine, proxy). */
async function daemonApi(): Promise<HttpService> {
  const remote = await remoteDaemon();
  if (!remote) {
    throw new CrabError('DAEMON_REQUIRED', 'unavailable', `no crab daemon answers on ${paths.socket}`, "Start one with 'crab daemon' (it runs the inspector, the engine and the proxy).");
  }
  return remote;
}

program
  .command('inspect <id>')
  .description("the sandbox's effects since its last turn boundary, live (needs the daemon)")
  .option('--json', 'print JSON (the only output format of this command)')
  .action(
    action(async (id: string) => {
      const e = await (await daemonApi()).request<Record<string, unknown>>('GET', `/v1/sandboxes/${encodeURIComponent(id)}/inspect`);
      printJson(e);
    }),
  );
program
  .command('mode <id> <mode>')
  .description('checkpoint mode of a sandbox at turn boundaries: off | chat-only | full | crab (needs the daemon)')
  .action(
    action(async (id: string, mode: string) => {
      await (await daemonApi()).request('PUT', `/v1/sandboxes/${encodeURIComponent(id)}/mode`, { mode });
    }),
  );
program
  .command('boundary <id>')
  .description('signal a turn boundary without the proxy: takes the checkpoint the turn needs (needs the daemon)')
  .requiredOption('--turn <n>', 'turns completed so far', (v: string) => Number(v))
  .option('--json', 'print JSON')
  .action(
    action(async (id: string, o: { turn: number; json?: boolean }) => {
      const r = await (await daemonApi()).request<{ outcome: string; value?: { decision: string; reasons: string[] } }>('POST', `/v1/sandboxes/${encodeURIComponent(id)}/boundary`, { turn: o.turn });
      if (o.json) return printJson(r);
      process.stdout.write(`${r.outcome}: ${r.value?.decision ?? '-'} ${r.value?.reasons.join(',') ?? ''}\n`);
    }),
  );
program
  .command('recover <id>')
  .description('after a sandbox died: restore its newest checkpoint and say which turn it is back at')
  .option('--json', 'print JSON')
  .action(
    action(async (id: string, o: { json?: boolean }) => {
      const remote = await remoteDaemon();
      let r: { checkpointId: string; turn: number | null; restoreMs: number };
      if (remote) {
        r = await remote.request('POST', `/v1/sandboxes/${encodeURIComponent(id)}/recover`);
      } else {
        checkId('sandbox', id);
        const local = new LocalService(paths, progress);
        const cr = await local.checkpointer();
        const head = await cr.head(id);
        if (!head) throw new CrabError('RECOVER_NO_CHECKPOINT', 'not-found', `sandbox '${id}' has no checkpoint to recover from`);
        const res = await cr.restore(head, { force: true });
        r = { checkpointId: head, turn: (await cr.catalog.getCheckpoint(head)).turn, restoreMs: res.totalMs };
      }
      if (o.json) return printJson(r);
      process.stdout.write(`recovered ${id} from ${r.checkpointId}: back at turn ${r.turn ?? '?'} (${Math.round(r.restoreMs)} ms)\n`);
    }),
  );
program
  .command('preempt <id>')
  .description('spot preemption notice: take a final checkpoint within the grace window and say whether it made it (needs the daemon)')
  .option('--grace-ms <ms>', 'grace window', positiveInt, 30_000)
  .option('--json', 'print JSON')
  .action(
    action(async (id: string, o: { graceMs: number; json?: boolean }) => {
      const r = await (await daemonApi()).request<{ madeIt: boolean; checkpointId: string | null; tookMs: number; error?: string }>('POST', `/v1/sandboxes/${encodeURIComponent(id)}/preempt`, { graceMs: o.graceMs });
      if (o.json) printJson(r);
      else process.stdout.write(r.madeIt ? `final checkpoint ${r.checkpointId} in ${Math.round(r.tookMs)} ms\n` : `missed: ${r.error}\n`);
      if (!r.madeIt) process.exitCode = 1;
    }),
  );

program
  .command('bench <traces...>')
  .description('replay crab-trace/1 files (or directories of them) in every mode, with faults, against bench hosts (crab daemons it can crash), and print the figures')
  .option('--modes <list>', 'modes to compare: none, chat-only, full, crab', csv, ['none', 'chat-only', 'full', 'crab'])
  .option('--faults <plan>', '[kill:|host-crash:|mid-action:]none | every-turn | random:N | turn:K[:after-actions|:mid-wait] (every-turn and random:N crash the host by default, turn:K kills the sandbox)', 'none')
  .option('--latency-scale <x>', 'multiply recorded LLM waits in the fault sweep by this', Number, 1)
  .option('--overhead-scale <x>', 'latency scale of the no-fault runs (overhead is only valid at 1)', Number, 1)
  .option('--repetitions <n>', 'no-fault runs of each trace and mode: overhead as mean ± spread', positiveInt, 1)
  .option('--concurrency <n>', 'fault runs at once, each on a bench host of its own', positiveInt, 4)
  .option('--overhead-traces <n>', 'traces whose no-fault runs (all modes side by side) go on alongside the fault sweep', positiveInt, 2)
  .option('--memory <size>', 'memory limit of every replay sandbox (e.g. 2g, 512m)', size, 2 * 2 ** 30)
  .option('--colocate <n>', 'instead of traces: N sandboxes at once on one host per policy (reactive and fifo side by side) plus N in mode none, a generated session each (give "-" as the trace)', positiveInt)
  .option('--turns <n>', 'with --colocate: turns per session', positiveInt, 200)
  .option('--crashes <n>', 'with --colocate: host crashes per host, at random times', Number, 2)
  .addOption(new Option('--policy <policy>', 'checkpoint scheduling policy').choices(['fifo', 'reactive']).default('reactive'))
  .option('--json <file>', 'write the full report as JSON')
  .option('--html <file>', 'write an HTML page with charts')
  .option('--keep-homes', "keep the bench hosts' CRAB_HOMEs (stores, catalogs, daemon logs) under CRAB_HOME/bench/")
  .action(
    action(
      async (
        files: string[],
        o: {
          modes: string[]; faults: string; latencyScale: number; overheadScale: number; repetitions: number; concurrency: number; overheadTraces: number; memory: number;
          colocate?: number; turns: number; crashes: number; policy: 'fifo' | 'reactive'; json?: string; html?: string; keepHomes?: boolean;
        },
      ) => {
        const { startReplayUpstream } = await import('../bench/replay-upstream.js');
        for (const x of [o.latencyScale, o.overheadScale]) if (!(x > 0)) throw invalid('BENCH_BAD_SCALE', 'latency scales must be positive numbers');
        const upstream = await startReplayUpstream();
        // Faults make checkpoint jobs fail on purpose: keep their warnings out of the table unless asked.
        const log = rootLogger.child({ component: 'bench' });
        if (!process.env.CRAB_LOG_LEVEL) log.level = 'fatal';
        const tty = process.stderr.isTTY;
        const started = Date.now();
        // Ctrl-C: no new run starts, the ones under way finish (their sandboxes removed) and the
        // table covers what ran. A second Ctrl-C quits at once; `crab gc` removes what is left.
        const stop = new AbortController();
        const onSigint = () => {
          if (stop.signal.aborted) {
            process.stderr.write('\nbench: quitting now; the bench hosts under CRAB_HOME/bench/ are left (remove their sandboxes with CRAB_HOME=… crab gc)\n');
            process.exit(130);
          }
          stop.abort();
          process.stderr.write('\nbench: stopping: no new runs; the runs under way finish, then the figures of what ran (Ctrl-C again to quit at once)\n');
        };
        process.on('SIGINT', onSigint);
        const onProgress = (done: number, total: number, last: { trace: string; mode: string; fault: string; correct: boolean } | null) => {
          const width = 30;
          const filled = Math.round((done / Math.max(1, total)) * width);
          const eta = done ? Math.round(((Date.now() - started) / done) * (total - done) / 1000) : 0;
          const msg = `[${'#'.repeat(filled)}${' '.repeat(width - filled)}] ${done}/${total} runs, ~${eta} s left${last ? `  (${last.trace} ${last.mode} ${last.fault}: ${last.correct ? 'ok' : 'INCORRECT'})` : ''}`;
          process.stderr.write(tty ? `\r${msg.slice(0, process.stderr.columns ?? 120).padEnd(process.stderr.columns ?? 120)}` : `${msg}\n`);
        };
        try {
          if (o.colocate) {
            const { runColocated, renderColocated } = await import('../bench/colocate.js');
            const rep = await runColocated({ sandboxes: o.colocate, turns: o.turns, crashes: o.crashes, latencyScale: o.latencyScale, upstreamUrl: upstream.url, home: paths.home, memoryBytes: o.memory, keepHomes: o.keepHomes, signal: stop.signal }, progress);
            process.stdout.write(renderColocated(rep) + '\n');
            if (o.json) (await import('node:fs')).writeFileSync(o.json, JSON.stringify(rep, null, 2));
            return;
          }
          const { loadTraces } = await import('../bench/trace.js');
          const { parseFaultPlan, runBench } = await import('../bench/bench.js');
          const { BENCH_MODES } = await import('../bench/replay.js');
          const { renderTable, writeHtml, writeJson } = await import('../bench/report.js');
          const bad = o.modes.filter((m) => !(BENCH_MODES as readonly string[]).includes(m));
          if (bad.length) throw invalid('BENCH_BAD_MODE', `unknown mode(s) ${bad.join(', ')}`, `Use some of ${BENCH_MODES.join(', ')}.`);
          const faults = parseFaultPlan(o.faults);
          if (!faults) throw invalid('BENCH_BAD_FAULTS', `--faults '${o.faults}' is not a fault plan`, 'Use [kill:|host-crash:|mid-action:] followed by none, every-turn, random:N or turn:K[:after-actions|:mid-wait].');
          const traces = await loadTraces(files.map((f) => path.resolve(f)));
          if (traces.length === 0) throw invalid('BENCH_NO_TRACES', `no *.trace.jsonl in ${files.join(' ')}`);
          const rep = await runBench(
            traces,
            {
              modes: o.modes as never, faults, latencyScale: o.latencyScale, overheadScale: o.overheadScale, concurrency: o.concurrency, overheadTraces: o.overheadTraces,
              repetitions: o.repetitions, memoryBytes: o.memory, upstreamUrl: upstream.url, home: paths.home, policy: o.policy, keepHomes: o.keepHomes, signal: stop.signal, onProgress,
            },
            progress,
          );
          if (tty) process.stderr.write('\n');
          process.stdout.write(renderTable(rep) + '\n');
          if (o.json) writeJson(rep, o.json);
          if (o.html) writeHtml(rep, o.html);
        } finally {
          process.off('SIGINT', onSigint);
          await upstream.close();
        }
        if (stop.signal.aborted) process.exitCode = 130;
      },
    ),
  );

program
  .command('record <id>')
  .description('write the session so far (LLM turns through the proxy + commands run) as a crab-trace/1 file (needs the daemon)')
  .option('-o, --out <file>', 'output file (default: stdout)')
  .option('--name <name>', 'trace name (default: the sandbox id)')
  .action(
    action(async (id: string, o: { out?: string; name?: string }) => {
      const api = await daemonApi();
      const text = await api.requestText('GET', `/v1/sandboxes/${encodeURIComponent(id)}/record${o.name ? `?name=${encodeURIComponent(o.name)}` : ''}`);
      if (o.out) (await import('node:fs')).writeFileSync(o.out, text);
      else process.stdout.write(text);
    }),
  );

program
  .command('daemon')
  .description('run the per-host daemon: owns all sandboxes, serves the API on a unix socket (0600)')
  .option('--tcp <host:port>', 'also listen on TCP (requires --token-file, --token or CRAB_TOKEN)')
  .addOption(new Option('--token <token>', 'bearer token for the TCP listener (visible in ps: prefer --token-file)').env('CRAB_TOKEN'))
  .addOption(new Option('--token-file <file>', 'read the bearer token from this file (mode 0600)').env('CRAB_TOKEN_FILE'))
  .option('--bind-allow <dir>', 'API clients may bind (and import) host paths under this directory only (repeatable; without it: TCP clients none, the unix socket any outside CRAB_HOME and /proc, /sys, /dev)', (v: string, acc: string[]) => [...acc, v], [])
  .option('--gate-limit-ms <ms>', 'longest an LLM response is held for its checkpoint; then it is released and the next checkpoint is full', positiveInt, DEFAULT_GATE_MAX_HOLD_MS)
  .option('--proxy-upstream <url>', 'run the LLM proxy in front of this upstream (OpenAI/Anthropic-compatible)')
  .option('--proxy-port <port>', 'port of the LLM proxy on 127.0.0.1 (default: any free port)', positiveInt)
  .option('--no-proxy-link', `do not serve in-sandbox agents on ${LINK_GATEWAY} (sandboxes created with --link)`)
  .addOption(new Option('--policy <policy>', 'checkpoint scheduling policy').choices(['fifo', 'reactive']).default('reactive'))
  .option('--jobs <n>', 'checkpoint jobs at once (default: number of CPUs)', positiveInt)
  .option('--no-inspector', 'do not start the eBPF inspector (crab mode then takes full checkpoints)')
  .action(
    action(async (o: { tcp?: string; token?: string; tokenFile?: string; bindAllow: string[]; gateLimitMs: number; proxyUpstream?: string; proxyPort?: number; proxyLink: boolean; policy: 'fifo' | 'reactive'; jobs?: number; inspector: boolean }) => {
      let tcp: { host: string; port: number; token: string } | undefined;
      if (o.tcp) {
        const m = /^(.+):(\d+)$/.exec(o.tcp);
        if (!m) throw invalid('CLI_BAD_TCP', `--tcp wants host:port, got '${o.tcp}'`);
        if (o.token && o.tokenFile) throw invalid('CLI_TOKEN_TWICE', 'give the token once: --token-file or --token (CRAB_TOKEN), not both');
        const token = o.tokenFile ? readTokenFile(o.tokenFile) : o.token;
        if (!token) throw invalid('CLI_TOKEN_REQUIRED', '--tcp needs a bearer token', 'Pass --token-file FILE (mode 0600), or --token / CRAB_TOKEN.');
        tcp = { host: m[1]!, port: Number(m[2]), token };
      }
      const log = rootLogger.child({ component: 'daemon' });
      if (!process.env.CRAB_LOG_LEVEL) log.level = 'info';
      const d = await startDaemon({
        paths,
        log,
        tcp,
        bindAllow: o.bindAllow,
        host: {
          gateLimitMs: o.gateLimitMs,
          policy: o.policy,
          maxConcurrentJobs: o.jobs,
          inspector: o.inspector,
          proxy: o.proxyUpstream ? { upstreamUrl: o.proxyUpstream, port: o.proxyPort, link: o.proxyLink } : undefined,
        },
      });
      process.stderr.write(
        `crab daemon listening on ${paths.socket}${tcp ? ` and ${tcp.host}:${tcp.port}` : ''}${d.host.proxyUrl ? `; LLM proxy on ${d.host.proxyUrl}` : ''}${d.host.controller.agentEndpoint ? ` and, for sandboxes created with --link, http://${LINK_GATEWAY}:${d.host.controller.agentEndpoint.port}` : ''}\n`,
      );
      const stop = () => void d.close().then(() => process.exit(0));
      process.on('SIGTERM', stop);
      process.on('SIGINT', stop);
      await new Promise(() => undefined);
    }),
  );

program
  .command('demo')
  .description(
    'the main job: replay a few bundled traces in all four modes with a fault at every turn and print the figures ' +
      '(--walkthrough: one sandbox, checkpoint → crash → restore → fork, step by step)',
  )
  .option('--walkthrough', 'show one sandbox being checkpointed, killed, restored and forked instead')
  .option('--keep', 'walkthrough: keep the sandboxes afterwards')
  .action(
    action(async (o: { keep?: boolean; walkthrough?: boolean }) => {
      if (o.walkthrough) return runDemo(await connect(), o);
      const traces = ['shell-session-state', 'fix-pagination-off-by-one', 'background-counter-jobs'].map((n) => path.join(REPO_ROOT, 'traces', `${n}.trace.jsonl`));
      process.stderr.write(`crab demo: ${traces.length} bundled traces × modes none, chat-only, full, crab × a fault at every turn (LLM waits ×0.05; a few minutes)\n`);
      await program.parseAsync(['bench', ...traces, '--faults', 'every-turn', '--latency-scale', '0.05', '--overhead-scale', '0.05', '--concurrency', '4'], { from: 'user' });
    }),
  );

program.parseAsync(process.argv).catch((err: unknown) => {
  process.exitCode = reportError(err, jsonErrors);
});
