/** @module Runs host programs (runc, criu, mount, debootstrap…) with captured output and typed errors. */
import { spawn, type StdioOptions } from 'node:child_process';
import { CrabError } from './errors.js';

export interface RunOptions {
  input?: string | Buffer;
  timeoutMs?: number;
  cwd?: string;
  env?: NodeJS.ProcessEnv;
  /** Exit codes treated as success (default [0]). */
  okCodes?: number[];
  /** Stream stderr lines here as they come (progress of long steps). */
  onStderrLine?: (line: string) => void;
  /** Error code used when the command fails. */
  errorCode?: string;
  stdio?: StdioOptions;
}

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
  durationMs: number;
}

/** Runs `cmd args…`; rejects with a CrabError (code `errorCode`, kind internal) when it fails. */
export function run(cmd: string, args: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
  const started = performance.now();
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, {
      cwd: opts.cwd,
      env: opts.env ?? process.env,
      stdio: opts.stdio ?? ['pipe', 'pipe', 'pipe'],
    });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    let pending = '';
    child.stdout?.on('data', (b: Buffer) => out.push(b));
    child.stderr?.on('data', (b: Buffer) => {
      err.push(b);
      if (opts.onStderrLine) {
        pending += b.toString();
        const lines = pending.split('\n');
        pending = lines.pop() ?? '';
        for (const l of lines) opts.onStderrLine(l);
      }
    });
    let timedOut = false;
    const timer =
      opts.timeoutMs !== undefined
        ? setTimeout(() => {
            timedOut = true;
            child.kill('SIGKILL');
          }, opts.timeoutMs)
        : undefined;
    child.on('error', (e) => {
      if (timer) clearTimeout(timer);
      reject(
        new CrabError(
          opts.errorCode ?? 'HOST_COMMAND_FAILED',
          'unavailable',
          `cannot run ${cmd}: ${e.message}`,
          `Is ${cmd} installed? Run 'crab setup'.`,
          { cmd },
          { cause: e },
        ),
      );
    });
    if (child.stdin) {
      child.stdin.on('error', () => undefined); // the child may exit before reading its input; its exit code tells
      child.stdin.end(opts.input ?? '');
    }
    child.on('close', (code, signal) => {
      if (timer) clearTimeout(timer);
      const result: RunResult = {
        code: code ?? -1,
        stdout: Buffer.concat(out).toString(),
        stderr: Buffer.concat(err).toString(),
        durationMs: performance.now() - started,
      };
      const ok = (opts.okCodes ?? [0]).includes(result.code);
      if (ok && !timedOut) return resolve(result);
      const why = timedOut ? `timed out after ${opts.timeoutMs} ms` : `exited with ${code ?? signal}`;
      reject(
        new CrabError(
          opts.errorCode ?? 'HOST_COMMAND_FAILED',
          'internal',
          `${cmd} ${args.slice(0, 4).join(' ')}${args.length > 4 ? ' …' : ''} ${why}: ${tail(result.stderr || result.stdout)}`,
          undefined,
          { cmd, args, code: result.code, stderr: tail(result.stderr, 4000) },
        ),
      );
    });
  });
}

function tail(s: string, n = 600): string {
  const t = s.trim();
  return t.length > n ? '…' + t.slice(t.length - n) : t;
}
