/**
 * @module The host side of the init protocol (see init-script.ts): one-shot commands and
 * persistent shell sessions, driven through files and FIFOs inside the sandbox's rootfs.
 *
 * A command's text goes to r/<rid>.cmd, its stdout/stderr to r/<rid>.out/.err, and its exit
 * status to r/<rid>.rc (written last, newline-terminated, so a complete rc means the command is done).
 */
import fs from 'node:fs';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { CrabError } from '../core/errors.js';
import { CONTROL_FIFO, READY_FILE, REQUEST_DIR, SESSION_DIR } from './init-script.js';

export interface ExecResult {
  exitCode: number;
  stdout: string;
  stderr: string;
  durationMs: number;
  timedOut: boolean;
}

/** Exit code reported for a command that hit its timeout (as GNU timeout does). */
export const TIMEOUT_EXIT_CODE = 124;

/** The command line of every persistent session's shell (`/proc/PID/cmdline`, spaces for NULs). */
export const SESSION_SHELL = 'bash --noprofile --norc -O expand_aliases';

/** Largest stdout/stderr returned per command; the rest is cut (and said so). */
const MAX_OUTPUT_BYTES = 8 * 1024 * 1024;

export class SandboxChannel {
  /** @param rootfs the host path of the sandbox's merged rootfs */
  constructor(readonly rootfs: string) {}

  host(p: string): string {
    return path.join(this.rootfs, p);
  }

  /** Waits until init has created its control FIFO and ready marker. */
  async waitReady(timeoutMs = 5000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    for (let delay = 1; ; delay = Math.min(delay * 2, 20)) {
      if (fs.existsSync(this.host(READY_FILE))) return;
      if (Date.now() > deadline) {
        throw new CrabError('SANDBOX_INIT_TIMEOUT', 'unavailable', `sandbox init did not become ready within ${timeoutMs} ms`, "Check 'crab sandbox ls' and the runc log under CRAB_HOME/run/logs.");
      }
      await sleep(delay);
    }
  }

  /** Writes one line to a FIFO inside the sandbox whose reader (init or a session shell) holds it open. */
  private poke(fifoInSandbox: string, line: string): void {
    let fd: number;
    try {
      fd = fs.openSync(this.host(fifoInSandbox), fs.constants.O_WRONLY | fs.constants.O_NONBLOCK);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      throw new CrabError(
        code === 'ENXIO' ? 'SANDBOX_NOT_RUNNING' : 'SANDBOX_CHANNEL_FAILED',
        'precondition',
        code === 'ENXIO' ? `nothing reads ${fifoInSandbox}: the sandbox or session is not running` : `cannot open ${fifoInSandbox}: ${code}`,
        'Start the sandbox again or restore it from a checkpoint.',
        {},
        { cause: err },
      );
    }
    try {
      fs.writeSync(fd, line.endsWith('\n') ? line : line + '\n');
    } finally {
      fs.closeSync(fd);
    }
  }

  private newRequest(): string {
    return randomBytes(8).toString('hex');
  }

  /** Asks init to run a request script (as its own child). */
  spawnScript(script: string): string {
    const rid = this.newRequest();
    fs.writeFileSync(this.host(`${REQUEST_DIR}/${rid}.sh`), script);
    this.poke(CONTROL_FIFO, rid);
    return rid;
  }

  /** Runs `cmd` with `bash` as a fresh child of init, with cwd and a hard timeout (SIGKILL). */
  async exec(cmd: string, opts: { timeoutMs: number; cwd?: string; env?: Record<string, string> }): Promise<ExecResult> {
    const rid = this.newRequest();
    const r = `${REQUEST_DIR}/${rid}`;
    const exports = Object.entries(opts.env ?? {})
      .map(([k, v]) => `export ${k}=${shellQuote(v)}`)
      .join('\n');
    fs.writeFileSync(this.host(`${r}.cmd`), cmd);
    const secs = Math.max(1, Math.ceil(opts.timeoutMs / 1000));
    fs.writeFileSync(
      this.host(`${r}.sh`),
      `cd ${shellQuote(opts.cwd ?? '/')} 2>/dev/null || cd /\n${exports}\n` +
        // TERM at the limit, KILL a second later; timeout(1) then exits 124 (137 would be ambiguous with an OOM kill).
        `timeout -k 1 ${secs} bash --noprofile --norc ${r}.cmd </dev/null >${r}.out 2>${r}.err\n` +
        `echo $? >${r}.rc\n`,
    );
    const started = performance.now();
    this.poke(CONTROL_FIFO, rid);
    // The in-sandbox `timeout` enforces the limit; the host waits a little longer for it to report.
    const exitCode = await this.waitRc(r, opts.timeoutMs + 5000);
    const timedOut = exitCode === null || exitCode === TIMEOUT_EXIT_CODE;
    return this.collect(r, timedOut ? TIMEOUT_EXIT_CODE : exitCode, started, timedOut, true);
  }

  /** Starts a persistent bash session `name` (cwd, variables, functions and jobs persist across commands). */
  async openSession(name: string): Promise<void> {
    const d = `${SESSION_DIR}/${name}`;
    fs.mkdirSync(this.host(d), { recursive: true });
    this.spawnScript(
      `d=${d}\nrm -f $d/in; mkfifo -m 600 $d/in\ncd /\necho $$ > $d/pid\n` +
        `exec ${SESSION_SHELL} 0<>$d/in >/dev/null 2>&1\n`,
    );
    const deadline = Date.now() + 5000;
    for (let delay = 1; !fs.existsSync(this.host(`${d}/pid`)) || !hasReader(this.host(`${d}/in`)); delay = Math.min(delay * 2, 20)) {
      if (Date.now() > deadline) throw new CrabError('SESSION_START_TIMEOUT', 'unavailable', `session '${name}' did not start within 5 s`);
      await sleep(delay);
    }
    this.poke(`${d}/in`, sessionStateFunction(d));
  }

  /** The session shell's state as text (what its digest is of: `shell-replay.ts` reads it); null before the first command. */
  sessionStateText(name: string): string | null {
    try {
      return fs.readFileSync(this.host(`${SESSION_DIR}/${name}/state.raw`), 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
      throw err;
    }
  }

  /** Where a checkpoint keeps the script that brings session `name` to its state (inside the sandbox). */
  replayPath(name: string): string {
    return `${SESSION_DIR}/${name}/replay.sh`;
  }

  /** Digest of the session shell's state (cwd, variables, functions, aliases, options, jobs), refreshed after every command; null before the first. */
  sessionState(name: string): string | null {
    try {
      return fs.readFileSync(this.host(`${SESSION_DIR}/${name}/state`), 'utf8').trim() || null;
    } catch {
      return null; // no command ran yet
    }
  }

  /** Names of the sessions that exist in the sandbox. */
  sessions(): string[] {
    try {
      return fs.readdirSync(this.host(SESSION_DIR));
    } catch {
      return []; // not running, or no session yet
    }
  }

  sessionExists(name: string): boolean {
    return fs.existsSync(this.host(`${SESSION_DIR}/${name}/pid`));
  }

  /** The session shell's pid inside the sandbox. */
  sessionPid(name: string): number {
    return Number(fs.readFileSync(this.host(`${SESSION_DIR}/${name}/pid`), 'utf8').trim());
  }

  /**
   * Runs `cmd` in session `name` with `source`, so it changes the session's own state.
   * On timeout, `onTimeout` is called to kill the command's processes; the result says timedOut.
   */
  async sessionExec(name: string, cmd: string, opts: { timeoutMs: number; onTimeout: () => Promise<void> }): Promise<ExecResult> {
    const rid = this.newRequest();
    const r = `${REQUEST_DIR}/${rid}`;
    fs.writeFileSync(this.host(`${r}.cmd`), cmd.endsWith('\n') ? cmd : cmd + '\n');
    const started = performance.now();
    this.poke(`${SESSION_DIR}/${name}/in`, `source ${r}.cmd </dev/null >${r}.out 2>${r}.err; __crab_rc=$?; __crab_state; echo $__crab_rc >${r}.rc`);
    const exitCode = await this.waitRc(r, opts.timeoutMs);
    if (exitCode !== null) return this.collect(r, exitCode, started, false, true);
    // Keep killing what the command starts until the shell reports back (the rest of a `a; b` line may run).
    for (let i = 0; i < 150; i++) {
      await opts.onTimeout();
      if ((await this.waitRc(r, 20)) !== null) break;
    }
    return this.collect(r, TIMEOUT_EXIT_CODE, started, true, true);
  }

  /** Polls for a complete rc file; returns null on timeout. */
  private async waitRc(r: string, timeoutMs: number): Promise<number | null> {
    const rcPath = this.host(`${r}.rc`);
    const deadline = performance.now() + timeoutMs;
    for (let delay = 0.5; performance.now() < deadline; delay = Math.min(delay * 1.5, 25)) {
      let text = '';
      try {
        text = fs.readFileSync(rcPath, 'utf8');
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
      }
      if (text.endsWith('\n')) return Number(text.trim());
      await sleep(delay);
    }
    return null;
  }

  private collect(r: string, exitCode: number, started: number, timedOut: boolean, cleanup: boolean): ExecResult {
    const result: ExecResult = {
      exitCode,
      stdout: readCapped(this.host(`${r}.out`)),
      stderr: readCapped(this.host(`${r}.err`)),
      durationMs: Math.round((performance.now() - started) * 100) / 100,
      timedOut,
    };
    if (cleanup) for (const ext of ['sh', 'cmd', 'out', 'err', 'rc']) fs.rmSync(this.host(`${r}.${ext}`), { force: true });
    return result;
  }
}

function readCapped(file: string): string {
  let fd: number;
  try {
    fd = fs.openSync(file, 'r');
  } catch {
    return ''; // never created: the command was killed before its redirection
  }
  try {
    const size = fs.fstatSync(fd).size;
    const buf = Buffer.alloc(Math.min(size, MAX_OUTPUT_BYTES));
    const n = fs.readSync(fd, buf, 0, buf.length, 0);
    const text = buf.subarray(0, n).toString();
    return size > MAX_OUTPUT_BYTES ? `${text}\n[crab: output cut at ${MAX_OUTPUT_BYTES} of ${size} bytes]\n` : text;
  } finally {
    fs.closeSync(fd);
  }
}

/** True when `p` is a FIFO that some process holds open for reading (a non-blocking write-open succeeds). */
function hasReader(p: string): boolean {
  try {
    if (!fs.statSync(p).isFIFO()) return false;
    fs.closeSync(fs.openSync(p, fs.constants.O_WRONLY | fs.constants.O_NONBLOCK));
    return true;
  } catch {
    return false; // not created yet, or ENXIO: the shell has not opened it yet
  }
}

/** Variables that change without the agent changing anything, differ only by sandbox (HOSTNAME), or are Crab's own. */
const VOLATILE_VARS = 'BASH[A-Z_]*|_|__crab_[a-z_]*|HOSTNAME|RANDOM|SRANDOM|SECONDS|LINENO|PIPESTATUS|EPOCHSECONDS|EPOCHREALTIME|HISTCMD|FUNCNAME|GROUPS|COLUMNS|LINES';

/**
 * A one-line bash function the session runs after each command: it digests everything a later
 * command could observe of the shell itself, so a turn of `cat` and `grep` leaves it unchanged.
 */
export function sessionStateFunction(sessionDir: string): string {
  // The group runs in the session shell itself (no subshell: `jobs` must see its job table; without
  // pids, so a job re-started identically after a recovery compares equal). Each part starts with
  // a line of RS (\x1e) and its name (`shell-replay.ts` reads them); OLDPWD is among the variables.
  // `>|` because the agent may have set noclobber. state.raw keeps only the digested lines, so an
  // unchanged shell leaves the same bytes for the next checkpoint (BASH_LINENO alone would differ).
  return (
    `__crab_state() { { printf '\\036cwd\\n%s\\n' "$PWD"; printf '\\036vars\\n'; declare -p; printf '\\036functions\\n'; declare -f; printf '\\036fnattrs\\n'; declare -F; printf '\\036aliases\\n'; alias; ` +
    `printf '\\036set\\n'; set +o; printf '\\036shopt\\n'; shopt -p; printf '\\036jobs\\n'; jobs; printf '\\036traps\\n'; trap -p; printf '\\036umask\\n'; umask; } >| ${sessionDir}/state.all 2>&1; ` +
    `grep -Ev '^declare -[-a-zA-Z]* (${VOLATILE_VARS})(=|$)' ${sessionDir}/state.all >| ${sessionDir}/state.raw; rm -f ${sessionDir}/state.all; ` +
    `cksum <${sessionDir}/state.raw >| ${sessionDir}/state; }`
  );
}

export function shellQuote(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}
