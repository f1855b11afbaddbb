/**
 * @module The outer image archive (`docker save` or an OCI layout tarball), read with a tar parser
 * and never unpacked by name: each regular member is copied to a file whose name we choose
 * (`m<N>` in a scratch directory), and links between members are resolved in the archive's own
 * namespace. A member named `../../etc/x`, or a symlink `blobs/sha256/… -> /etc/shadow`, can
 * therefore neither be written nor read on the host.
 */
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';
import { Writable } from 'node:stream';
import tar from 'tar-stream';
import { CrabError, invalid } from '../core/errors.js';
import { archiveKey, archiveLinkTarget, parseDigest, type DigestAlgorithm } from './import-policy.js';

/** Links followed inside the archive before giving up (a loop, or a chain no tool writes). */
const MAX_LINK_HOPS = 16;
/** Largest JSON document (manifest, index, config) read into memory. */
export const MAX_JSON_BYTES = 8 * 2 ** 20;

interface StoredMember {
  file: string;
  sizeBytes: number;
  sha256: string;
}

/** The members of an image archive: regular files stored under names we chose, links by name. */
export class ArchiveIndex {
  private readonly files = new Map<string, StoredMember>();
  private readonly links = new Map<string, string>();

  private constructor(readonly dir: string) {}

  /** Reads `archive` (a tar file) into `dir` (created; the caller removes it). */
  static async read(archive: string, dir: string): Promise<ArchiveIndex> {
    const index = new ArchiveIndex(dir);
    await fsp.mkdir(dir, { recursive: true, mode: 0o700 });
    const extract = tar.extract();
    let n = 0;
    const consume = (async () => {
      try {
        await index.consume(extract, () => path.join(dir, `m${n++}`));
      } catch (err) {
        extract.destroy(err as Error); // stop reading the archive: its pipeline fails too
        throw err;
      }
    })();
    try {
      await Promise.all([pipeline(fs.createReadStream(archive), extract), consume]);
    } catch (err) {
      await consume.catch(() => undefined);
      if (err instanceof CrabError) throw err;
      throw new CrabError(
        'IMAGE_ARCHIVE_INVALID',
        'invalid',
        `${archive} is not a readable tar archive: ${(err as Error).message}`,
        'Create it with `docker save IMAGE -o file.tar` or `skopeo copy … oci-archive:file.tar`.',
        {},
        { cause: err },
      );
    }
    return index;
  }

  private async consume(extract: tar.Extract, nextFile: () => string): Promise<void> {
    for await (const entry of extract) {
      const h = entry.header;
      const key = archiveKey(h.name);
      if (key && (h.type === 'file' || h.type === 'contiguous-file')) {
        const file = nextFile();
        const hash = createHash('sha256');
        let sizeBytes = 0;
        const fh = await fsp.open(
          file,
          fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL | fs.constants.O_NOFOLLOW,
          0o600,
        );
        try {
          for await (const chunk of entry as AsyncIterable<Buffer>) {
            hash.update(chunk);
            sizeBytes += chunk.length;
            for (let done = 0; done < chunk.length;) done += (await fh.write(chunk, done)).bytesWritten;
          }
        } finally {
          await fh.close();
        }
        this.files.set(key, { file, sizeBytes, sha256: hash.digest('hex') });
        this.links.delete(key);
      } else {
        if (key && (h.type === 'symlink' || h.type === 'link') && h.linkname) {
          // a hard link's target is a member name (from the root); a symlink's is relative to its directory
          const target = h.type === 'link' ? archiveKey(h.linkname) : archiveLinkTarget(key, h.linkname);
          if (target) {
            this.links.set(key, target);
            this.files.delete(key);
          }
        }
        for await (const _ of entry as AsyncIterable<Buffer>); // directories, devices, names we never read: data skipped
      }
    }
  }

  /** The stored member a name refers to (following the archive's own links), or null. */
  member(name: string): StoredMember | null {
    let key = archiveKey(name);
    for (let hop = 0; key && hop <= MAX_LINK_HOPS; hop++) {
      const f = this.files.get(key);
      if (f) return f;
      key = this.links.get(key) ?? null;
    }
    return null;
  }

  has(name: string): boolean {
    return this.member(name) !== null;
  }

  /** The member as a stored file, or IMAGE_ARCHIVE_INVALID naming what is missing. */
  require(name: string, what: string): StoredMember {
    const m = this.member(name);
    if (!m) throw invalid('IMAGE_ARCHIVE_INVALID', `the archive has no ${what} '${name}'`);
    return m;
  }

  /** Parses a member as JSON (at most MAX_JSON_BYTES). */
  async json<T>(name: string, what: string): Promise<T> {
    const m = this.require(name, what);
    if (m.sizeBytes > MAX_JSON_BYTES)
      throw invalid(
        'IMAGE_ARCHIVE_INVALID',
        `${what} '${name}' is ${m.sizeBytes} bytes; at most ${MAX_JSON_BYTES} are read`,
      );
    try {
      return JSON.parse(await fsp.readFile(m.file, 'utf8')) as T;
    } catch (err) {
      throw invalid('IMAGE_ARCHIVE_INVALID', `${what} '${name}' is not JSON: ${(err as Error).message}`);
    }
  }

  /** The member of an OCI blob digest (`blobs/<alg>/<hex>`), verified against its bytes. */
  async blob(digest: string, what: string): Promise<StoredMember> {
    const d = parseDigest(digest);
    const m = this.require(`blobs/${d.algorithm}/${d.hex}`, what);
    await verifyMember(m, d.algorithm, d.hex, what);
    return m;
  }

  /** A JSON blob by digest, verified, then parsed (at most MAX_JSON_BYTES). */
  async jsonBlob<T>(digest: string, what: string): Promise<T> {
    const d = parseDigest(digest);
    await this.blob(digest, what);
    const doc = await this.json<T>(`blobs/${d.algorithm}/${d.hex}`, what);
    if (typeof doc !== 'object' || doc === null)
      throw invalid('IMAGE_ARCHIVE_INVALID', `${what} ${digest} is not a JSON object`);
    return doc;
  }
}

/** Checks that a stored member's bytes have this digest (sha256 was computed while copying it). */
export async function verifyMember(
  m: StoredMember,
  algorithm: DigestAlgorithm,
  hex: string,
  what: string,
): Promise<void> {
  const got = algorithm === 'sha256' ? m.sha256 : await hashFile(m.file, algorithm);
  if (got !== hex) throw digestMismatch(what, `${algorithm}:${hex}`, `${algorithm}:${got}`);
}

async function hashFile(file: string, algorithm: DigestAlgorithm): Promise<string> {
  const hash = createHash(algorithm);
  await pipeline(
    fs.createReadStream(file),
    new Writable({ write: (c: Buffer, _e, cb) => (hash.update(c), cb()) }),
  );
  return hash.digest('hex');
}

export function digestMismatch(what: string, want: string, got: string): CrabError {
  return new CrabError(
    'IMAGE_DIGEST_MISMATCH',
    'invalid',
    `${what} does not match its digest: expected ${want}, got ${got}`,
    'The archive is damaged or was edited after it was made; nothing was imported. Export the image again.',
    { want, got },
  );
}
