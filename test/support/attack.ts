/**
 * Helpers of the API attack tests: a real `crab daemon` process (our own child, stopped by its
 * pid), raw HTTP requests over its socket or TCP (nothing normalizes the path on the way), and
 * canary files on the host whose bytes and times must not change.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { HttpService } from '../../src/api/http-service.js';
import { REPO_ROOT } from '../../src/core/paths.js';

const MAIN = path.join(REPO_ROOT, 'dist/src/cli/main.js');

export interface DaemonProc {
  child: ChildProcess;
  socket: string;
  api: HttpService;
  stderr: () => string;
  stop(): Promise<void>;
}

/** Starts `crab daemon ARGS` on its own socket and waits until it answers. */
export async function startDaemonProcess(socket: string, args: string[] = [], env: Record<string, string> = {}): Promise<DaemonProc> {
  const child = spawn(process.execPath, [MAIN, 'daemon', ...args], {
    env: { ...process.env, CRAB_SOCKET: socket, CRAB_LOG_LEVEL: 'warn', ...env },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let err = '';
  child.stderr!.on('data', (b: Buffer) => (err += b.toString()));
  const api = new HttpService({ socketPath: socket });
  const stop = async () => {
    if (child.pid && child.pid > 1 && child.exitCode === null && child.signalCode === null) {
      const exited = new Promise((r) => child.once('exit', r));
      child.kill('SIGTERM');
      await Promise.race([exited, sleep(10_000)]);
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    }
  };
  for (let i = 0; i < 200; i++) {
    if (child.exitCode !== null) throw new Error(`daemon exited (${child.exitCode}): ${err}`);
    if (await api.ping()) return { child, socket, api, stderr: () => err, stop };
    await sleep(50);
  }
  await stop();
  throw new Error(`daemon did not come up: ${err}`);
}

/** Runs `crab daemon ARGS` expecting it to refuse to start; returns its exit code and stderr. */
export async function daemonRefuses(socket: string, args: string[], env: Record<string, string> = {}): Promise<{ code: number | null; stderr: string }> {
  const child = spawn(process.execPath, [MAIN, 'daemon', ...args], { env: { ...process.env, CRAB_SOCKET: socket, ...env }, stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr!.on('data', (b: Buffer) => (stderr += b.toString()));
  const code = await Promise.race([new Promise<number | null>((r) => child.once('exit', (c) => r(c))), sleep(20_000).then(() => 'timeout' as const)]);
  if (code === 'timeout') {
    if (child.pid && child.pid > 1) child.kill('SIGKILL');
    throw new Error(`daemon did not refuse within 20 s: ${stderr}`);
  }
  return { code, stderr };
}

export interface RawAnswer {
  status: number;
  json: { error?: { code: string; kind: string; message: string; hint?: string } } & Record<string, unknown>;
  text: string;
  ms: number;
}

/** One HTTP request, path sent as given (percent-encodings and all), over a unix socket or to host:port. */
export function raw(
  to: { socketPath: string } | { host: string; port: number },
  method: string,
  p: string,
  body?: string | Buffer,
  headers: Record<string, string> = { 'content-type': 'application/json' },
): Promise<RawAnswer> {
  const t0 = performance.now();
  return new Promise((resolve, reject) => {
    const req = http.request({ ...to, method, path: p, headers }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (b: Buffer) => chunks.push(b));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString();
        let json = {} as RawAnswer['json'];
        try {
          json = JSON.parse(text) as RawAnswer['json'];
        } catch {
          // not JSON: the assertions on `json` say so
        }
        resolve({ status: res.statusCode ?? 0, json, text, ms: performance.now() - t0 });
      });
    });
    // The server may answer (413) and close before the whole body is sent.
    req.on('error', (e: NodeJS.ErrnoException) => (e.code === 'EPIPE' || e.code === 'ECONNRESET' ? undefined : reject(e)));
    req.end(body);
  });
}

/** Asserts a clear refusal: a 4xx with a JSON error carrying a code, a kind, a message and a hint. */
export function assertClear4xx(a: RawAnswer, status: number | RegExp, code?: string | RegExp): void {
  const what = `${a.status} ${a.text.slice(0, 300)}`;
  if (typeof status === 'number') assert.equal(a.status, status, what);
  else assert.match(String(a.status), status, what);
  assert.ok(a.status >= 400 && a.status < 500, what);
  const e = a.json.error;
  assert.ok(e && typeof e.code === 'string' && typeof e.message === 'string' && typeof e.kind === 'string', `a JSON error: ${what}`);
  assert.ok(e.hint, `a hint says what to do: ${what}`);
  assert.ok(e.message.length < 500, `a short message: ${what}`);
  if (code !== undefined) {
    if (typeof code === 'string') assert.equal(e.code, code, what);
    else assert.match(e.code, code, what);
  }
}

export interface Canary {
  dir: string;
  file: string;
  /** Throws if anything in the canary dir changed (bytes, mode, times, entries). */
  check(): void;
  remove(): void;
}

/** A directory on the host, outside CRAB_HOME, with a secret file: what an attack would read or change. */
export function canary(prefix: string): Canary {
  const dir = path.join('/tmp', `${prefix}-canary`);
  fs.mkdirSync(dir, { recursive: true, mode: 0o755 });
  const file = path.join(dir, 'secret');
  fs.writeFileSync(file, `secret of ${prefix}\n`, { mode: 0o644 });
  const state = () =>
    fs
      .readdirSync(dir)
      .sort()
      .map((n) => {
        const st = fs.lstatSync(path.join(dir, n));
        return `${n} ${st.mode} ${st.size} ${st.mtimeMs} ${st.ctimeMs} ${st.isFile() ? fs.readFileSync(path.join(dir, n), 'utf8') : ''}`;
      })
      .join('\n') + `|${fs.statSync(dir).mtimeMs}`;
  const before = state();
  return {
    dir,
    file,
    check: () => assert.equal(state(), before, 'the canary dir on the host is untouched'),
    remove: () => fs.rmSync(dir, { recursive: true, force: true }),
  };
}

/** Whether any mount on the host has `p` as its source or names it in its options (an overlay lowerdir). */
export function mountedAnywhere(p: string): boolean {
  return fs
    .readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .some((l) => l.includes(p));
}
