/**
 * @module Finds an in-sandbox agent: the process holding an established TCP connection to the
 * LLM proxy at a turn boundary (its request is in flight then). The turn controller leaves the
 * agent out of the process-change signal, as the paper's runtime does: its memory changes every
 * turn by design and is re-created by replaying turns; CRIU still dumps it with every process
 * checkpoint, so a recovered agent comes back with its own memory.
 */
import { readFile, readdir, readlink } from 'node:fs/promises';

export interface Endpoint {
  address: string;
  port: number;
}

/** Pure: hex of an IPv4 address as /proc/net/tcp prints it (host byte order, little-endian). */
export function procNetIpv4(address: string): string {
  const b = address.split('.').map(Number);
  if (b.length !== 4 || b.some((x) => !Number.isInteger(x) || x < 0 || x > 255)) throw new RangeError(`not an IPv4 address: ${address}`);
  return b
    .reverse()
    .map((x) => x.toString(16).padStart(2, '0'))
    .join('')
    .toUpperCase();
}

/**
 * Pure: inodes of ESTABLISHED sockets connected to `to`, from the text of /proc/PID/net/tcp or
 * tcp6 (IPv4-mapped IPv6 peers count too).
 */
export function establishedSocketInodes(table: string, to: Endpoint): number[] {
  const v4 = procNetIpv4(to.address);
  const port = to.port.toString(16).padStart(4, '0').toUpperCase();
  const peers = new Set([`${v4}:${port}`, `0000000000000000FFFF0000${v4}:${port}`]);
  const out: number[] = [];
  for (const line of table.split('\n').slice(1)) {
    const f = line.trim().split(/\s+/);
    if (f.length < 10) continue;
    if (peers.has(f[2]!.toUpperCase()) && f[3] === '01') out.push(Number(f[9]));
  }
  return out.filter((n) => n > 0);
}

/** Host PIDs, among `pids` (one network namespace), holding a connection to `to`. */
export async function processesConnectedTo(pids: readonly number[], to: Endpoint): Promise<number[]> {
  if (pids.length === 0) return [];
  const tables = await Promise.all(['tcp', 'tcp6'].map((t) => readFile(`/proc/${pids[0]}/net/${t}`, 'utf8').catch(() => '')));
  const inodes = new Set(tables.flatMap((t) => establishedSocketInodes(t, to)).map((n) => `socket:[${n}]`));
  if (inodes.size === 0) return [];
  const found: number[] = [];
  for (const pid of pids) {
    const fds = await readdir(`/proc/${pid}/fd`).catch(() => [] as string[]); // the process may have exited
    for (const fd of fds) {
      const target = await readlink(`/proc/${pid}/fd/${fd}`).catch(() => '');
      if (inodes.has(target)) {
        found.push(pid);
        break;
      }
    }
  }
  return found;
}
