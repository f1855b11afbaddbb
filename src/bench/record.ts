/**
 * @module `crab record`: turns what the daemon saw of a real agent session (its LLM requests
 * through the proxy and the commands it ran in the sandbox) into a crab-trace/1 file.
 * Commands before the first LLM request become `setup`; the commands between the response of
 * request k and request k+1 are turn k's actions. Pure.
 */
import { TRACE_BASE_IMAGE, TRACE_FORMAT } from './trace.js';

export interface ObservedRequest {
  turnIndex: number;
  receivedAt: number;
  responseArrivedAt: number | null;
}

export interface ObservedExec {
  at: number;
  cmd: string;
  session: string | null;
  exitCode: number;
  timeoutMs: number;
}

export interface RecordOptions {
  name: string;
  source: string;
  packages: string[];
}

export function buildTrace(requests: ObservedRequest[], execs: ObservedExec[], opts: RecordOptions): string {
  const reqs = [...requests].sort((a, b) => a.turnIndex - b.turnIndex);
  const sorted = [...execs].sort((a, b) => a.at - b.at);
  const firstAt = reqs[0]?.receivedAt ?? Infinity;
  const header = {
    format: TRACE_FORMAT,
    name: opts.name,
    source: opts.source,
    image: { base: TRACE_BASE_IMAGE, packages: opts.packages },
    shell: sorted.every((e) => e.session !== null) ? 'persistent' : 'fresh',
    setup: sorted.filter((e) => e.at < firstAt).map((e) => e.cmd),
    verify: [],
  };
  const lines = [JSON.stringify(header)];
  // The last request is the agent's final look: it has no actions after it, so it is not a turn.
  for (let i = 0; i < reqs.length - 1; i++) {
    const r = reqs[i]!;
    const next = reqs[i + 1]!;
    const latency = r.responseArrivedAt !== null ? Math.max(0, Math.round(r.responseArrivedAt - r.receivedAt)) : 0;
    const actions = sorted
      .filter((e) => e.at >= r.receivedAt && e.at < next.receivedAt)
      .map((e) => ({ cmd: e.cmd, timeout_s: Math.max(1, Math.ceil(e.timeoutMs / 1000)), expect_exit: e.exitCode }));
    lines.push(JSON.stringify({ turn: i + 1, llm: { latency_ms: latency, prompt_tokens: 0, completion_tokens: 0 }, actions }));
  }
  return lines.join('\n') + '\n';
}
