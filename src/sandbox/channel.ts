/**
 * @module The host side of the init protocol (see init-script.ts): one-shot commands and
 * persistent shell sessions, driven through files and FIFOs inside the sandbox's rootfs.
 *
 * A command's text goes to r/<rid>.cmd, its stdout/stderr to r/<rid>.out/.err, and its exit
 * status to r/<rid>.rc (written last, newline-terminated, so a complete rc means the command is done).
 *
 * Everything here lives in the sandbox's own filesystem, so anything in it may have been replaced
 * by the sandbox (a symlink to a host file, a FIFO that never ends, a 100 GiB file): every access
 * goes through `Beneath`, which follows nothing the sandbox planted; outputs are read only when
 * they are regular files, and only up to a cap.
 */
import fs from 'node:fs';
import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { CrabError } from '../core/errors.js';
import { Beneath } from '../hostfs/beneath.js';
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
/** Largest session state text read (declare -p of big variables); a bigger one is not replayed. */
const MAX_STATE_BYTES = 16 * 1024 * 1024;
/** Small control files: pid, rc, state digest. */
const MAX_SMALL_BYTES = 4096;

/**
 * How long init and a session shell may take to come up. They take milliseconds on an idle host;
 * on a host at a load of 100 (64 sandboxes and their checkpoints on 2 cores) 5 s was exceeded.
 */
const START_TIMEOUT_MS = 30_000;

export class SandboxChannel {
  /** @param rootfs the host path of the sandbox's merged rootfs */
  constructor(readonly rootfs: string) {}

  /** Runs `fn` on the sandbox's rootfs, beneath it (`hostfs/beneath.ts`). */
  private fs<T>(fn: (b: Beneath) => T): T {
    return Beneath.withSync(this.rootfs, fn, `the sandbox rootfs ${this.rootfs}`);
  }

  /** The text of small control file `rel` (trimmed), or null when it is missing. */
  private readSmall(rel: string): string | null {
    const r = this.fs((b) => b.readFileSync(rel, MAX_SMALL_BYTES));
    return r ? r.data.toString() : null;
  }

  /** Waits until init has created its control FIFO and ready marker. */
  async waitReady(timeoutMs = START_TIMEOUT_MS): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    for (let delay = 1; ; delay = Math.min(delay * 2, 20)) {
      if (this.fs((b) => b.lstatSync(READY_FILE))) return;
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
      fd = this.fs((b) => b.openFifoWriterSync(fifoInSandbox));
    } catch (err) {
      if (err instanceof CrabError) throw err;
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
    this.writeRequest(`${REQUEST_DIR}/${rid}.sh`, script);
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
    this.writeRequest(`${r}.cmd`, cmd);
    const secs = Math.max(1, Math.ceil(opts.timeoutMs / 1000));
    this.writeRequest(
      `${r}.sh`,
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
    this.fs((b) => b.mkdirpSync(d));
    this.spawnScript(
      `d=${d}\nrm -f $d/in; mkfifo -m 600 $d/in\ncd /\necho $$ > $d/pid\n` +
        `exec ${SESSION_SHELL} 0<>$d/in >/dev/null 2>&1\n`,
    );
    const deadline = Date.now() + START_TIMEOUT_MS;
    for (let delay = 1; !this.sessionExists(name) || !this.hasReader(`${d}/in`); delay = Math.min(delay * 2, 20)) {
      if (Date.now() > deadline) throw new CrabError('SESSION_START_TIMEOUT', 'unavailable', `session '${name}' did not start within ${START_TIMEOUT_MS / 1000} s`);
      await sleep(delay);
    }
    this.poke(`${d}/in`, sessionStateFunction(d));
  }

  /** The session shell's state as text (what its digest is of: `shell-replay.ts` reads it); null before the first command. */
  sessionStateText(name: string): string | null {
    const r = this.fs((b) => readUnlessReplaced(b, `${SESSION_DIR}/${name}/state.raw`, MAX_STATE_BYTES));
    return r && !r.truncated ? r.data.toString() : null; // null: unknown, so never replayed
  }

  /** Where a checkpoint keeps the script that brings session `name` to its state (inside the sandbox). */
  replayPath(name: string): string {
    return `${SESSION_DIR}/${name}/replay.sh`;
  }

  /** Writes session `name`'s replay script (replacing whatever is there, never through a link). */
  writeReplayScript(name: string, script: string): void {
    this.fs((b) => b.replaceFileSync(this.replayPath(name), script));
  }

  /** Session `name`'s replay script, as a checkpoint stored it. */
  readReplayScript(name: string): string {
    const r = this.fs((b) => b.readFileSync(this.replayPath(name), MAX_STATE_BYTES));
    if (!r || r.truncated) {
      throw new CrabError('SESSION_REPLAY_MISSING', 'internal', `session '${name}' has no readable replay script at ${this.replayPath(name)}`, 'Roll back to a checkpoint taken with a process image of the session.');
    }
    return r.data.toString();
  }

  /** Whether `p` (absolute, as the sandbox sees it) is a directory in the sandbox, symlinks resolved inside it. */
  isDirectoryInside(p: string): boolean {
    return this.fs((b) => b.statInRootSync(p)?.isDirectory() ?? false);
  }

  /** Digest of the session shell's state (cwd, variables, functions, aliases, options, jobs), refreshed after every command; null before the first. */
  sessionState(name: string): string | null {
    // null: no command ran yet, or the sandbox replaced the file (a state that matches no baseline)
    return this.fs((b) => readUnlessReplaced(b, `${SESSION_DIR}/${name}/state`, MAX_SMALL_BYTES))?.data.toString().trim() || null;
  }

  /** Names of the sessions that exist in the sandbox ([] when not running, or no session yet). */
  sessions(): string[] {
    return this.fs((b) => b.readdirSync(SESSION_DIR));
  }

  sessionExists(name: string): boolean {
    return this.fs((b) => b.lstatSync(`${SESSION_DIR}/${name}/pid`)) !== null;
  }

  /** The session shell's pid inside the sandbox. */
  sessionPid(name: string): number {
    const text = this.readSmall(`${SESSION_DIR}/${name}/pid`);
    const pid = Number(text?.trim());
    if (!Number.isInteger(pid) || pid <= 1) throw new CrabError('SESSION_BAD_PID', 'precondition', `session '${name}' has no valid pid file (${JSON.stringify(text)})`, 'Open a new session.');
    return pid;
  }

  /**
   * Runs `cmd` in session `name` with `source`, so it changes the session's own state.
   * On timeout, `onTimeout` is called to kill the command's processes; the result says timedOut.
   */
  async sessionExec(name: string, cmd: string, opts: { timeoutMs: number; onTimeout: () => Promise<void> }): Promise<ExecResult> {
    const rid = this.newRequest();
    const r = `${REQUEST_DIR}/${rid}`;
    this.writeRequest(`${r}.cmd`, cmd.endsWith('\n') ? cmd : cmd + '\n');
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
    const deadline = performance.now() + timeoutMs;
    for (let delay = 0.5; performance.now() < deadline; delay = Math.min(delay * 1.5, 25)) {
      const text = this.readSmall(`${r}.rc`) ?? '';
      if (text.endsWith('\n')) return Number(text.trim());
      await sleep(delay);
    }
    return null;
  }

  private collect(r: string, exitCode: number, started: number, timedOut: boolean, cleanup: boolean): ExecResult {
    const result: ExecResult = {
      exitCode,
      stdout: this.readOutput(`${r}.out`),
      stderr: this.readOutput(`${r}.err`),
      durationMs: Math.round((performance.now() - started) * 100) / 100,
      timedOut,
    };
    if (cleanup) this.fs((b) => ['sh', 'cmd', 'out', 'err', 'rc'].forEach((ext) => b.unlinkSync(`${r}.${ext}`)));
    return result;
  }

  /** A request file, created new (a name the sandbox planted first makes the request fail, never redirects it). */
  private writeRequest(rel: string, text: string): void {
    try {
      this.fs((b) => b.writeNewFileSync(rel, text));
    } catch (err) {
      if (err instanceof CrabError) throw err;
      throw new CrabError('SANDBOX_CHANNEL_FAILED', 'precondition', `cannot write ${rel} in the sandbox: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`, 'Something in the sandbox replaced /run/crab; restore the sandbox or create a new one.', {}, { cause: err });
    }
  }

  /** A command's stdout or stderr: a regular file read up to MAX_OUTPUT_BYTES ('' when it was never created). */
  private readOutput(rel: string): string {
    try {
      const r = this.fs((b) => b.readFileSync(rel, MAX_OUTPUT_BYTES));
      if (!r) return ''; // never created: the command was killed before its redirection
      const text = r.data.toString();
      return r.truncated ? `${text}\n[crab: output cut at ${MAX_OUTPUT_BYTES} of ${r.size} bytes]\n` : text;
    } catch (err) {
      if (err instanceof CrabError && err.code === 'HOSTFS_NOT_A_FILE') return `[crab: ${rel} is not a regular file (the command replaced it); not read]\n`;
      throw err;
    }
  }

  /** True when FIFO `rel` is one some process holds open for reading (a non-blocking write-open succeeds). */
  private hasReader(rel: string): boolean {
    try {
      fs.closeSync(this.fs((b) => b.openFifoWriterSync(rel)));
      return true;
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOENT' || code === 'ENXIO') return false; // not created yet, or the shell has not opened it yet
      throw err;
    }
  }
}

/** A file the sandbox may have replaced by a link, FIFO or device: then it reads as missing. */
function readUnlessReplaced(b: Beneath, rel: string, maxBytes: number): ReturnType<Beneath['readFileSync']> {
  try {
    return b.readFileSync(rel, maxBytes);
  } catch (err) {
    if (err instanceof CrabError && err.code === 'HOSTFS_NOT_A_FILE') return null;
    throw err;
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
