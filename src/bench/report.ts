/** @module Bench output: the terminal table, the JSON file and an HTML page with charts. */
import fs from 'node:fs';
import { isClean, type BenchReport } from './bench.js';
import { overheadFigures } from './summary.js';
import type { RunResult } from './run-result.js';

const pct = (x: number | null) => (x === null ? '-' : `${(x * 100).toFixed(1)}%`);
const mib = (n: number) => `${(n / 2 ** 20).toFixed(1)} MiB`;

const pctSpread = (m: number | null, sd: number | null) => (m === null ? '-' : sd === null ? pct(m) : `${pct(m)} ± ${(sd * 100).toFixed(1)}`);

export function renderTable(rep: BenchReport): string {
  const lines: string[] = [];
  const row = (cells: string[], widths: number[]) => cells.map((c, i) => c.padEnd(widths[i]!)).join('  ').trimEnd();
  const head = ['trace', 'mode', 'correct', 'wall (s, no fault)', 'overhead', 'ckpts f/p/fs/skip', 'charged (paper)', 'vs full', 'store', 'vs full (dedup)', 'gate p50/p99 ms', 'restore ms', 're-run turns', 'tokens wasted'];
  const body: string[][] = [];
  const traces = [...new Set(rep.runs.map((r) => r.trace))];
  const overheads = new Map(rep.options.modes.map((m) => [m, overheadFigures(rep.runs, m).perTrace]));
  for (const t of traces) {
    const fullClean = rep.runs.find((r) => r.trace === t && r.mode === 'full' && r.fault === 'none');
    for (const mode of rep.options.modes) {
      const rs = rep.runs.filter((r) => r.trace === t && r.mode === mode);
      const clean = rs.find((r) => r.fault === 'none');
      const restores = rs.map((r) => r.restore_ms).filter((x): x is number => x !== null);
      const faulted = rs.filter((r) => !isClean(r) && r.fault !== 'none-repeat');
      const checkpoints = mode === 'full' || mode === 'crab';
      const ov = overheads.get(mode)?.get(t) ?? [];
      const ovMean = ov.length ? ov.reduce((a, b) => a + b, 0) / ov.length : null;
      const ovSd = ov.length > 1 && ovMean !== null ? Math.sqrt(ov.reduce((a, x) => a + (x - ovMean) ** 2, 0) / (ov.length - 1)) : null;
      body.push([
        t,
        mode,
        `${rs.filter((r) => r.correct).length}/${rs.length}`,
        clean ? (clean.wall_ms / 1000).toFixed(1) : '-',
        mode === 'none' ? '-' : pctSpread(ovMean, ovSd),
        clean ? `${clean.ckpts.full}/${clean.ckpts.process}/${clean.ckpts.fs}/${clean.ckpts.skip}` : '-',
        clean && checkpoints ? mib(clean.ckpt_bytes) : '-',
        clean && checkpoints && fullClean?.ckpt_bytes ? pct(clean.ckpt_bytes / fullClean.ckpt_bytes) : '-',
        clean && checkpoints ? mib(clean.ckpt_dedup_bytes) : '-',
        clean && checkpoints && fullClean?.ckpt_dedup_bytes ? pct(clean.ckpt_dedup_bytes / fullClean.ckpt_dedup_bytes) : '-',
        clean ? `${Math.round(clean.gate_wait_ms.p50)}/${Math.round(clean.gate_wait_ms.p99)}` : '-',
        restores.length ? String(Math.round(restores.reduce((a, b) => a + b, 0) / restores.length)) : '-',
        faulted.length ? String(faulted.reduce((a, r) => a + r.turns_rerun, 0)) : '-',
        faulted.length ? String(faulted.reduce((a, r) => a + r.tokens_wasted, 0)) : '-',
      ]);
    }
  }
  const widths = head.map((h, i) => Math.max(h.length, ...body.map((b) => b[i]!.length)));
  lines.push(row(head, widths), row(widths.map((w) => '-'.repeat(w)), widths), ...body.map((b) => row(b, widths)));
  lines.push('');
  const sh = ['mode', 'correctness', 'runs', 'overhead vs none', 'charged (paper)', 'vs full', 'of turns', 'store', 'store vs full', 'vs full whole', 'vs full (dedup)', 'before dedup', 'gate p99 ms', 'restore p50 ms', 'crashes (busy)', 'ckpts lost', 're-run turns', 'skip (turns)'];
  const sb = Object.entries(rep.summary).map(([mode, s]) => {
    const ck = mode === 'full' || mode === 'crab';
    return [
      mode,
      pct(s.correctness),
      String(s.runs),
      mode === 'none' ? '0' : pctSpread(s.overhead_vs_none, s.overhead_spread),
      ck ? mib(s.ckpt_bytes) : '-',
      pct(s.traffic_vs_full),
      pct(s.traffic_vs_full_turns),
      ck ? mib(s.ckpt_dedup_bytes) : '-',
      pct(s.traffic_store_vs_full),
      pct(s.traffic_vs_full_whole),
      pct(s.traffic_vs_full_dedup),
      pct(s.traffic_vs_full_logical),
      String(Math.round(s.gate_wait_p99_ms)),
      s.restore_ms_p50 === null ? '-' : String(Math.round(s.restore_ms_p50)),
      s.crashes.total ? `${s.crashes.total} (${s.crashes.busy})` : '-',
      s.crashes.total ? String(s.crashes.ckpts_lost) : '-',
      String(s.turns_rerun),
      pct(s.skip_fraction),
    ];
  });
  const sw = sh.map((h, i) => Math.max(h.length, ...sb.map((b) => b[i]!.length)));
  lines.push(row(sh, sw), row(sw.map((w) => '-'.repeat(w)), sw), ...sb.map((b) => row(b, sw)));
  const shell = rep.summary.crab?.shell;
  if (shell) {
    const heavy = Object.entries(rep.trace_classes).filter(([, c]) => c.class === 'heavy');
    lines.push(
      '',
      `shell traces (${shell.traces}): crab vs full (paper) ${pct(shell.traffic_vs_full)}, of turns ${pct(shell.traffic_vs_full_turns)}; store vs full ${pct(shell.traffic_store_vs_full)}; ` +
        `vs full whole ${pct(shell.traffic_vs_full_whole)}; vs full (dedup) ${pct(shell.traffic_vs_full_dedup)}, of turns ${pct(shell.traffic_vs_full_dedup_turns)}; skip (turns) ${pct(shell.skip_fraction)}`,
      `heavy traces (${heavy.length}): ${heavy.map(([t, c]) => `${t} (${c.why})`).join('; ') || 'none'}`,
    );
  }
  const causes = rep.summary.crab?.bytes_by_cause;
  const causeTotal = causes ? Object.values(causes).reduce((a, t) => a + t.bytes, 0) : 0;
  if (causes && causeTotal > 0) {
    const parts = Object.entries(causes)
      .sort((a, b) => b[1].bytes - a[1].bytes)
      .map(([cause, t]) => `${cause} ${pct(t.bytes / causeTotal)} (${t.checkpoints})`);
    lines.push('', `crab's store bytes by cause (checkpoints): ${parts.join(', ')}`);
  }
  const limited = Object.entries(rep.summary).filter(([, s]) => s.memory_limited_runs > 0);
  lines.push(
    '',
    'per trace: the first no-fault run (wall, ckpts, charges, gate waits); overhead as mean ± sd over the repetitions; restore ms, re-run turns and tokens wasted over its fault runs',
    "charged (paper): the paper's full-per-turn charge, the same for every mode: each checkpoint's CRIU images whole as CRIU writes them (uncompressed), plus the files changed since the run's previous checkpoint, whole (a ZFS snapshot stores what changed). vs full: against full's; of turns: without boundary 0 (the setup)",
    "store: what the run's checkpoints write into a deduplicating, compressing store of their own (Crab's store; content another run stored first is not free); store vs full: that against full's paper charge",
    "vs full whole: against full's checkpoints each written whole, compressed, nothing shared (crab: its store); vs full (dedup): full deduplicated too, what the policy alone saves; before dedup: what the checkpoints hold, uncompressed",
    `faults: ${rep.options.faults} (kind ${rep.options.fault_kind}); crashes (busy): host crashes, and those that caught the daemon checkpointing the sandbox; ckpts lost: checkpoints listed before a crash and gone after it`,
    `overhead and traffic: no-fault runs at latency scale ${rep.options.overhead_scale}${rep.options.overhead_scale === 1 ? '' : ' (NOT valid as overhead figures: only scale 1 is)'}, ${rep.options.repetitions} repetition(s); ` +
      `fault sweep at latency scale ${rep.options.latency_scale}; concurrency ${rep.options.concurrency}; memory ${Math.round(rep.options.memory_bytes / 2 ** 20)} MiB per sandbox; ` +
      `${rep.machine.cpus} CPUs, ${rep.machine.memGiB} GiB, kernel ${rep.machine.kernel}; ${(rep.duration_ms / 1000).toFixed(0)} s; ${rep.hosts.started} bench hosts, ${rep.hosts.restarts} restarts after crashes`,
    `event-loop lag of the bench process (it drives every replay): p50 ${rep.event_loop_lag_ms.p50} ms, p99 ${rep.event_loop_lag_ms.p99} ms, max ${rep.event_loop_lag_ms.max} ms`,
  );
  if (limited.length) lines.push(`runs that hit their sandbox's memory limit: ${limited.map(([m, s]) => `${m} ${s.memory_limited_runs}`).join(', ')}`);
  if (rep.stopped) lines.push('', `STOPPED: ${rep.stopped.runs_done} of ${rep.stopped.runs_planned} runs ran; ${rep.stopped.runs_judged} are in these figures (those of traces whose two reference runs did not both finish cannot be judged)`);
  const wrong = rep.runs.filter((r) => !r.correct && r.mode !== 'chat-only').slice(0, 20);
  if (wrong.length) lines.push('', 'incorrect runs (not chat-only):', ...wrong.map((r) => `  ${r.trace} ${r.mode} ${r.fault}: ${r.reason}`));
  return lines.join('\n');
}

export function writeJson(rep: BenchReport, file: string): void {
  const runs = rep.runs.map((r) => {
    const { gate_waits: _g, bytes_per_turn: _b, final: _f, ...rest } = r;
    return rest;
  });
  fs.writeFileSync(file, JSON.stringify({ ...rep, runs }, null, 2));
}

/** Bars of `values`, `max` at full height (one scale for charts side by side). */
function bars(values: number[], w: number, h: number, color: string, max = Math.max(1, ...values)): string {
  const bw = w / Math.max(1, values.length);
  return values.map((v, i) => `<rect x="${(i * bw).toFixed(1)}" y="${(h - (v / max) * h).toFixed(1)}" width="${Math.max(1, bw - 1).toFixed(1)}" height="${((v / max) * h).toFixed(1)}" fill="${color}"><title>${v}</title></rect>`).join('');
}

/** An HTML page: traffic per turn (full vs crab), gate wait distribution, timeline per sandbox run. */
export function writeHtml(rep: BenchReport, file: string): void {
  const clean = (mode: string) => rep.runs.filter((r: RunResult) => r.mode === mode && r.fault === 'none');
  const sections: string[] = [];
  for (const t of [...new Set(rep.runs.map((r) => r.trace))]) {
    const full = clean('full').find((r) => r.trace === t);
    const crab = clean('crab').find((r) => r.trace === t);
    if (!full && !crab) continue;
    const n = Math.max(full?.bytes_per_turn.length ?? 0, crab?.bytes_per_turn.length ?? 0);
    const fv = Array.from({ length: n }, (_, i) => full?.bytes_per_turn[i] ?? 0);
    const cv = Array.from({ length: n }, (_, i) => crab?.bytes_per_turn[i] ?? 0);
    const max = Math.max(1, ...fv, ...cv);
    sections.push(
      `<h3>${t}</h3><p>paper charge per turn boundary, one scale: full <span style="color:#c44">■</span> vs crab <span style="color:#36c">■</span></p>` +
        `<svg width="600" height="80">${bars(fv, 600, 80, '#c44', max)}</svg><br><svg width="600" height="80">${bars(cv, 600, 80, '#36c', max)}</svg>`,
    );
  }
  const waits = clean('crab').flatMap((r) => r.gate_waits);
  const buckets = [0, 1, 5, 10, 50, 100, 250, 500, 1000, 5000];
  const hist = buckets.map((b, i) => waits.filter((w) => w >= b && (i === buckets.length - 1 || w < buckets[i + 1]!)).length);
  const timeline = clean('crab')
    .map((r) => `<div>${r.trace}: ${r.gate_waits.map((g) => `<span title="${Math.round(g)} ms" style="display:inline-block;width:8px;height:12px;margin:1px;background:${g > 50 ? '#c44' : g > 0 ? '#fa3' : '#3a3'}"></span>`).join('')}</div>`)
    .join('');
  const html = `<!doctype html><meta charset="utf-8"><title>crab bench</title><style>body{font:14px sans-serif;margin:2em}pre{background:#f4f4f4;padding:1em}</style>
<h1>crab bench</h1><pre>${renderTable(rep).replace(/&/g, '&amp;').replace(/</g, '&lt;')}</pre>
<h2>Gate wait distribution (crab, no fault)</h2><p>buckets (ms): ${buckets.join(', ')}</p><svg width="600" height="100">${bars(hist, 600, 100, '#36c')}</svg>
<h2>Timeline per sandbox (crab, no fault): one box per turn; green = no wait, orange = held, red = held &gt; 50 ms</h2>${timeline}
<h2>Traffic per turn</h2>${sections.join('\n')}`;
  fs.writeFileSync(file, html);
}
