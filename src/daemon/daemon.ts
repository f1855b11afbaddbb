/**
 * @module `crab daemon`: one process per host that owns all sandboxes and serves the HTTP API on a
 * unix socket (mode 0600), and optionally on TCP with a bearer token.
 */
import fs from 'node:fs';
import path from 'node:path';
import type { Server } from 'node:http';
import { createAdaptorServer } from '@hono/node-server';
import { CrabError, invalid } from '../core/errors.js';
import { secureStateDir } from '../core/state-perms.js';
import { hostPathVerdict, type HostPathPolicy } from '../sandbox/bind-policy.js';
import type { CrabPaths } from '../core/paths.js';
import type { Logger } from '../core/log.js';
import { createApp } from '../api/app.js';
import { HttpService } from '../api/http-service.js';
import { CrabHost, type HostOptions } from './host.js';

/** How often the daemon looks for sandboxes and scratch left by dead Crab processes. */
export const CRASH_RECOVERY_INTERVAL_MS = 5_000;

export interface DaemonOptions {
  paths: CrabPaths;
  log: Logger;
  tcp?: { host: string; port: number; token: string };
  /**
   * Directories under which API clients may name host paths (bind sources, image archives).
   * Empty: the unix socket (host root) may name any but CRAB_HOME, `/` and the kernel trees; TCP
   * clients none.
   */
  bindAllow?: string[];
  host?: Omit<HostOptions, 'paths' | 'log'>;
}

/** The host-path policies of the two listeners, from `--bind-allow` (each dir must exist). */
export function listenerPolicies(home: string, bindAllow: readonly string[] = []): { unix: HostPathPolicy; tcp: HostPathPolicy } {
  const allow = bindAllow.map((d) => {
    let real: string;
    try {
      real = fs.realpathSync(d);
    } catch {
      throw invalid('CLI_BAD_BIND_ALLOW', `--bind-allow ${d}: no such directory`, 'Create it first, or drop the flag.');
    }
    if (!fs.statSync(real).isDirectory()) throw invalid('CLI_BAD_BIND_ALLOW', `--bind-allow ${d}: not a directory`);
    const why = hostPathVerdict(real, { allow: null, home: fs.realpathSync(home) });
    if (why) throw invalid('CLI_BAD_BIND_ALLOW', `--bind-allow ${d} is not allowed: ${why}`, 'Allow a directory that holds only what sandboxes may see.');
    return real;
  });
  return { unix: { allow: allow.length ? allow : null, home }, tcp: { allow, home } };
}

export interface RunningDaemon {
  host: CrabHost;
  servers: Server[];
  close(): Promise<void>;
}

export async function startDaemon(opts: DaemonOptions): Promise<RunningDaemon> {
  const { paths, log } = opts;
  // Installs made before CRAB_HOME was private are fixed here (setup does it too).
  const fixed = secureStateDir(paths.home);
  if (fixed.length) log.warn({ fixed: fixed.map((f) => `${f.path} ${f.from.toString(8)}→${f.to.toString(8)}`) }, 'made CRAB_HOME private');
  const policies = listenerPolicies(paths.home, opts.bindAllow);
  fs.mkdirSync(path.dirname(paths.socket), { recursive: true, mode: 0o700 });
  if (fs.existsSync(paths.socket)) {
    if (await new HttpService({ socketPath: paths.socket }).ping()) {
      throw new CrabError('DAEMON_RUNNING', 'conflict', `a crab daemon already listens on ${paths.socket}`, 'Stop it first, or set CRAB_HOME/CRAB_SOCKET for a second one.');
    }
    fs.rmSync(paths.socket); // stale socket of a daemon that died
  }
  const host = await CrabHost.start({ paths, log, ...opts.host });
  const service = host.service;
  // What a process killed mid-checkpoint left (a frozen sandbox, scratch, store temp files): now,
  // and every few seconds, since a CLI process of this host may die while the daemon runs.
  await host.checkpointer.recoverAfterCrash();
  const recovery = setInterval(() => {
    host.checkpointer.recoverAfterCrash().catch((err: unknown) => log.warn({ err }, 'crash recovery pass failed'));
  }, CRASH_RECOVERY_INTERVAL_MS);
  recovery.unref();
  const servers: Server[] = [];

  const unixServer = createAdaptorServer({ fetch: createApp(service, { log, host, hostPaths: policies.unix }).fetch }) as Server;
  await new Promise<void>((resolve, reject) => {
    unixServer.once('error', reject);
    const oldUmask = process.umask(0o177); // the socket is created 0600: only root may drive sandboxes
    unixServer.listen(paths.socket, () => {
      process.umask(oldUmask);
      resolve();
    });
  });
  fs.chmodSync(paths.socket, 0o600);
  servers.push(unixServer);

  if (opts.tcp) {
    const tcpServer = createAdaptorServer({ fetch: createApp(service, { log, host, token: opts.tcp.token, hostPaths: policies.tcp }).fetch }) as Server;
    await new Promise<void>((resolve, reject) => {
      tcpServer.once('error', reject);
      tcpServer.listen(opts.tcp!.port, opts.tcp!.host, () => resolve());
    });
    servers.push(tcpServer);
  }
  log.info({ socket: paths.socket, tcp: opts.tcp ? `${opts.tcp.host}:${opts.tcp.port}` : null, bindAllow: policies.tcp.allow }, 'daemon listening');

  return {
    host,
    servers,
    async close() {
      clearInterval(recovery);
      await host.close();
      await Promise.all(servers.map((s) => new Promise<void>((r) => s.close(() => r()))));
      fs.rmSync(paths.socket, { force: true });
    },
  };
}
