/**
 * @module A conservative, static guess of whether a trace action only reads: no file writes, no
 * change of the shell's state (cwd, variables, functions, aliases), no process that outlives it.
 * Used to describe workloads (share of read-only turns), never to decide what to checkpoint:
 * anything it does not recognise counts as a write.
 */
import type { Trace, TraceTurn } from './trace.js';

/** Programs that only read, whatever their (non-redirect) arguments, with the exceptions below. */
const READERS = new Set([
  'ls', 'cat', 'grep', 'egrep', 'fgrep', 'head', 'tail', 'wc', 'sort', 'uniq', 'cut', 'tr', 'nl', 'tac', 'od', 'xxd',
  'hexdump', 'strings', 'stat', 'file', 'du', 'df', 'diff', 'cmp', 'comm', 'md5sum', 'sha1sum', 'sha256sum', 'cksum',
  'echo', 'printf', 'test', '[', 'true', 'false', 'pwd', 'env', 'printenv', 'id', 'whoami', 'uname', 'hostname', 'which',
  'type', 'jobs', 'ps', 'pgrep', 'pidof', 'free', 'uptime', 'readlink', 'realpath', 'basename', 'dirname', 'seq',
  'column', 'nm', 'objdump', 'readelf', 'ldd', 'tree', 'declare', 'command', 'xargs', 'find', 'sed', 'awk', 'python3',
  'git', 'sqlite3', 'dpkg', 'dpkg-query', 'dpkg-deb', 'make', 'gcc', 'cc', 'patch', 'bash', 'tar', 'kill', 'alias', 'cd', 'export', 'type', 'ss', 'sleep', 'wait', 'expr', 'getent', 'less', 'more', 'fold',
]);

const GIT_READ = new Set(['log', 'status', 'diff', 'show', 'grep', 'rev-parse', 'ls-files', 'blame', 'shortlog', 'describe', 'cat-file', 'ls-tree', 'remote']);

/** Splits shell text into simple commands (word lists) and notes redirects to files and background jobs. */
function lex(cmd: string): { commands: string[][]; writesRedirect: boolean; background: boolean } {
  const commands: string[][] = [];
  let words: string[] = [];
  let word = '';
  let inWord = false;
  let writesRedirect = false;
  let background = false;
  const pendingHeredocs: string[] = [];
  const flushWord = () => {
    if (inWord) words.push(word);
    word = '';
    inWord = false;
  };
  const flushCmd = () => {
    flushWord();
    if (words.length) commands.push(words);
    words = [];
  };
  let i = 0;
  const n = cmd.length;
  while (i < n) {
    const c = cmd[i]!;
    if (c === "'") {
      const j = cmd.indexOf("'", i + 1);
      word += cmd.slice(i + 1, j < 0 ? n : j);
      inWord = true;
      i = j < 0 ? n : j + 1;
    } else if (c === '"') {
      let j = i + 1;
      while (j < n && cmd[j] !== '"') j += cmd[j] === '\\' ? 2 : 1;
      word += cmd.slice(i + 1, j);
      inWord = true;
      i = j + 1;
    } else if (c === '\\') {
      word += cmd[i + 1] ?? '';
      inWord = true;
      i += 2;
    } else if (c === '$' && cmd[i + 1] === '(') {
      // Command substitution: keep it inside the word (its inner commands are not inspected).
      let depth = 0;
      let j = i + 1;
      for (; j < n; j++) {
        if (cmd[j] === '(') depth++;
        else if (cmd[j] === ')' && --depth === 0) break;
      }
      word += cmd.slice(i, j + 1);
      inWord = true;
      i = j + 1;
    } else if (c === '\n') {
      flushCmd();
      i++;
      // Skip heredoc bodies.
      while (pendingHeredocs.length) {
        const delim = pendingHeredocs.shift()!;
        while (i < n) {
          const e = cmd.indexOf('\n', i);
          const line = cmd.slice(i, e < 0 ? n : e);
          i = e < 0 ? n : e + 1;
          if (line.replace(/^\t+/, '') === delim) break;
        }
      }
    } else if (c === ' ' || c === '\t') {
      flushWord();
      i++;
    } else if (c === ';' || c === '(' || c === ')' || c === '{' && !inWord && cmd[i + 1] === ' ' || c === '}' && !inWord) {
      flushCmd();
      i++;
    } else if (c === '|') {
      flushCmd();
      i += cmd[i + 1] === '|' ? 2 : 1;
    } else if (c === '&') {
      if (cmd[i + 1] === '&') {
        flushCmd();
        i += 2;
      } else if (cmd[i + 1] === '>') {
        // &>file
        flushWord();
        i += cmd[i + 2] === '>' ? 3 : 2;
        const t = readTarget(cmd, i);
        if (t.target !== '/dev/null') writesRedirect = true;
        i = t.next;
      } else {
        background = true;
        flushCmd();
        i++;
      }
    } else if (c === '>' || (c === '<' && cmd[i + 1] === '<')) {
      if (c === '<') {
        // heredoc or herestring
        const strip = cmd[i + 2] === '-';
        i += strip ? 3 : 2;
        if (cmd[i] === '<') {
          i++; // <<< herestring: the word follows as an argument
          continue;
        }
        const t = readTarget(cmd, i);
        pendingHeredocs.push(t.target);
        i = t.next;
        continue;
      }
      // Output redirect; a leading fd digit was read into the word: drop it.
      if (inWord && /^\d$/.test(word)) {
        word = '';
        inWord = false;
      }
      flushWord();
      i += cmd[i + 1] === '>' ? 2 : 1;
      if (cmd[i] === '&') {
        i++; // fd duplication like 2>&1
        while (i < n && /[0-9-]/.test(cmd[i]!)) i++;
        continue;
      }
      const t = readTarget(cmd, i);
      if (t.target !== '/dev/null') writesRedirect = true;
      i = t.next;
    } else if (c === '<') {
      flushWord();
      const t = readTarget(cmd, i + 1);
      i = t.next;
    } else {
      word += c;
      inWord = true;
      i++;
    }
  }
  flushCmd();
  return { commands, writesRedirect, background };
}

function readTarget(cmd: string, start: number): { target: string; next: number } {
  let i = start;
  while (cmd[i] === ' ' || cmd[i] === '\t') i++;
  let t = '';
  while (i < cmd.length && !/[\s;&|<>()]/.test(cmd[i]!)) {
    const c = cmd[i]!;
    if (c === "'" || c === '"') {
      const j = cmd.indexOf(c, i + 1);
      t += cmd.slice(i + 1, j < 0 ? cmd.length : j);
      i = j < 0 ? cmd.length : j + 1;
    } else {
      t += c;
      i++;
    }
  }
  return { target: t, next: i };
}

/** Reserved words that open a (part of a) compound command: what follows them is the command. */
const LEADING_KEYWORDS = new Set(['until', 'while', 'do', 'if', 'then', 'elif', 'else', '!']);
/** Reserved words that close one: nothing runs. (`for` and `select` assign a variable: not here.) */
const CLOSING_KEYWORDS = new Set(['done', 'fi']);

function simpleCommandReads(allWords: string[], fresh = false): boolean {
  let s = 0;
  while (s < allWords.length && LEADING_KEYWORDS.has(allWords[s]!)) s++;
  const words = allWords.slice(s);
  if (words.every((w) => CLOSING_KEYWORDS.has(w))) return true;
  let k = 0;
  // Leading assignments: VAR=x cmd is fine (environment of cmd); a bare VAR=x changes the shell.
  while (k < words.length && /^[A-Za-z_][A-Za-z0-9_]*=/.test(words[k]!)) k++;
  if (k === words.length) return fresh;
  // A function definition changes the (persistent) shell.
  if (words.some((w) => w.endsWith('()')) || words[k] === 'function') return fresh;
  while (words[k] === 'env' || words[k] === 'timeout' || words[k] === 'nice' || (words[k] === 'command' && !/^-[vV]$/.test(words[k + 1] ?? ''))) {
    if (words[k] === 'timeout') k++;
    k++;
    while (k < words.length && (/^[A-Za-z_][A-Za-z0-9_]*=/.test(words[k]!) || words[k]!.startsWith('-'))) k++;
    if (k >= words.length) return true;
  }
  const prog = words[k]!;
  const args = words.slice(k + 1);
  if (!READERS.has(prog)) return false;
  switch (prog) {
    case 'sed':
      return !args.some((a) => /^-[a-zA-Z]*i/.test(a) || a === '--in-place' || a.startsWith('--in-place='));
    case 'find':
      return !args.some((a) => ['-delete', '-exec', '-execdir', '-ok', '-fprint', '-fprintf', '-fls'].includes(a));
    case 'awk':
      return !args.some((a) => /system\(|>\s*"|print\s*>/.test(a));
    case 'xargs':
      return args.length > 0 && simpleCommandReads(args.filter((a) => !a.startsWith('-')), fresh);
    case 'git': {
      const sub = args.find((a) => !a.startsWith('-'));
      if (sub === 'bisect') return args.includes('log') || args.includes('visualize');
      return sub !== undefined && GIT_READ.has(sub);
    }
    case 'python3': {
      // -c code that only prints, or -B (no bytecode) runs of unittest.
      const pa = args.filter((a) => a !== '-B');
      if (pa[0] === '-c') return !/open\([^)]*['"][wax+]|\.write|os\.(remove|mkdir|makedirs|rename|system)|subprocess|shutil|unlink|Popen/.test(pa[1] ?? '');
      if (args[0] === '-c') return !/open\([^)]*['"][wax+]|\.write|os\.(remove|mkdir|makedirs|rename|system)|subprocess|shutil|unlink|Popen/.test(args[1] ?? '');
      // Runs without bytecode writing (-B) of a module or script are taken as reads: the agent
      // runs tests, checks or clients; a script that writes is the trace author's mistake.
      const noBytecode = args.includes('-B') || words.slice(0, k).some((w) => w === 'PYTHONDONTWRITEBYTECODE=1');
      return noBytecode && (pa[0] === '-m' || (pa[0] ?? '').endsWith('.py'));
    }
    case 'sqlite3':
      return args.includes('-readonly');
    case 'gcc':
    case 'cc':
      return args.includes('-fsyntax-only') || args.includes('-E');
    case 'patch':
      return args.includes('--dry-run');
    case 'bash':
      // A child shell cannot change the session's own state: its script is judged as a fresh one.
      return args[0] === '-n' || (args[0] === '-c' && args[1] !== undefined && actionIsReadOnly(args[1], true));
    case 'tar':
      return args.some((a) => /^-?[a-zA-Z]*t/.test(a) && !/c|x|r|u/.test(a.replace(/^-/, '')));
    case 'dpkg-deb':
      return args.some((a) => ['-I', '-c', '-f', '--info', '--contents', '--field'].includes(a));
    case 'kill':
      return args[0] === '-0';
    case 'alias':
      return args.every((a) => !a.includes('='));
    case 'cd':
    case 'export':
      return fresh;
    case 'dpkg':
      return args.some((a) => ['-l', '-L', '-s', '-S', '--list', '--status', '--listfiles', '--search'].includes(a));
    case 'make':
      return args.includes('-n') || args.includes('--dry-run') || args.includes('-q');
    case 'declare':
      return ['-f', '-F', '-p'].includes(args[0] ?? '');
    case 'command':
      return args[0] === '-v' || args[0] === '-V';
    case 'sleep':
    case 'wait':
      return true;
    default:
      return true;
  }
}

/**
 * True when the action's shell text only reads (see the module comment: conservative). With
 * `fresh` (one `bash -c` per action), changing the shell's own state (cd, export) is no effect.
 */
export function actionIsReadOnly(cmd: string, fresh = false): boolean {
  const { commands, writesRedirect, background } = lex(cmd);
  if (writesRedirect || background) return false;
  return commands.length > 0 && commands.every((w) => simpleCommandReads(w, fresh));
}

export function turnIsReadOnly(turn: TraceTurn, shell: 'persistent' | 'fresh' = 'persistent'): boolean {
  return turn.actions.every((a) => actionIsReadOnly(a.cmd, shell === 'fresh'));
}

export interface TraceProfile {
  name: string;
  turns: number;
  readOnlyTurns: number;
  /** readOnlyTurns / turns, 0..1 */
  readOnlyShare: number;
  actions: number;
  packages: string[];
  shell: 'persistent' | 'fresh';
  promptTokens: number;
  completionTokens: number;
  llmLatencyMs: number;
}

export function profileTrace(t: Trace): TraceProfile {
  const ro = t.turns.filter((x) => turnIsReadOnly(x, t.header.shell)).length;
  return {
    name: t.header.name,
    turns: t.turns.length,
    readOnlyTurns: ro,
    readOnlyShare: t.turns.length ? ro / t.turns.length : 0,
    actions: t.turns.reduce((s, x) => s + x.actions.length, 0),
    packages: t.header.image.packages,
    shell: t.header.shell,
    promptTokens: t.turns.reduce((s, x) => s + x.llm.prompt_tokens, 0),
    completionTokens: t.turns.reduce((s, x) => s + x.llm.completion_tokens, 0),
    llmLatencyMs: t.turns.reduce((s, x) => s + x.llm.latency_ms, 0),
  };
}
