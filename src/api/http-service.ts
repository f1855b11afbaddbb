/** @module CrabService over the daemon's HTTP API (unix socket by default, or TCP with a token). */
import http from 'node:http';
import { CrabError, type ErrorKind } from '../core/errors.js';
import type { ImageInfo } from '../image/image-store.js';
import type { ExecResult } from '../sandbox/channel.js';
import type { CreateSandboxOptions, ExecOptions, SandboxInfo } from '../sandbox/sandbox.js';
import type { GcReport } from '../sandbox/sandbox-manager.js';
import type { CrabService, StoreGcResult } from './service.js';
import type { CheckpointKind, CheckpointRecord, RestoreResult, TakeResult } from '../checkpoint/checkpoint.js';
import type { CorruptChunk, StoreStats } from '../store/content-store.js';

export type Endpoint = { socketPath: string } | { url: string; token?: string };

export class HttpService implements CrabService {
  constructor(private readonly endpoint: Endpoint) {}

  /** A request whose successful answer is text, not JSON (e.g. a recorded trace). */
  async requestText(method: string, path: string): Promise<string> {
    return this.request<string>(method, path, undefined, 0, true);
  }

  request<T>(method: string, path: string, body?: unknown, timeoutMs = 0, rawText = false): Promise<T> {
    const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
    const headers: Record<string, string> = { 'content-type': 'application/json' };
    if (payload) headers['content-length'] = String(payload.length);
    let target: http.RequestOptions;
    if ('socketPath' in this.endpoint) {
      target = { socketPath: this.endpoint.socketPath, path, method, headers };
    } else {
      const u = new URL(path, this.endpoint.url);
      if (this.endpoint.token) headers.authorization = `Bearer ${this.endpoint.token}`;
      target = { hostname: u.hostname, port: u.port, path: u.pathname + u.search, method, headers };
    }
    return new Promise<T>((resolve, reject) => {
      const req = http.request(target, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (b: Buffer) => chunks.push(b));
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString();
          if (rawText && (res.statusCode ?? 500) < 400) return resolve(text as T);
          let json: unknown;
          try {
            json = text ? JSON.parse(text) : null;
          } catch {
            return reject(new CrabError('API_BAD_RESPONSE', 'internal', `daemon sent non-JSON (${res.statusCode}): ${text.slice(0, 200)}`));
          }
          if ((res.statusCode ?? 500) >= 400) {
            const e = (json as { error?: { code: string; kind: ErrorKind; message: string; hint?: string; details?: Record<string, unknown> } })?.error;
            return reject(new CrabError(e?.code ?? 'API_ERROR', e?.kind ?? 'internal', e?.message ?? `HTTP ${res.statusCode}`, e?.hint, e?.details ?? {}));
          }
          resolve(json as T);
        });
      });
      if (timeoutMs) req.setTimeout(timeoutMs, () => req.destroy(new Error(`no answer from the daemon in ${timeoutMs} ms`)));
      req.on('error', (err) =>
        reject(new CrabError('DAEMON_UNREACHABLE', 'unavailable', `cannot reach the crab daemon: ${err.message}`, "Start it with 'crab daemon' or unset CRAB_SOCKET.", {}, { cause: err })),
      );
      req.end(payload);
    });
  }

  /** True when a daemon answers on this endpoint. */
  async ping(): Promise<boolean> {
    try {
      await this.request('GET', '/v1/health', undefined, 1000);
      return true;
    } catch {
      return false; // nothing listening: the CLI then works without a daemon
    }
  }

  listImages() {
    return this.request<ImageInfo[]>('GET', '/v1/images');
  }
  buildImage(base: string, packages: string[]) {
    return this.request<ImageInfo>('POST', '/v1/images', { base, packages });
  }
  importImage(name: string, archivePath: string) {
    return this.request<ImageInfo>('POST', '/v1/images/import', { name, archivePath });
  }
  createSandbox(opts: CreateSandboxOptions) {
    return this.request<SandboxInfo>('POST', '/v1/sandboxes', opts);
  }
  listSandboxes() {
    return this.request<SandboxInfo[]>('GET', '/v1/sandboxes');
  }
  getSandbox(id: string) {
    return this.request<SandboxInfo>('GET', `/v1/sandboxes/${encodeURIComponent(id)}`);
  }
  exec(id: string, cmd: string, opts: ExecOptions) {
    return this.request<ExecResult>('POST', `/v1/sandboxes/${encodeURIComponent(id)}/exec`, { cmd, ...opts });
  }
  async stopSandbox(id: string) {
    await this.request('POST', `/v1/sandboxes/${encodeURIComponent(id)}/stop`);
  }
  async removeSandbox(id: string) {
    await this.request('DELETE', `/v1/sandboxes/${encodeURIComponent(id)}`);
  }
  gc() {
    return this.request<GcReport>('POST', '/v1/gc');
  }

  checkpoint(id: string, opts: { kind: CheckpointKind; turn?: number | null; hintPaths?: string[] }) {
    return this.request<TakeResult>('POST', `/v1/sandboxes/${encodeURIComponent(id)}/checkpoints`, opts);
  }
  listCheckpoints(id: string) {
    return this.request<CheckpointRecord[]>('GET', `/v1/sandboxes/${encodeURIComponent(id)}/checkpoints`);
  }
  restore(checkpointId: string, opts: { as?: string; force?: boolean }) {
    return this.request<RestoreResult>('POST', `/v1/checkpoints/${encodeURIComponent(checkpointId)}/restore`, opts);
  }
  rollback(id: string, checkpointId: string, opts: { force?: boolean }) {
    return this.request<RestoreResult>('POST', `/v1/sandboxes/${encodeURIComponent(id)}/rollback`, { checkpoint: checkpointId, ...opts });
  }
  fork(checkpointId: string, count: number) {
    return this.request<RestoreResult[]>('POST', `/v1/checkpoints/${encodeURIComponent(checkpointId)}/fork`, { count });
  }
  storeStats() {
    return this.request<StoreStats & { checkpoints: number }>('GET', '/v1/store/stats');
  }
  storeVerify() {
    return this.request<CorruptChunk[]>('POST', '/v1/store/verify');
  }
  storeGc() {
    return this.request<StoreGcResult>('POST', '/v1/store/gc');
  }
}
