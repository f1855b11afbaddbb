/** @module Where Crab keeps its state. Everything lives under CRAB_HOME (default /var/lib/crab). */
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export interface CrabPaths {
  home: string;
  images: string;
  sandboxes: string;
  store: string;
  catalog: string;
  run: string;
  socket: string;
  build: string;
  tmp: string;
}

export function crabPaths(home = process.env.CRAB_HOME ?? '/var/lib/crab'): CrabPaths {
  return {
    home,
    images: path.join(home, 'images'),
    sandboxes: path.join(home, 'sandboxes'),
    store: path.join(home, 'store'),
    catalog: path.join(home, 'catalog.db'),
    run: path.join(home, 'run'),
    socket: process.env.CRAB_SOCKET ?? path.join(home, 'run', 'crab.sock'),
    build: path.join(home, 'build'),
    tmp: path.join(home, 'tmp'),
  };
}

/** The repository root (holds native/ helpers, traces/ and scripts/). */
export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
