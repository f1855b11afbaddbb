/**
 * @module The `crab-trace/1` workload format (see shared/trace-format.md): typed model, strict
 * parser and loaders. A trace is a JSON Lines file: line 1 is the header, every later line one
 * turn. Anything malformed is rejected with a `TRACE_INVALID` CrabError whose message names the
 * file, the 1-based line and the field at fault, e.g.
 * `traces/x.trace.jsonl:4: turns[3].llm.latency_ms: expected a non-negative integer`.
 */
import fs from 'node:fs/promises';
import path from 'node:path';
import { z } from 'zod';
import { CrabError, invalid, notFound } from '../core/errors.js';
import { ID_PATTERN, ID_RULE } from '../core/ids.js';

export const TRACE_FORMAT = 'crab-trace/1';
export const TRACE_BASE_IMAGE = 'debian-bookworm-minbase';
export const TRACE_SUFFIX = '.trace.jsonl';
export const DEFAULT_ACTION_TIMEOUT_S = 60;
/** A verify command often builds and runs a test suite: longer than an action. */
export const DEFAULT_VERIFY_TIMEOUT_S = 120;

const FORMAT_HELP = `see shared/trace-format.md for the ${TRACE_FORMAT} format`;

const nonNegInt = z.number({ error: 'expected a non-negative integer' }).int({ error: 'expected a non-negative integer' }).min(0, { error: 'expected a non-negative integer' });
const exitCode = z.number({ error: 'expected an exit status (integer 0–255)' }).int({ error: 'expected an exit status (integer 0–255)' }).min(0, { error: 'expected an exit status (integer 0–255)' }).max(255, { error: 'expected an exit status (integer 0–255)' });
const cmdText = z
  .string({ error: 'expected a non-empty string of shell text' })
  .min(1, { error: 'expected a non-empty string of shell text' })
  .refine((s) => !s.includes('\0'), { error: 'expected shell text without NUL characters (bash would drop them)' });
const packageName = z.string({ error: 'expected a Debian package name (string)' }).regex(/^[a-z0-9][a-z0-9+.-]+$/, { error: 'expected a Debian package name matching /^[a-z0-9][a-z0-9+.-]+$/' });

export const VerifyCmdSchema = z
  .object({
    cmd: cmdText,
    expect_exit: exitCode.default(0),
    expect_stdout: z.string({ error: 'expected a string' }).optional(),
    timeout_s: z.number({ error: 'expected a positive number of seconds' }).positive({ error: 'expected a positive number of seconds' }).finite().default(DEFAULT_VERIFY_TIMEOUT_S),
  })
  .strict();

export const TraceHeaderSchema = z
  .object({
    format: z.literal(TRACE_FORMAT, { error: `expected exactly "${TRACE_FORMAT}"` }),
    // The one id pattern (core/ids.ts): a trace's name names its runs, records and sandboxes.
    name: z.string({ error: 'expected a non-empty string' }).regex(ID_PATTERN, { error: `expected a name of ${ID_RULE}` }),
    source: z.string({ error: 'expected a string (where the task came from)' }),
    image: z
      .object({
        base: z.literal(TRACE_BASE_IMAGE, { error: `expected exactly "${TRACE_BASE_IMAGE}"` }),
        packages: z.array(packageName, { error: 'expected an array of Debian package names' }),
      }, { error: 'expected an object {base, packages}' })
      .strict(),
    shell: z.enum(['persistent', 'fresh'], { error: 'expected "persistent" or "fresh"' }).default('persistent'),
    setup: z.array(cmdText, { error: 'expected an array of shell commands' }).default([]),
    verify: z.array(VerifyCmdSchema, { error: 'expected an array of {cmd, expect_exit?, expect_stdout?, timeout_s?}' }).default([]),
  })
  .strict();

export const ActionSchema = z
  .object({
    cmd: cmdText,
    timeout_s: z.number({ error: 'expected a positive number of seconds' }).positive({ error: 'expected a positive number of seconds' }).finite().default(DEFAULT_ACTION_TIMEOUT_S),
    expect_exit: exitCode.optional(),
    expect_stdout: z.string({ error: 'expected a string' }).optional(),
  })
  .strict();

export const TraceTurnSchema = z
  .object({
    turn: z.number({ error: 'expected a positive integer' }).int({ error: 'expected a positive integer' }).min(1, { error: 'expected a positive integer' }),
    llm: z
      .object({
        latency_ms: nonNegInt,
        prompt_tokens: nonNegInt,
        completion_tokens: nonNegInt,
        response: z.string({ error: 'expected a string' }).optional(),
      }, { error: 'expected an object {latency_ms, prompt_tokens, completion_tokens, response?}' })
      .strict(),
    actions: z.array(ActionSchema, { error: 'expected an array of actions' }),
  })
  .strict();

export type VerifyCmd = z.infer<typeof VerifyCmdSchema>;
export type TraceHeader = z.infer<typeof TraceHeaderSchema>;
export type Action = z.infer<typeof ActionSchema>;
export type TraceTurn = z.infer<typeof TraceTurnSchema>;
export type ShellMode = TraceHeader['shell'];

export interface Trace {
  header: TraceHeader;
  turns: TraceTurn[];
  /** The file it was read from, as given to the parser. */
  file: string;
}

/** The error every malformed trace raises. */
export function traceError(file: string, line: number, field: string, problem: string): CrabError {
  const where = field ? `${file}:${line}: ${field}` : `${file}:${line}`;
  const hint = `fix line ${line} of ${file}${field ? ` (field ${field})` : ''}; ${FORMAT_HELP}`;
  return new CrabError('TRACE_INVALID', 'invalid', `${where}: ${problem}; ${hint}`, hint, { file, line, field });
}

function formatPath(prefix: string, p: readonly PropertyKey[]): string {
  let out = prefix;
  for (const k of p) {
    if (typeof k === 'number') out += `[${k}]`;
    else out += out ? `.${String(k)}` : String(k);
  }
  return out;
}

function describe(v: unknown): string {
  if (v === undefined) return 'nothing';
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'an array';
  if (typeof v === 'object') return 'an object';
  const s = JSON.stringify(v);
  return s.length > 40 ? `${s.slice(0, 37)}...` : s;
}

function valueAt(root: unknown, p: readonly PropertyKey[]): unknown {
  let cur: unknown = root;
  for (const k of p) {
    if (cur === null || typeof cur !== 'object') return undefined;
    cur = (cur as Record<PropertyKey, unknown>)[k];
  }
  return cur;
}

function parseLine<S extends z.ZodType>(schema: S, value: unknown, file: string, line: number, prefix: string): z.output<S> {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    throw traceError(file, line, prefix, `expected a JSON object, got ${describe(value)}`);
  }
  const r = schema.safeParse(value);
  if (r.success) return r.data;
  // Report the first issue, in a stable order (zod reports in schema order).
  const issue = r.error.issues[0]!;
  if (issue.code === 'unrecognized_keys') {
    const keys = issue.keys;
    const field = formatPath(prefix, [...issue.path, keys[0]!]);
    return throwIt(traceError(file, line, field, `unknown field${keys.length > 1 ? `s (${keys.join(', ')})` : ''} (objects are strict; remove it or check its spelling)`));
  }
  const field = formatPath(prefix, issue.path);
  const got = valueAt(value, issue.path);
  const problem = got === undefined ? `required field missing (${issue.message})` : `${issue.message}, got ${describe(got)}`;
  return throwIt(traceError(file, line, field, problem));
}

function throwIt(e: Error): never {
  throw e;
}

/** Parses and validates the text of a `crab-trace/1` file. `fileName` is used in error messages and kept in `Trace.file`. */
export function parseTrace(text: string, fileName: string): Trace {
  const lines = text.replace(/^\uFEFF/, '').split(/\r?\n/);
  // Blank trailing lines are fine; blank lines elsewhere are not.
  let end = lines.length;
  while (end > 0 && lines[end - 1]!.trim() === '') end--;
  if (end === 0) throw traceError(fileName, 1, 'header', `the file is empty; line 1 must be the header {"format": "${TRACE_FORMAT}", ...}`);

  const json = (i: number): unknown => {
    const raw = lines[i]!;
    if (raw.trim() === '') throw traceError(fileName, i + 1, i === 0 ? 'header' : `turns[${i}]`, 'blank line (only trailing blank lines are allowed; every line is one JSON object)');
    try {
      return JSON.parse(raw);
    } catch (e) {
      throw traceError(fileName, i + 1, i === 0 ? 'header' : `turns[${i}]`, `not valid JSON (${(e as Error).message})`);
    }
  };

  const headerValue = json(0);
  if (headerValue !== null && typeof headerValue === 'object' && !Array.isArray(headerValue)) {
    const fmt = (headerValue as Record<string, unknown>).format;
    if (fmt !== TRACE_FORMAT) {
      throw traceError(fileName, 1, 'header.format', fmt === undefined ? `line 1 must be the header, with "format": "${TRACE_FORMAT}"` : `expected exactly "${TRACE_FORMAT}", got ${describe(fmt)}`);
    }
  }
  const header = parseLine(TraceHeaderSchema, headerValue, fileName, 1, 'header');

  if (end < 2) throw traceError(fileName, 2, 'turns', 'a trace needs at least one turn (line 2 onwards, one turn per line)');
  const turns: TraceTurn[] = [];
  for (let i = 1; i < end; i++) {
    const prefix = `turns[${i}]`;
    const turn = parseLine(TraceTurnSchema, json(i), fileName, i + 1, prefix);
    if (turn.turn !== i) {
      throw traceError(fileName, i + 1, `${prefix}.turn`, `expected turn ${i} (turns are 1-based and consecutive, one per line after the header), got ${turn.turn}`);
    }
    turns.push(turn);
  }
  return { header, turns, file: fileName };
}

/** Reads and parses one trace file. */
export async function loadTrace(file: string): Promise<Trace> {
  let text: string;
  try {
    text = await fs.readFile(file, 'utf8');
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    if (err.code === 'ENOENT') throw notFound('TRACE_NOT_FOUND', `trace file ${file} does not exist`, 'check the path; trace files are named NAME.trace.jsonl');
    throw invalid('TRACE_UNREADABLE', `cannot read trace file ${file}: ${err.message}`, 'check the path and its permissions');
  }
  return parseTrace(text, file);
}

/**
 * Loads traces from files and directories (a directory means every `*.trace.jsonl` directly in
 * it, sorted by name). Trace names must be unique across the result.
 */
export async function loadTraces(dirOrFiles: string[]): Promise<Trace[]> {
  const files: string[] = [];
  for (const p of dirOrFiles) {
    let st;
    try {
      st = await fs.stat(p);
    } catch {
      throw notFound('TRACE_NOT_FOUND', `trace file or directory ${p} does not exist`, 'pass trace files (NAME.trace.jsonl) or directories holding them');
    }
    if (st.isDirectory()) {
      const names = (await fs.readdir(p)).filter((n) => n.endsWith(TRACE_SUFFIX)).sort();
      if (names.length === 0) throw notFound('TRACE_NOT_FOUND', `directory ${p} holds no *${TRACE_SUFFIX} files`, 'pass a directory of trace files, or the files themselves');
      files.push(...names.map((n) => path.join(p, n)));
    } else {
      files.push(p);
    }
  }
  const traces: Trace[] = [];
  const byName = new Map<string, string>();
  for (const f of files) {
    const t = await loadTrace(f);
    const prev = byName.get(t.header.name);
    if (prev !== undefined) {
      throw traceError(f, 1, 'header.name', `duplicate trace name "${t.header.name}" (also used by ${prev}); give each trace a unique name`);
    }
    byName.set(t.header.name, f);
    traces.push(t);
  }
  return traces;
}
