/**
 * @module What Node 20 cannot do itself, in batches by one short process: read and write
 * extended attributes (incl. `trusted.overlay.*`), `mknod` (whiteouts are 0:0 character devices,
 * plus fifos and devices), `lchown`, and nanosecond `utimensat` without following symlinks. In
 * batches, not a call per file: long-lived `native/bin/crab-xattr serve` processes (`make -C
 * native`), or one python3 per batch when it is not built (python3 comes with the project's apt
 * set-up). Long-lived because a busy host's Node process is big, and forking it for every capture
 * blocked its event loop (~13 ms a fork with 8 sandboxes busy on 2 cores).
 */
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { CrabError } from '../core/errors.js';
import { REPO_ROOT } from '../core/paths.js';

/** The native reader of xattrs (`make -C native`): no interpreter start-up per capture. */
export const XATTR_HELPER = path.join(REPO_ROOT, 'native', 'bin', 'crab-xattr');

const SCRIPT = String.raw`
import json, os, stat, sys
req = json.load(sys.stdin)
out = {}
if req['op'] == 'get':
    for p in req['paths']:
        try:
            names = os.listxattr(p, follow_symlinks=False)
        except FileNotFoundError:
            continue
        if names:
            out[p] = {n: os.getxattr(p, n, follow_symlinks=False).hex() for n in sorted(names)}
else:
    kinds = {'whiteout': stat.S_IFCHR, 'chr': stat.S_IFCHR, 'blk': stat.S_IFBLK, 'fifo': stat.S_IFIFO}
    for p, kind, rdev in req['nodes']:
        os.mknod(p, kinds[kind] | 0o600, rdev)
    for p, uid, gid, mode, is_link in req['owners']:
        os.chown(p, uid, gid, follow_symlinks=False)
        if not is_link:
            os.chmod(p, mode)
    for p, xs in req['xattrs']:
        for n, v in xs.items():
            os.setxattr(p, n, bytes.fromhex(v), follow_symlinks=False)
    for p, ns in req['times']:
        os.utime(p, ns=(ns, ns), follow_symlinks=False)
json.dump(out, sys.stdout)
`;

/** A node that only the helper can create. `rdev` is the raw dev_t (0 for whiteouts and fifos). */
export interface SpecialNode {
  path: string;
  kind: 'whiteout' | 'chr' | 'blk' | 'fifo';
  rdev: number;
}

export interface ApplyRequest {
  nodes: SpecialNode[];
  /** chown (never following symlinks), then chmod unless `isSymlink`. */
  owners: Array<{ path: string; uid: number; gid: number; mode: number; isSymlink: boolean }>;
  xattrs: Array<{ path: string; xattrs: Record<string, string> }>;
  /** Applied in this order (give children before parents); atime is set to mtime. */
  times: Array<{ path: string; mtimeNs: bigint }>;
}

/** Extended attributes (name → hex value) of each absolute path that has any. */
export async function readXattrs(paths: readonly string[]): Promise<Map<string, Record<string, string>>> {
  if (paths.length === 0) return new Map();
  if (fs.existsSync(XATTR_HELPER) && !paths.some((p) => p.includes('\0'))) return readXattrsNative(paths);
  const out = (await runHelper({ op: 'get', paths })) as Record<string, Record<string, string>>;
  return new Map(Object.entries(out));
}

/** readXattrs through native/bin/crab-xattr (same result as the python helper's 'get'). */
async function readXattrsNative(paths: readonly string[]): Promise<Map<string, Record<string, string>>> {
  const out = await nativeRequest('get', paths.map((p) => `${p}\0`).join(''), 'xattr helper');
  const fields = out.toString().split('\0');
  fields.pop(); // after the last terminator
  if (fields.length % 3 !== 0) throw new CrabError('FSSNAP_HELPER_FAILED', 'internal', 'xattr helper printed a truncated record');
  const res = new Map<string, Record<string, string>>();
  for (let i = 0; i < fields.length; i += 3) {
    const p = paths[Number(fields[i])]!;
    const xs = res.get(p) ?? {};
    xs[fields[i + 1]!] = fields[i + 2]!;
    res.set(p, xs);
  }
  return res;
}

/** Creates special nodes, then sets owners/modes, xattrs and times, in that order. */
export async function applyMetadata(req: ApplyRequest): Promise<void> {
  // CRAB_FSSNAP_HELPER=python: the fallback, for machines without the native build (and its test).
  if (fs.existsSync(XATTR_HELPER) && process.env.CRAB_FSSNAP_HELPER !== 'python') return applyMetadataNative(req);
  await runHelper({
    op: 'apply',
    nodes: req.nodes.map((n) => [n.path, n.kind, n.rdev]),
    owners: req.owners.map((o) => [o.path, o.uid, o.gid, o.mode, o.isSymlink]),
    xattrs: req.xattrs.map((x) => [x.path, x.xattrs]),
    // bigint ns as a JSON number literal: python parses it as an exact int
    times: req.times.map((t) => `[${JSON.stringify(t.path)},${t.mtimeNs.toString()}]`),
  });
}

/** applyMetadata through `crab-xattr apply`: no interpreter start-up per materialize (~60 ms). */
async function applyMetadataNative(req: ApplyRequest): Promise<void> {
  const records: string[][] = [
    ...req.nodes.map((n) => ['n', n.path, n.kind, String(n.rdev)]),
    ...req.owners.map((o) => ['o', o.path, String(o.uid), String(o.gid), String(o.mode), o.isSymlink ? '1' : '0']),
    ...req.xattrs.flatMap((x) => Object.entries(x.xattrs).map(([name, hex]) => ['x', x.path, name, hex])),
    ...req.times.map((t) => ['t', t.path, t.mtimeNs.toString()]),
  ];
  if (records.length === 0) return;
  await nativeRequest('apply', records.map((r) => r.map((f) => `${f}\0`).join('')).join(''), 'metadata helper (apply)');
}

const NATIVE_HINT = "Build it with 'make -C native'.";
const HELPER_ROLE_HINT = 'Needs root (trusted.* xattrs, mknod) and a filesystem with xattr support.';

/**
 * One long-lived `crab-xattr serve`: requests go one at a time; after one fails (the helper exits
 * on any error) the next starts a new process. While idle it does not keep Node running.
 */
export class XattrServer {
  private child: ChildProcessWithoutNullStreams | null = null;
  private stderr: Buffer[] = [];
  private tail: Promise<unknown> = Promise.resolve();
  /** Requests queued or under way. */
  pending = 0;

  constructor(private readonly command = XATTR_HELPER) {}

  /** Sends `body` (NUL-terminated fields, without the request's end) as an `op` request; resolves the reply. */
  request(op: 'get' | 'apply', body: string, what: string): Promise<Buffer> {
    this.pending++;
    const run = this.tail.then(() => this.send(op, body, what)).finally(() => this.pending--);
    this.tail = run.catch(() => undefined);
    return run;
  }

  /** The process's pid while one runs (for tests). */
  get pid(): number | undefined {
    return this.child?.pid;
  }

  private start(): ChildProcessWithoutNullStreams {
    const child = spawn(this.command, ['serve'], { stdio: ['pipe', 'pipe', 'pipe'] });
    this.stderr = [];
    child.stderr.on('data', (b: Buffer) => this.stderr.push(b));
    child.stdin.on('error', () => undefined); // the exit reports a helper that died
    const forget = () => {
      if (this.child === child) this.child = null;
    };
    child.once('close', forget);
    child.once('error', forget); // could not start: the next request tries again
    return child;
  }

  private send(op: string, body: string, what: string): Promise<Buffer> {
    const child = (this.child ??= this.start());
    setRef(child, true);
    return new Promise<Buffer>((resolve, reject) => {
      const chunks: Buffer[] = [];
      let have = 0;
      let need = -1;
      const finish = (err: CrabError | null, reply?: Buffer) => {
        child.stdout.off('data', onData);
        child.off('close', onClose);
        child.off('error', onError);
        setRef(child, false);
        if (err) reject(err);
        else resolve(reply!);
      };
      const onData = (b: Buffer) => {
        chunks.push(b);
        have += b.length;
        if (need < 0) {
          const head = Buffer.concat(chunks);
          const nl = head.indexOf(10);
          if (nl < 0) return;
          need = Number(head.subarray(0, nl).toString());
          chunks.length = 0;
          chunks.push(head.subarray(nl + 1));
          have = head.length - nl - 1;
        }
        if (have < need) return;
        if (have > need || !Number.isSafeInteger(need)) {
          child.kill('SIGKILL'); // out of step: no later reply could be trusted
          return finish(new CrabError('FSSNAP_HELPER_FAILED', 'internal', `${what} replied out of step (${have} bytes for ${need})`, NATIVE_HINT));
        }
        finish(null, Buffer.concat(chunks, have));
      };
      const onClose = (code: number | null, signal: NodeJS.Signals | null) => {
        finish(helperFailed(what, stderrTail(this.stderr) || `exited (${code ?? signal})`, code));
      };
      const onError = (e: Error) => finish(helperUnavailable(this.command, e, NATIVE_HINT));
      child.stdout.on('data', onData);
      child.once('close', onClose);
      child.once('error', onError);
      child.stdin.write(`${op}\0${body}\0`);
    });
  }
}

/** Whether the helper and its pipes keep Node's event loop alive (only while a request is under way). */
function setRef(child: ChildProcessWithoutNullStreams, on: boolean): void {
  for (const h of [child, child.stdin, child.stdout, child.stderr] as unknown as Array<{ ref?: () => void; unref?: () => void }>) {
    if (on) h.ref?.();
    else h.unref?.();
  }
}

/** Two helpers: captures and materializes of different sandboxes go on at once, as they did with a process each. */
const servers = [new XattrServer(), new XattrServer()];

function nativeRequest(op: 'get' | 'apply', body: string, what: string): Promise<Buffer> {
  const server = servers.reduce((a, b) => (b.pending < a.pending ? b : a));
  return server.request(op, body, what);
}

async function runHelper(req: Record<string, unknown>): Promise<unknown> {
  // times are pre-rendered JSON fragments (exact big integers); splice them in raw
  const times = req.times as string[] | undefined;
  const body = times ? JSON.stringify({ ...req, times: '__TIMES__' }).replace('"__TIMES__"', `[${times.join(',')}]`) : JSON.stringify(req);
  const out = await runBatch('python3', ['-c', SCRIPT], body, `metadata helper (${String(req.op)})`, 'Install python3 (crab setup does).');
  try {
    return JSON.parse(out.toString() || '{}');
  } catch (e) {
    throw new CrabError('FSSNAP_HELPER_FAILED', 'internal', 'metadata helper printed invalid JSON', undefined, {}, { cause: e });
  }
}

/** Runs one helper process with `input` on stdin; resolves its stdout, or rejects with a typed error naming `what`. */
function runBatch(command: string, args: string[], input: string, what: string, installHint: string): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { stdio: ['pipe', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (b: Buffer) => out.push(b));
    child.stderr.on('data', (b: Buffer) => err.push(b));
    child.on('error', (e) => reject(helperUnavailable(command, e, installHint)));
    child.stdin.on('error', () => undefined); // the exit code reports a helper that died early
    child.stdin.end(input);
    child.on('close', (code) => {
      if (code === 0) return resolve(Buffer.concat(out));
      reject(helperFailed(what, stderrTail(err), code));
    });
  });
}

/** The last lines a helper printed on stderr, on one line. */
function stderrTail(stderr: Buffer[]): string {
  return Buffer.concat(stderr).toString().trim().split('\n').slice(-3).join(' | ');
}

function helperFailed(what: string, msg: string, code: number | null): CrabError {
  return new CrabError('FSSNAP_HELPER_FAILED', 'internal', `${what} failed: ${msg}`, HELPER_ROLE_HINT, { code });
}

function helperUnavailable(command: string, cause: Error, hint: string): CrabError {
  return new CrabError('FSSNAP_HELPER_UNAVAILABLE', 'unavailable', `cannot run ${command}: ${cause.message}`, hint, {}, { cause });
}
