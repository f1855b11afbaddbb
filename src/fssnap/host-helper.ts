/**
 * @module What Node 20 cannot do itself, in batches, through long-lived `native/bin/crab-xattr
 * serve` processes (`make -C native`; crab setup builds it): read and write extended attributes
 * (incl. `trusted.overlay.*`), `mknod` (whiteouts are 0:0 character devices, plus fifos and
 * devices), `lchown`, and nanosecond `utimensat` without following symlinks. Long-lived because a
 * busy host's Node process is big, and forking it for every capture blocked its event loop
 * (~13 ms a fork with 8 sandboxes busy on 2 cores).
 *
 * Every request names the root of the tree it works in (a sandbox's upper, or a staging upper)
 * and paths relative to it: the helper resolves them beneath the root with openat2 and follows
 * no symlink, so one the sandbox planted cannot point it at a host file.
 */
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import path from 'node:path';
import { CrabError } from '../core/errors.js';
import { REPO_ROOT } from '../core/paths.js';
import { relParts } from '../hostfs/beneath.js';

/** The native reader of xattrs (`make -C native`): no interpreter start-up per capture. */
export const XATTR_HELPER = path.join(REPO_ROOT, 'native', 'bin', 'crab-xattr');


/** A node that only the helper can create. `rdev` is the raw dev_t (0 for whiteouts and fifos). Paths are relative to the request's root. */
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

/**
 * Extended attributes (name → hex value) of each path (relative to `root`, '' for the root
 * itself) that has any. A path that is not in the tree (missing, or below something that is not
 * a real directory) has none.
 */
export async function readXattrs(root: string, rels: readonly string[]): Promise<Map<string, Record<string, string>>> {
  if (rels.length === 0) return new Map();
  const body = rels.map((r) => `${helperPath(r)}\0`).join('');
  const out = await nativeRequest('get', root, body, 'xattr helper');
  const fields = out.toString().split('\0');
  fields.pop(); // after the last terminator
  if (fields.length % 3 !== 0) throw new CrabError('FSSNAP_HELPER_FAILED', 'internal', 'xattr helper printed a truncated record');
  const res = new Map<string, Record<string, string>>();
  for (let i = 0; i < fields.length; i += 3) {
    const p = rels[Number(fields[i])]!;
    const xs = res.get(p) ?? {};
    xs[fields[i + 1]!] = fields[i + 2]!;
    res.set(p, xs);
  }
  return res;
}

/** Creates special nodes, then sets owners/modes, xattrs and times, in that order, in the tree at `root`. */
export async function applyMetadata(root: string, req: ApplyRequest): Promise<void> {
  const records: string[][] = [
    ...req.nodes.map((n) => ['n', helperPath(n.path), n.kind, String(n.rdev)]),
    ...req.owners.map((o) => ['o', helperPath(o.path), String(o.uid), String(o.gid), String(o.mode), o.isSymlink ? '1' : '0']),
    ...req.xattrs.flatMap((x) => Object.entries(x.xattrs).map(([name, hex]) => ['x', helperPath(x.path), name, hex])),
    ...req.times.map((t) => ['t', helperPath(t.path), t.mtimeNs.toString()]),
  ];
  if (records.length === 0) return;
  await nativeRequest('apply', root, records.map((r) => r.map((f) => `${f}\0`).join('')).join(''), 'metadata helper (apply)');
}

/** A relative path as the helper takes it: '.' for the root; no NUL, no '..', not absolute. */
function helperPath(rel: string): string {
  const parts = relParts(rel);
  return parts.length === 0 ? '.' : parts.join('/');
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

  /** Sends `body` (NUL-terminated fields, without the request's end) as an `op` request in the tree at `root`; resolves the reply. */
  request(op: 'get' | 'apply', root: string, body: string, what: string): Promise<Buffer> {
    if (!path.isAbsolute(root) || root.includes('\0')) throw new CrabError('FSSNAP_BAD_ROOT', 'internal', `metadata helper root '${root}' is not an absolute path`);
    this.pending++;
    const run = this.tail.then(() => this.send(op, `${root}\0${body}`, what)).finally(() => this.pending--);
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

function nativeRequest(op: 'get' | 'apply', root: string, body: string, what: string): Promise<Buffer> {
  const server = servers.reduce((a, b) => (b.pending < a.pending ? b : a));
  return server.request(op, root, body, what);
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
