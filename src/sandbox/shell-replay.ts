/**
 * @module Shell state as a script. A turn that only changed a session shell's state (`cd`,
 * `export`, a function, an alias, an option) need not dump the processes again: the state the
 * shell had at its last process image, and the state it has now (both as the session's
 * `state.raw`, see `channel.ts`), give a script that takes a restored shell from the one to the
 * other. A restore runs it in the session and checks the state digest it ends with.
 *
 * Only what the script can set exactly is replayed: scalar variables (plain or exported),
 * functions, aliases, `set -o`/`shopt` options, umask, cwd. Anything else that changed (arrays,
 * integer or readonly variables, exported functions, traps, jobs) refuses, and the caller takes a
 * process checkpoint as before. (`declare -p` prints a value with newlines on one line, $'…'-quoted.)
 */

import { shellQuote } from './channel.js';

const RS = '\x1e';

type Sections = Map<string, string[]>;

/** The parts of a state text by name (each the lines after its `RS name` line); null if it has none. */
export function stateSections(text: string): Sections | null {
  const out: Sections = new Map();
  let cur: string[] | null = null;
  for (const line of text.split('\n')) {
    if (line.startsWith(RS)) out.set(line.slice(1), (cur = []));
    else if (cur) cur.push(line);
    else if (line !== '') return null; // text before the first part: not this format
  }
  for (const lines of out.values()) while (lines.length && lines[lines.length - 1] === '') lines.pop();
  return out.size ? out : null;
}

const VAR_LINE = /^declare -([a-zA-Z-]+) ([A-Za-z_][A-Za-z0-9_]*)(=.*)?$/;
/** A value as `declare -p` prints a scalar: one line, double-quoted or $'…'-quoted. */
const SCALAR_VALUE = /^=("(?:[^"\\]|\\.)*"|\$'(?:[^'\\]|\\.)*')$/;
/** Options a script must not set: they change how the shell reads what follows, or cannot be set. */
const FIXED_SET = new Set(['noexec', 'monitor', 'posix', 'history', 'onecmd', 'privileged', 'emacs', 'vi', 'interactive-comments']);
const FIXED_SHOPT = new Set(['login_shell', 'restricted_shell']);
/** Variables the shell derives from what the script does set (`set -o` gives SHELLOPTS). */
const DERIVED_VARS = new Set(['SHELLOPTS']);

interface Var {
  flags: string;
  value: string | undefined;
  line: string;
}

function parseVars(lines: readonly string[]): Map<string, Var> | string {
  const out = new Map<string, Var>();
  for (const line of lines) {
    const m = VAR_LINE.exec(line);
    if (!m) return `a variable line it cannot read (${line.slice(0, 40)})`;
    out.set(m[2]!, { flags: m[1]!, value: m[3], line });
  }
  return out;
}

/** `moved`: variables the script itself changed before (a `cd` sets OLDPWD): set them whatever `from` says. */
function varLines(from: Map<string, Var>, to: Map<string, Var>, moved: ReadonlySet<string>): string[] | string {
  const out: string[] = [];
  const plain = (v: Var) => /^[-x]+$/.test(v.flags) && (v.value === undefined || SCALAR_VALUE.test(v.value));
  for (const [name, v] of to) {
    const was = moved.has(name) ? { flags: 'x', value: '=""', line: '' } : from.get(name);
    if (was?.line === v.line || DERIVED_VARS.has(name)) continue;
    if (!plain(v) || (was && !plain(was))) return `variable ${name} is not a plain scalar (declare -${v.flags})`;
    // declared without a value: only unset takes a value away
    if (v.value === undefined && was?.value !== undefined) out.push(`unset -v ${name}`);
    else if (was?.flags.includes('x') && !v.flags.includes('x')) out.push(`declare +x ${name}`);
    out.push(`declare -g${v.flags.includes('x') ? 'x' : ''} ${name}${v.value ?? ''}`);
  }
  for (const [name, was] of from) {
    if (to.has(name) || DERIVED_VARS.has(name)) continue;
    if (!plain(was)) return `variable ${name} went away but is not a plain scalar`;
    out.push(`unset -v ${name}`);
  }
  return out;
}

/** Function names of a `declare -f` part, or a reason it cannot tell them (a here-document's line at column 0, …). */
function functionNames(lines: readonly string[]): string[] | string {
  const names: string[] = [];
  for (const line of lines) {
    if (line === '' || line.startsWith(' ') || line === '{ ' || line === '}') continue;
    const m = /^(\S+) \(\) $/.exec(line);
    if (!m) return `a function text it cannot read (${line.slice(0, 40)})`;
    names.push(m[1]!);
  }
  return names;
}

function optionLines(from: readonly string[], to: readonly string[], line: RegExp, fixed: ReadonlySet<string>): string[] | string {
  const before = new Set(from);
  const out: string[] = [];
  for (const l of to) {
    if (before.has(l)) continue;
    const m = line.exec(l);
    if (!m) return `an option line it cannot read (${l})`;
    if (fixed.has(m[1]!)) return `option ${m[1]} changed`;
    out.push(l);
  }
  return out;
}

/**
 * The script that takes a shell in state `from` to state `to` (texts of the session's
 * `state.raw`), or why it cannot; `isDir` says whether a directory exists in the sandbox. Order:
 * cwd, variables (OLDPWD and PWD among them), functions, aliases, umask, shopt, and `set -o` last
 * (errexit or nounset would act on the rest).
 */
export function replayScript(from: string, to: string, isDir: (pathInSandbox: string) => boolean = () => true): { script: string } | { refused: string } {
  const a = stateSections(from);
  const b = stateSections(to);
  if (!a || !b) return { refused: 'a state text without parts (an older session shell)' };
  const part = (s: Sections, name: string) => s.get(name) ?? [];
  const same = (name: string) => part(a, name).join('\n') === part(b, name).join('\n');
  for (const name of new Set([...a.keys(), ...b.keys()])) {
    if (!['cwd', 'vars', 'functions', 'fnattrs', 'aliases', 'set', 'shopt', 'jobs', 'traps', 'umask'].includes(name)) return { refused: `an unknown part ${name}` };
  }
  // `declare -F`: a function exported or traced (`export -f`) is not replayed
  if (!same('fnattrs') && [...part(a, 'fnattrs'), ...part(b, 'fnattrs')].some((l) => !/^declare -f \S+$/.test(l))) return { refused: 'a function exported or traced' };
  if (!same('jobs')) return { refused: 'the job table changed' };
  if (!same('traps')) return { refused: 'traps changed' };
  const out: string[] = [];
  const [cwd, ...rest] = part(b, 'cwd');
  if (cwd && !isDir(cwd)) return { refused: `its working directory ${cwd} is gone` }; // a replayed cd would fail
  const cdDone = !same('cwd');
  if (cdDone) {
    if (!cwd?.startsWith('/') || rest.length) return { refused: 'a working directory it cannot read' };
    out.push(`builtin cd -- ${shellQuote(cwd)}`);
  }
  if (!same('vars') || cdDone) {
    const va = parseVars(part(a, 'vars'));
    const vb = parseVars(part(b, 'vars'));
    if (typeof va === 'string') return { refused: va };
    if (typeof vb === 'string') return { refused: vb };
    // the cd set OLDPWD to the image's cwd, which the turn's own cds need not have left
    const lines = varLines(va, vb, new Set(cdDone ? ['OLDPWD'] : []));
    if (typeof lines === 'string') return { refused: lines };
    out.push(...lines);
  }
  if (!same('functions')) {
    const na = functionNames(part(a, 'functions'));
    const nb = functionNames(part(b, 'functions'));
    if (typeof na === 'string') return { refused: na };
    if (typeof nb === 'string') return { refused: nb };
    out.push(...na.filter((n) => !nb.includes(n)).map((n) => `unset -f ${shellQuote(n)}`), ...part(b, 'functions'));
  }
  if (!same('aliases')) {
    const lines = part(b, 'aliases');
    if (lines.some((l) => !/^alias [^=\s]+='.*'$/.test(l))) return { refused: 'an alias it cannot read' };
    out.push('unalias -a', ...lines);
  }
  if (!same('umask')) {
    const [mask] = part(b, 'umask');
    if (!mask || !/^[0-7]{3,4}$/.test(mask)) return { refused: 'a umask it cannot read' };
    out.push(`umask ${mask}`);
  }
  for (const [name, re, fixed] of [
    ['shopt', /^shopt -[su] (\w+)$/, FIXED_SHOPT],
    ['set', /^set [-+]o ([\w-]+)$/, FIXED_SET],
  ] as const) {
    if (same(name)) continue;
    const lines = optionLines(part(a, name), part(b, name), re, fixed);
    if (typeof lines === 'string') return { refused: lines };
    out.push(...lines);
  }
  return { script: out.join('\n') + '\n' };
}
