/**
 * @module `SqliteCatalog`: the catalog in one SQLite file (better-sqlite3, WAL, foreign keys).
 * Schema migrations are numbered and tracked in `PRAGMA user_version`; each runs in a
 * transaction. A database newer than this code is refused rather than guessed at.
 */
import Database from 'better-sqlite3';
import fs from 'node:fs';
import path from 'node:path';
import { CrabError, conflict, invalid } from '../core/errors.js';
import { newId } from '../core/ids.js';
import type {
  Catalog,
  CheckpointDraft,
  CheckpointKind,
  CheckpointRecord,
  CommitOptions,
  GcRoot,
  GcRootExpander,
  SandboxRecord,
} from './catalog.js';
import { CATALOG_ERROR_CODES, checkpointNotFound, rowCorrupt, sandboxNotFound } from './catalog.js';

/** Migration N (1-based) brings user_version from N-1 to N. Append only; never edit a released one. */
const MIGRATIONS: readonly string[] = [
  `CREATE TABLE sandboxes (
     id TEXT PRIMARY KEY,
     name TEXT NOT NULL,
     image TEXT NOT NULL,
     config TEXT NOT NULL DEFAULT '{}',
     created INTEGER NOT NULL,
     state TEXT NOT NULL
   );
   CREATE TABLE checkpoints (
     id TEXT PRIMARY KEY,
     sandbox_id TEXT NOT NULL REFERENCES sandboxes(id),
     parent_id TEXT REFERENCES checkpoints(id),
     kind TEXT NOT NULL CHECK (kind IN ('full', 'fs', 'process')),
     turn INTEGER,
     created_at INTEGER NOT NULL,
     logical_bytes INTEGER NOT NULL DEFAULT 0,
     new_bytes INTEGER NOT NULL DEFAULT 0,
     fs_manifest TEXT,
     process_image TEXT,
     process_image_from TEXT,
     effects TEXT NOT NULL DEFAULT 'null',
     meta TEXT NOT NULL DEFAULT 'null'
   );
   CREATE INDEX checkpoints_by_sandbox ON checkpoints(sandbox_id, created_at);
   CREATE INDEX checkpoints_by_parent ON checkpoints(parent_id);
   CREATE TABLE refs (
     name TEXT PRIMARY KEY,
     checkpoint_id TEXT NOT NULL REFERENCES checkpoints(id)
   );
   CREATE INDEX refs_by_checkpoint ON refs(checkpoint_id);`,
  // 2: when every chunk a checkpoint names was last known good (ms); null: unknown, check before building on it
  `ALTER TABLE checkpoints ADD COLUMN verified_at INTEGER;`,
];

interface CheckpointRow {
  id: string;
  sandbox_id: string;
  parent_id: string | null;
  kind: CheckpointKind;
  turn: number | null;
  created_at: number;
  logical_bytes: number;
  new_bytes: number;
  fs_manifest: string | null;
  process_image: string | null;
  process_image_from: string | null;
  effects: string;
  meta: string;
  verified_at: number | null;
  seq?: number;
}

interface SandboxRow {
  id: string;
  name: string;
  image: string;
  config: string;
  created: number;
  state: string;
}

export interface SqliteCatalogOptions {
  /** Injected clock (ms since epoch), for tests. */
  nowMs?: () => number;
}

export class SqliteCatalog implements Catalog {
  /** Exposed for tests and diagnostics only. */
  readonly db: Database.Database;
  private readonly nowMs: () => number;
  private lastCreatedAt = 0;

  private constructor(db: Database.Database, opts: SqliteCatalogOptions) {
    this.db = db;
    this.nowMs = opts.nowMs ?? Date.now;
  }

  /** Opens (creating and migrating if needed) the catalog at `file` (':memory:' for tests). */
  static open(file: string, opts: SqliteCatalogOptions = {}): SqliteCatalog {
    if (file !== ':memory:') fs.mkdirSync(path.dirname(file), { recursive: true });
    const db = new Database(file);
    try {
      db.pragma('journal_mode = WAL');
      db.pragma('synchronous = FULL'); // a committed checkpoint must survive a power cut
      db.pragma('foreign_keys = ON');
      db.pragma('busy_timeout = 5000');
      migrate(db);
    } catch (err) {
      db.close();
      throw err;
    }
    return new SqliteCatalog(db, opts);
  }

  /** Schema version this code writes. */
  static readonly schemaVersion = MIGRATIONS.length;

  async putSandbox(s: SandboxRecord): Promise<void> {
    this.db
      .prepare(
        `INSERT INTO sandboxes (id, name, image, config, created, state) VALUES (?, ?, ?, ?, ?, ?)
         ON CONFLICT(id) DO UPDATE SET name = excluded.name, image = excluded.image,
           config = excluded.config, created = excluded.created, state = excluded.state`,
      )
      .run(s.id, s.name, s.image, JSON.stringify(s.config ?? {}), s.createdAtMs, s.state);
  }

  async getSandbox(id: string): Promise<SandboxRecord> {
    const row = this.db.prepare('SELECT * FROM sandboxes WHERE id = ?').get(id) as SandboxRow | undefined;
    if (!row) throw sandboxNotFound(id);
    const rec = sandboxFromRow(row);
    if (rec.corrupt) throw rowCorrupt('sandbox', id, rec.corrupt);
    return rec;
  }

  async listSandboxes(): Promise<SandboxRecord[]> {
    return (this.db.prepare('SELECT * FROM sandboxes ORDER BY created, id').all() as SandboxRow[]).map(sandboxFromRow);
  }

  async setSandboxState(id: string, state: string): Promise<void> {
    const r = this.db.prepare('UPDATE sandboxes SET state = ? WHERE id = ?').run(state, id);
    if (r.changes === 0) throw sandboxNotFound(id);
  }

  async deleteSandbox(id: string, opts: { cascade?: boolean } = {}): Promise<void> {
    this.db.transaction(() => {
      const n = (this.db.prepare('SELECT count(*) AS n FROM checkpoints WHERE sandbox_id = ?').get(id) as { n: number }).n;
      if (n > 0 && !opts.cascade) {
        throw conflict(
          CATALOG_ERROR_CODES.sandboxHasCheckpoints,
          `sandbox '${id}' has ${n} checkpoints`,
          'Delete them first, or pass cascade to delete them with the sandbox.',
          { id, checkpoints: n },
        );
      }
      this.db.prepare('DELETE FROM refs WHERE checkpoint_id IN (SELECT id FROM checkpoints WHERE sandbox_id = ?)').run(id);
      // children point at parents inside the same sandbox: drop the links, then the rows
      this.db.prepare('UPDATE checkpoints SET parent_id = NULL WHERE sandbox_id = ?').run(id);
      this.db.prepare('DELETE FROM checkpoints WHERE sandbox_id = ?').run(id);
      const r = this.db.prepare('DELETE FROM sandboxes WHERE id = ?').run(id);
      if (r.changes === 0) throw sandboxNotFound(id);
    })();
  }

  async commitCheckpoint(draft: CheckpointDraft, opts: CommitOptions = {}): Promise<CheckpointRecord> {
    const id = draft.id ?? newId('ck-');
    // created_at strictly increases within this catalog, so "newest" is well defined
    const createdAt = Math.max(this.nowMs(), this.lastCreatedAt + 1);
    const tx = this.db.transaction((): void => {
      if (!this.db.prepare('SELECT 1 FROM sandboxes WHERE id = ?').get(draft.sandboxId)) throw sandboxNotFound(draft.sandboxId);
      if (draft.parentId !== null) {
        const parent = this.row(draft.parentId);
        if (parent.sandbox_id !== draft.sandboxId) {
          throw badLineage(`parent ${draft.parentId} belongs to sandbox ${parent.sandbox_id}, not ${draft.sandboxId}`);
        }
      }
      // a process-only checkpoint keeps the parent's filesystem: record its manifest, resolved
      let fsManifest = draft.fsManifest;
      if (fsManifest === null && draft.kind === 'process' && draft.parentId !== null) fsManifest = this.row(draft.parentId).fs_manifest;
      let processImage: string | null = null;
      let processImageFrom: string | null = null;
      if (draft.processImage && 'digest' in draft.processImage) {
        processImage = draft.processImage.digest;
        processImageFrom = id;
      } else if (draft.processImage) {
        const src = this.row(draft.processImage.reuseOf);
        if (!src.process_image) throw badLineage(`checkpoint ${src.id} has no process image to reuse`);
        processImage = src.process_image;
        processImageFrom = src.process_image_from;
      }
      if ((draft.kind === 'full' || draft.kind === 'process') && !(draft.processImage && 'digest' in draft.processImage)) {
        throw badLineage(`a '${draft.kind}' checkpoint must take its own process image`);
      }
      if (!fsManifest) throw badLineage(`a '${draft.kind}' checkpoint needs an fs manifest (its own or, for 'process', its parent's)`);
      this.db
        .prepare(
          `INSERT INTO checkpoints (id, sandbox_id, parent_id, kind, turn, created_at, logical_bytes, new_bytes,
             fs_manifest, process_image, process_image_from, effects, meta, verified_at)
           VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
        )
        .run(
          id,
          draft.sandboxId,
          draft.parentId,
          draft.kind,
          draft.turn,
          createdAt,
          draft.logicalBytes,
          draft.newBytes,
          fsManifest,
          processImage,
          processImageFrom,
          JSON.stringify(draft.effects ?? null),
          JSON.stringify(draft.meta ?? null),
          draft.verifiedAtMs ?? null,
        );
      const setRef = this.db.prepare(
        'INSERT INTO refs (name, checkpoint_id) VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET checkpoint_id = excluded.checkpoint_id',
      );
      for (const name of opts.refs ?? []) setRef.run(checkRefName(name), id);
    });
    tx.immediate();
    this.lastCreatedAt = createdAt;
    return this.getCheckpoint(id);
  }

  async getCheckpoint(id: string): Promise<CheckpointRecord> {
    const rec = checkpointFromRow(this.row(id));
    if (rec.corrupt) throw rowCorrupt('checkpoint', id, rec.corrupt);
    return rec;
  }

  async listCheckpoints(sandboxId: string): Promise<CheckpointRecord[]> {
    const rows = this.db.prepare('SELECT * FROM checkpoints WHERE sandbox_id = ? ORDER BY created_at, rowid').all(sandboxId) as CheckpointRow[];
    return rows.map(checkpointFromRow);
  }

  async children(id: string): Promise<CheckpointRecord[]> {
    const rows = this.db.prepare('SELECT * FROM checkpoints WHERE parent_id = ? ORDER BY created_at, rowid').all(id) as CheckpointRow[];
    return rows.map(checkpointFromRow);
  }

  async ancestors(id: string): Promise<CheckpointRecord[]> {
    this.row(id);
    const rows = this.db
      .prepare(
        `WITH RECURSIVE up(id, depth) AS (
           SELECT parent_id, 1 FROM checkpoints WHERE id = ? AND parent_id IS NOT NULL
           UNION ALL
           SELECT c.parent_id, up.depth + 1 FROM checkpoints c JOIN up ON c.id = up.id WHERE c.parent_id IS NOT NULL
         )
         SELECT c.* FROM up JOIN checkpoints c ON c.id = up.id ORDER BY up.depth`,
      )
      .all(id) as CheckpointRow[];
    return rows.map(checkpointFromRow);
  }

  async newestProcessImage(id: string): Promise<CheckpointRecord | null> {
    const self = await this.getCheckpoint(id);
    for (const c of [self, ...(await this.ancestors(id))]) {
      if (c.processImage && c.processImageFrom === c.id) return c;
    }
    return null;
  }

  async deleteCheckpoint(id: string): Promise<void> {
    this.db.transaction(() => {
      const row = this.row(id);
      const refs = this.db.prepare('SELECT name FROM refs WHERE checkpoint_id = ?').all(id) as Array<{ name: string }>;
      if (refs.length > 0) {
        throw conflict(
          CATALOG_ERROR_CODES.checkpointReferenced,
          `checkpoint '${id}' is pointed at by ref(s) ${refs.map((r) => r.name).join(', ')}`,
          'Move or delete those refs first (e.g. roll the sandbox head to another checkpoint).',
          { id, refs: refs.map((r) => r.name) },
        );
      }
      this.db.prepare('UPDATE checkpoints SET parent_id = ? WHERE parent_id = ?').run(row.parent_id, id);
      this.db.prepare('DELETE FROM checkpoints WHERE id = ?').run(id);
    }).immediate();
  }

  async setRef(name: string, checkpointId: string): Promise<void> {
    this.db.transaction(() => {
      this.row(checkpointId);
      this.db
        .prepare('INSERT INTO refs (name, checkpoint_id) VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET checkpoint_id = excluded.checkpoint_id')
        .run(checkRefName(name), checkpointId);
    }).immediate();
  }

  async markVerified(id: string, atMs: number): Promise<void> {
    const r = this.db.prepare('UPDATE checkpoints SET verified_at = max(coalesce(verified_at, 0), ?) WHERE id = ?').run(atMs, id);
    if (r.changes === 0) throw checkpointNotFound(id);
  }

  async getRef(name: string): Promise<string | null> {
    const r = this.db.prepare('SELECT checkpoint_id FROM refs WHERE name = ?').get(name) as { checkpoint_id: string } | undefined;
    return r?.checkpoint_id ?? null;
  }

  async deleteRef(name: string): Promise<void> {
    this.db.prepare('DELETE FROM refs WHERE name = ?').run(name);
  }

  async listRefs(): Promise<Array<{ name: string; checkpointId: string }>> {
    const rows = this.db.prepare('SELECT name, checkpoint_id FROM refs ORDER BY name').all() as Array<{ name: string; checkpoint_id: string }>;
    return rows.map((r) => ({ name: r.name, checkpointId: r.checkpoint_id }));
  }

  async gcRoots(): Promise<GcRoot[]> {
    const rows = this.db
      .prepare(
        `SELECT DISTINCT fs_manifest AS digest, 'fs-manifest' AS kind FROM checkpoints WHERE fs_manifest IS NOT NULL
         UNION
         SELECT DISTINCT process_image AS digest, 'process-image' AS kind FROM checkpoints WHERE process_image IS NOT NULL`,
      )
      .all() as GcRoot[];
    return rows.filter((r) => isDigestText(r.digest));
  }

  async liveDigests(expand: GcRootExpander): Promise<Set<string>> {
    const live = new Set<string>();
    for (const root of await this.gcRoots()) {
      live.add(root.digest);
      for (const d of await expand(root)) live.add(d);
    }
    return live;
  }

  async close(): Promise<void> {
    if (this.db.open) this.db.close();
  }

  private row(id: string): CheckpointRow {
    const row = this.db.prepare('SELECT * FROM checkpoints WHERE id = ?').get(id) as CheckpointRow | undefined;
    if (!row) throw checkpointNotFound(id);
    return row;
  }
}

function migrate(db: Database.Database): void {
  const current = db.pragma('user_version', { simple: true }) as number;
  if (current > MIGRATIONS.length) {
    throw new CrabError(
      CATALOG_ERROR_CODES.schemaTooNew,
      'precondition',
      `catalog schema version ${current} is newer than this Crab understands (${MIGRATIONS.length})`,
      'Run a Crab at least as new as the one that last wrote this catalog.',
      { current, known: MIGRATIONS.length },
    );
  }
  for (let v = current; v < MIGRATIONS.length; v++) {
    db.transaction(() => {
      db.exec(MIGRATIONS[v]!);
      db.pragma(`user_version = ${v + 1}`);
    }).immediate();
  }
}

function badLineage(message: string): CrabError {
  return invalid(CATALOG_ERROR_CODES.badLineage, message, 'Commit checkpoints against existing ancestors of the same sandbox.');
}

function checkRefName(name: string): string {
  if (!/^[A-Za-z0-9][A-Za-z0-9_./:-]{0,200}$/.test(name)) {
    throw invalid('CATALOG_BAD_REF_NAME', `ref name '${name}' is not allowed`, 'Use letters, digits and _ . / : -');
  }
  return name;
}

function sandboxFromRow(r: SandboxRow): SandboxRecord {
  const rec: SandboxRecord = { id: String(r.id), name: String(r.name), image: String(r.image), config: null, createdAtMs: Number(r.created), state: String(r.state) };
  try {
    rec.config = JSON.parse(r.config);
  } catch (err) {
    rec.corrupt = `config is not JSON: ${(err as Error).message}`;
  }
  return rec;
}

const DIGEST_TEXT = /^[0-9a-f]{64}$/;
const isDigestText = (v: unknown): v is string => typeof v === 'string' && DIGEST_TEXT.test(v);

/**
 * A checkpoint record from its row. Every column is checked rather than trusted (SQLite keeps any
 * value in any column): what cannot be read is null and `corrupt` says why, so one damaged row
 * costs that checkpoint alone, never a listing.
 */
export function checkpointFromRow(r: CheckpointRow): CheckpointRecord {
  const problems: string[] = [];
  const json = (v: unknown, col: string): unknown => {
    try {
      return JSON.parse(String(v));
    } catch {
      problems.push(`${col} is not JSON`);
      return null;
    }
  };
  const digest = (v: unknown, col: string): string | null => {
    if (v === null || isDigestText(v)) return v;
    problems.push(`${col} is not a digest`);
    return null;
  };
  const int = (v: unknown, col: string, nullable = false): number | null => {
    if (nullable && v === null) return null;
    if (typeof v === 'number' && Number.isSafeInteger(v)) return v;
    problems.push(`${col} is not an integer`);
    return nullable ? null : 0;
  };
  const text = (v: unknown, col: string, nullable = false): string | null => {
    if ((nullable && v === null) || typeof v === 'string') return v as string | null;
    problems.push(`${col} is not text`);
    return null;
  };
  const rec: CheckpointRecord = {
    id: String(r.id),
    sandboxId: text(r.sandbox_id, 'sandbox_id') ?? '',
    parentId: text(r.parent_id, 'parent_id', true),
    kind: (['full', 'fs', 'process'] as const).includes(r.kind) ? r.kind : (problems.push('kind is unknown'), r.kind),
    turn: int(r.turn, 'turn', true),
    createdAtMs: int(r.created_at, 'created_at') ?? 0,
    logicalBytes: int(r.logical_bytes, 'logical_bytes') ?? 0,
    newBytes: int(r.new_bytes, 'new_bytes') ?? 0,
    fsManifest: digest(r.fs_manifest, 'fs_manifest'),
    processImage: digest(r.process_image, 'process_image'),
    processImageFrom: text(r.process_image_from, 'process_image_from', true),
    effects: json(r.effects, 'effects'),
    meta: json(r.meta, 'meta'),
    verifiedAtMs: int(r.verified_at ?? null, 'verified_at', true),
  };
  if (problems.length) rec.corrupt = problems.join('; ');
  return rec;
}
