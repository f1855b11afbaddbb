/**
 * @module `crab daemon`: one process per host that owns all sandboxes and serves the HTTP API on a
 * unix socket (mode 0600), and optionally on TCP with a bearer token.
 */
import fs from 'node:fs';
import path from 'node:path';
import type { Server } from 'node:http';
import { createAdaptorServer } from '@hono/node-server';
import { CrabError } from '../core/errors.js';
import type { CrabPaths } from '../core/paths.js';
import type { Logger } from '../core/log.js';
import { createApp } from '../api/app.js';
import { HttpService } from '../api/http-service.js';
import { CrabHost, type HostOptions } from './host.js';

export interface DaemonOptions {
  paths: CrabPaths;
  log: Logger;
  tcp?: { host: string; port: number; token: string };
  host?: Omit<HostOptions, 'paths' | 'log'>;
}

export interface RunningDaemon {
  host: CrabHost;
  servers: Server[];
  close(): Promise<void>;
}

export async function startDaemon(opts: DaemonOptions): Promise<RunningDaemon> {
  const { paths, log } = opts;
  fs.mkdirSync(path.dirname(paths.socket), { recursive: true, mode: 0o700 });
  if (fs.existsSync(paths.socket)) {
    if (await new HttpService({ socketPath: paths.socket }).ping()) {
      throw new CrabError('DAEMON_RUNNING', 'conflict', `a crab daemon already listens on ${paths.socket}`, 'Stop it first, or set CRAB_HOME/CRAB_SOCKET for a second one.');
    }
    fs.rmSync(paths.socket); // stale socket of a daemon that died
  }
  const host = await CrabHost.start({ paths, log, ...opts.host });
  const service = host.service;
  // This daemon owns every checkpoint on the host: a frozen sandbox now is a crashed daemon's leftover.
  const thawed = await host.checkpointer.recoverStaleFreezes();
  if (thawed.length) log.warn({ thawed }, 'thawed sandboxes left frozen by a crashed daemon');
  const servers: Server[] = [];

  const unixServer = createAdaptorServer({ fetch: createApp(service, { log, host }).fetch }) as Server;
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
    const tcpServer = createAdaptorServer({ fetch: createApp(service, { log, host, token: opts.tcp.token }).fetch }) as Server;
    await new Promise<void>((resolve, reject) => {
      tcpServer.once('error', reject);
      tcpServer.listen(opts.tcp!.port, opts.tcp!.host, () => resolve());
    });
    servers.push(tcpServer);
  }
  log.info({ socket: paths.socket, tcp: opts.tcp ? `${opts.tcp.host}:${opts.tcp.port}` : null }, 'daemon listening');

  return {
    host,
    servers,
    async close() {
      await host.close();
      await Promise.all(servers.map((s) => new Promise<void>((r) => s.close(() => r()))));
      fs.rmSync(paths.socket, { force: true });
    },
  };
}
