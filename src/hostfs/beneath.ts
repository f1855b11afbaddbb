/**
 * @module Host I/O inside a tree a sandbox can write (its overlay upper, its merged rootfs).
 *
 * The daemon runs as root, so a path it builds by joining a sandbox's directory with a name is a
 * path the sandbox controls: a symlink planted anywhere on the way (`/run/crab/r → /root`,
 * `/a → /usr/bin`) would point the host at a host file. A `Beneath` resolves every path one
 * component at a time from an O_PATH descriptor of the root: each directory is opened with
 * O_NOFOLLOW through `/proc/self/fd/<parent>/<name>`, so a symlink, a file or a vanished entry on
 * the way is an error (ENOTDIR/ENOENT), never followed; `..` and NULs are refused before any I/O.
 * The last component is then used through `/proc/self/fd/<dir>/<name>` with calls that do not
 * follow it either (lstat, readlink, unlink, mkdir, link, O_NOFOLLOW opens, O_EXCL creates).
 *
 * Why not openat2(RESOLVE_IN_ROOT) through a native addon: Node has no *at calls, so every
 * operation would need the addon; the descriptor walk is plain Node, async where the work is
 * bulk, and costs one open per directory (cached for the life of a `Beneath`). The native
 * metadata helper, which is C anyway, resolves with openat2 itself (`native/xattr`).
 *
 * Descriptor lifetime: a directory descriptor stays open while any operation uses it (`acquire`/
 * `release`); a cached descriptor nobody uses may be closed to bound the cache. A descriptor is
 * never closed while a magic path naming it is in use, so a reused descriptor number cannot make a
 * path name another directory.
 */
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import { CrabError, invalid } from '../core/errors.js';

/** open(2)'s O_PATH (Node has no constant for it). */
export const O_PATH = 0o10000000;
const DIR_FLAGS = O_PATH | fs.constants.O_DIRECTORY | fs.constants.O_NOFOLLOW;
/** Cached directory descriptors per Beneath (more are opened while in use, and closed after). */
const CACHE_LIMIT = 512;

/** `rel` as path components: '' and '.' name the root; '..' and NUL are refused. */
export function relParts(rel: string): string[] {
  if (rel.includes('\0')) throw invalid('HOSTFS_BAD_PATH', `path ${JSON.stringify(rel)} contains a NUL byte`);
  const parts = rel.split('/').filter((s) => s !== '' && s !== '.');
  if (parts.includes('..')) throw invalid('HOSTFS_BAD_PATH', `path '${rel}' must not contain '..'`, 'Give paths relative to the sandbox root, without ..');
  return parts;
}

function errnoOf(err: unknown): string | undefined {
  return (err as NodeJS.ErrnoException | undefined)?.code;
}

/** True for the errors that mean "this path is not (or no longer) in the tree as a real path". */
export function isAbsent(err: unknown): boolean {
  const c = errnoOf(err);
  return c === 'ENOENT' || c === 'ENOTDIR';
}



interface CachedDir {
  fd: number;
  users: number;
}

export class Beneath {
  private readonly rootFd: number;
  /** Open directories by relative path; '' is the root (never evicted). */
  private readonly dirs = new Map<string, CachedDir>();
  private closed = false;

  /**
   * @param root a host path the host made (a sandbox's upper or rootfs mount point); it may be
   *   followed, nothing below it is.
   * @param what names the tree in errors ("the upper of sandbox X").
   */
  constructor(
    readonly root: string,
    readonly what = root,
  ) {
    this.rootFd = fs.openSync(root, O_PATH | fs.constants.O_DIRECTORY);
    this.dirs.set('', { fd: this.rootFd, users: 0 });
  }

  /** Runs `fn` with a Beneath of `root`, closed afterwards. */
  static async with<T>(root: string, fn: (b: Beneath) => Promise<T>, what?: string): Promise<T> {
    const b = new Beneath(root, what);
    try {
      return await fn(b);
    } finally {
      b.close();
    }
  }

  static withSync<T>(root: string, fn: (b: Beneath) => T, what?: string): T {
    const b = new Beneath(root, what);
    try {
      return fn(b);
    } finally {
      b.close();
    }
  }

  /** Closes every descriptor; one an operation still uses is closed when that operation ends. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const [k, d] of this.dirs) {
      if (d.users > 0) continue;
      fs.closeSync(d.fd);
      this.dirs.delete(k);
    }
  }

  /**
   * A descriptor of directory `parts` (held until `release(key)`), opened component by component
   * without following anything. Throws ENOENT/ENOTDIR (as Node errors) when a component is
   * missing or is not a real directory.
   */
  private acquire(parts: readonly string[]): { fd: number; key: string } {
    if (this.closed) throw new CrabError('HOSTFS_CLOSED', 'internal', `${this.what}: used after close`);
    const key = parts.join('/');
    const hit = this.dirs.get(key);
    if (hit) {
      hit.users++;
      if (key !== '') {
        this.dirs.delete(key); // re-inserted: the Map's order is least recently used first
        this.dirs.set(key, hit);
      }
      return { fd: hit.fd, key };
    }
    const parent = this.acquire(parts.slice(0, -1));
    let fd: number;
    try {
      fd = fs.openSync(`/proc/self/fd/${parent.fd}/${parts[parts.length - 1]}`, DIR_FLAGS);
    } finally {
      this.release(parent.key);
    }
    this.dirs.set(key, { fd, users: 1 });
    this.trim();
    return { fd, key };
  }

  private release(key: string): void {
    const d = this.dirs.get(key);
    if (!d) return;
    d.users--;
    if (this.closed && d.users === 0) {
      fs.closeSync(d.fd);
      this.dirs.delete(key);
    }
  }

  private trim(): void {
    if (this.dirs.size <= CACHE_LIMIT) return;
    for (const [k, d] of this.dirs) {
      if (this.dirs.size <= CACHE_LIMIT) break;
      if (d.users > 0 || k === '') continue;
      this.dirs.delete(k);
      fs.closeSync(d.fd);
    }
  }

  /**
   * Calls `fn` with a path naming `rel`'s last component inside its (safely resolved) parent
   * directory, valid while `fn` runs. For the root itself the path names the root directory.
   * `fn` must not follow the last component (use lstat, readlink, O_NOFOLLOW, O_EXCL, unlink…).
   */
  atSync<T>(rel: string, fn: (p: string) => T): T {
    const parts = relParts(rel);
    const dir = this.acquire(parts.slice(0, -1));
    try {
      return fn(parts.length === 0 ? `/proc/self/fd/${dir.fd}/.` : `/proc/self/fd/${dir.fd}/${parts[parts.length - 1]}`);
    } finally {
      this.release(dir.key);
    }
  }

  async at<T>(rel: string, fn: (p: string) => Promise<T>): Promise<T> {
    const parts = relParts(rel);
    const dir = this.acquire(parts.slice(0, -1));
    try {
      return await fn(parts.length === 0 ? `/proc/self/fd/${dir.fd}/.` : `/proc/self/fd/${dir.fd}/${parts[parts.length - 1]}`);
    } finally {
      this.release(dir.key);
    }
  }

  /** Calls `fn` with a path naming directory `rel` itself (e.g. for readdir), valid while `fn` runs. */
  async inDir<T>(rel: string, fn: (dirPath: string) => Promise<T>): Promise<T> {
    const dir = this.acquire(relParts(rel));
    try {
      return await fn(`/proc/self/fd/${dir.fd}`);
    } finally {
      this.release(dir.key);
    }
  }

  inDirSync<T>(rel: string, fn: (dirPath: string) => T): T {
    const dir = this.acquire(relParts(rel));
    try {
      return fn(`/proc/self/fd/${dir.fd}`);
    } finally {
      this.release(dir.key);
    }
  }

  /** lstat of `rel`; null when it is not in the tree (missing, or a parent is not a real directory). */
  lstatSync(rel: string): fs.Stats | null {
    try {
      return this.atSync(rel, (p) => fs.lstatSync(p));
    } catch (err) {
      if (isAbsent(err)) return null;
      throw err;
    }
  }

  async lstat(rel: string): Promise<fs.BigIntStats | null> {
    try {
      return await this.at(rel, (p) => fsp.lstat(p, { bigint: true }));
    } catch (err) {
      if (isAbsent(err)) return null;
      throw err;
    }
  }

  async readlink(rel: string): Promise<string> {
    return this.at(rel, (p) => fsp.readlink(p));
  }

  /** Names in directory `rel` (unsorted); [] when it is not in the tree. */
  readdirSync(rel: string): string[] {
    try {
      return this.inDirSync(rel, (d) => fs.readdirSync(d));
    } catch (err) {
      if (isAbsent(err)) return [];
      throw err;
    }
  }

  async readdir(rel: string): Promise<string[]> {
    return this.inDir(rel, (d) => fsp.readdir(d));
  }

  /**
   * Opens `rel` with `flags` only if it is of `kind`: first as O_PATH | O_NOFOLLOW (which runs no
   * driver's open and follows nothing), checked with fstat, then reopened through that descriptor,
   * so what is opened for I/O is the very inode checked (a device or FIFO the sandbox swaps in
   * meanwhile is never opened). Null when `rel` is not in the tree.
   */
  private openCheckedSync(rel: string, flags: number, kind: 'file' | 'fifo'): number | null {
    let pathFd: number;
    try {
      pathFd = this.atSync(rel, (p) => fs.openSync(p, O_PATH | fs.constants.O_NOFOLLOW));
    } catch (err) {
      if (isAbsent(err)) return null;
      throw err;
    }
    try {
      const st = fs.fstatSync(pathFd);
      if (kind === 'file' ? !st.isFile() : !st.isFIFO()) throw kind === 'file' ? notAFile(this.what, rel) : notAFifo(this.what, rel);
      return fs.openSync(`/proc/self/fd/${pathFd}`, flags | fs.constants.O_NONBLOCK);
    } finally {
      fs.closeSync(pathFd);
    }
  }

  /**
   * Opens regular file `rel` read-only without following it; null when it is not in the tree.
   * Throws HOSTFS_NOT_A_FILE for anything but a regular file (a link, a FIFO, a device).
   */
  openFileSync(rel: string): number | null {
    return this.openCheckedSync(rel, fs.constants.O_RDONLY, 'file');
  }

  /**
   * Up to `maxBytes` of regular file `rel` from its start; null when it is not in the tree.
   * `truncated` says whether the file held more.
   */
  readFileSync(rel: string, maxBytes: number): { data: Buffer; size: number; truncated: boolean } | null {
    const fd = this.openFileSync(rel);
    if (fd === null) return null;
    try {
      const size = fs.fstatSync(fd).size;
      const buf = Buffer.alloc(Math.min(size, maxBytes));
      let n = 0;
      while (n < buf.length) {
        const got = fs.readSync(fd, buf, n, buf.length - n, n);
        if (got === 0) break;
        n += got;
      }
      return { data: buf.subarray(0, n), size, truncated: size > maxBytes };
    } finally {
      fs.closeSync(fd);
    }
  }

  /**
   * Regular file `rel`, as many bytes as it held when opened (it must not hold more than
   * `maxBytes`: HOSTFS_TOO_BIG); null when it is not in the tree. The open and its checks are
   * synchronous (a few short syscalls: cheaper than as many thread-pool round trips, which
   * doubled a 5000-file capture), the read is not.
   */
  async readFile(rel: string, maxBytes = Number.MAX_SAFE_INTEGER): Promise<Buffer | null> {
    const fd = this.openFileSync(rel);
    if (fd === null) return null;
    try {
      const size = fs.fstatSync(fd).size;
      if (size > maxBytes) throw new CrabError('HOSTFS_TOO_BIG', 'invalid', `${this.what}: ${rel} holds ${size} bytes, more than the ${maxBytes} allowed`);
      const buf = Buffer.allocUnsafe(size);
      let off = 0;
      while (off < size) {
        const n = await readAt(fd, buf, off, size - off, off);
        if (n === 0) break;
        off += n;
      }
      return buf.subarray(0, off);
    } finally {
      fs.closeSync(fd);
    }
  }

  /** Creates `rel` as a new file (O_EXCL: never through an existing name or symlink) holding `data`. */
  writeNewFileSync(rel: string, data: string | Uint8Array, mode = 0o600): void {
    this.atSync(rel, (p) => {
      const fd = fs.openSync(p, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL | fs.constants.O_NOFOLLOW, mode);
      try {
        fs.writeSync(fd, typeof data === 'string' ? Buffer.from(data) : data);
      } finally {
        fs.closeSync(fd);
      }
    });
  }

  /** Replaces whatever `rel` is (a file, a planted symlink) with a new file holding `data`. */
  replaceFileSync(rel: string, data: string | Uint8Array, mode = 0o600): void {
    this.unlinkSync(rel);
    this.writeNewFileSync(rel, data, mode);
  }

  /** Removes the name `rel` (never what a symlink points to); a missing name is fine. */
  unlinkSync(rel: string): void {
    try {
      this.atSync(rel, (p) => fs.unlinkSync(p));
    } catch (err) {
      if (errnoOf(err) !== 'ENOENT') throw err;
    }
  }

  /** Makes directory `rel` and its missing parents; an existing component must be a real directory. */
  mkdirpSync(rel: string, mode = 0o755): void {
    const parts = relParts(rel);
    for (let i = 1; i <= parts.length; i++) {
      const sub = parts.slice(0, i).join('/');
      try {
        this.atSync(sub, (p) => fs.mkdirSync(p, { mode }));
      } catch (err) {
        if (errnoOf(err) !== 'EEXIST') throw err;
        if (!this.lstatSync(sub)?.isDirectory()) throw new CrabError('HOSTFS_NOT_A_DIRECTORY', 'precondition', `${this.what}: ${sub} is not a directory`, 'Something in the sandbox replaced it; recreate the sandbox or restore it.');
      }
    }
  }

  /**
   * Opens FIFO `rel` for writing without blocking and without following it; throws
   * HOSTFS_NOT_A_FIFO when it is something else, ENOENT or ENXIO (Node errors) when it is
   * missing or nothing reads it.
   */
  openFifoWriterSync(rel: string): number {
    const fd = this.openCheckedSync(rel, fs.constants.O_WRONLY, 'fifo');
    if (fd === null) throw Object.assign(new Error(`ENOENT: ${this.what}: ${rel} does not exist`), { code: 'ENOENT' });
    return fd;
  }

  /**
   * Resolves `rel` the way a process chrooted at the root would (symlinks followed, each resolved
   * inside the root, `..` clamped at it) and returns the lstat of the result; null when missing.
   * For questions about what the sandbox itself would see ("is its cwd a directory?").
   */
  statInRootSync(rel: string): fs.Stats | null {
    const MAX_LINKS = 40;
    let todo = rel.split('/');
    const done: string[] = [];
    let links = 0;
    while (todo.length) {
      const c = todo.shift()!;
      if (c === '' || c === '.') continue;
      if (c.includes('\0')) return null;
      if (c === '..') {
        done.pop();
        continue;
      }
      const cur = [...done, c].join('/');
      const st = this.lstatSync(cur);
      if (!st) return null;
      if (st.isSymbolicLink()) {
        if (++links > MAX_LINKS) return null;
        const target = this.atSync(cur, (p) => fs.readlinkSync(p));
        if (target.startsWith('/')) done.length = 0;
        todo = [...target.split('/'), ...todo];
        continue;
      }
      if (todo.some((t) => t !== '' && t !== '.') && !st.isDirectory()) return null;
      done.push(c);
    }
    return this.lstatSync(done.join('/'));
  }
}

function readAt(fd: number, buf: Buffer, offset: number, length: number, position: number): Promise<number> {
  return new Promise((resolve, reject) => fs.read(fd, buf, offset, length, position, (err, n) => (err ? reject(err) : resolve(n))));
}

function notAFifo(what: string, rel: string): CrabError {
  return new CrabError('HOSTFS_NOT_A_FIFO', 'precondition', `${what}: ${rel} is not a FIFO`, 'Something in the sandbox replaced its control FIFO; restore the sandbox or create a new one.');
}

function notAFile(what: string, rel: string): CrabError {
  return new CrabError('HOSTFS_NOT_A_FILE', 'precondition', `${what}: ${rel} is not a regular file`, 'Something in the sandbox replaced it with a link, a FIFO or a device; the host does not read those.');
}
