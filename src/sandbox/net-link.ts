/**
 * @module A sandbox's link to the host's LLM proxy: a veth pair between the host and a network
 * namespace Crab owns (bind-mounted at /run/netns/crab-…), so an agent running inside the
 * sandbox can reach the proxy and be told apart by its source address.
 *
 * Addressing (unnumbered point-to-point, one well-known gateway for every sandbox):
 * - the host holds LINK_GATEWAY (10.213.0.1/32) on `crab0`, a bridge with no ports (this kernel has no dummy driver); the proxy listens
 *   there, so every in-sandbox agent uses the same base URL, forks included;
 * - each sandbox's `eth0` gets its own 10.213.x.y/32 and a route to the gateway; the host routes
 *   that /32 into the sandbox's veth. No default route: the link reaches the proxy and nothing else.
 *
 * The namespace is created by Crab, not runc, so it is external to CRIU: checkpoints leave it
 * alone, a restore re-enters it (same address), and after a host restart `ensureLink` rebuilds it.
 * Addresses are leased with O_EXCL files in one host-wide directory (`LINK_LEASE_DIR`, atomic
 * across processes): addresses and routes belong to the host, so two daemons with different
 * CRAB_HOMEs must not hand out the same one. Each lease records the CRAB_HOME (its scope) that
 * owns it, and a daemon sees and collects only its own scope's leases.
 */
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { CrabError } from '../core/errors.js';
import { run } from '../core/run.js';

export const LINK_GATEWAY = '10.213.0.1';
export const LINK_GATEWAY_IF = 'crab0';
/** Sandbox addresses: 10.213.0.2 … 10.213.255.254. */
const FIRST_INDEX = 2;
const LAST_INDEX = 256 * 256 - 2;

export interface SandboxLink {
  /** The sandbox's address on the link (what the proxy sees as the source address). */
  address: string;
  /** Network namespace name (`ip netns`), bind-mounted at /run/netns/NAME. */
  netns: string;
  /** Host end of the veth pair. */
  hostIf: string;
}

/** Pure: the names of a sandbox's link devices (IFNAMSIZ: at most 15 characters). */
export function linkNames(sandboxId: string): { netns: string; hostIf: string } {
  const h = createHash('sha256').update(sandboxId).digest('hex').slice(0, 10);
  return { netns: `crab-${h}`, hostIf: `crab-${h}` };
}

/** Pure: the index-th sandbox address of the link network. */
export function linkAddress(index: number): string {
  if (!Number.isInteger(index) || index < FIRST_INDEX || index > LAST_INDEX) throw new RangeError(`link address index out of range: ${index}`);
  return `10.213.${index >> 8}.${index & 255}`;
}

export function netnsPath(link: Pick<SandboxLink, 'netns'>): string {
  return `/run/netns/${link.netns}`;
}

const ip = (args: string[]) => run('ip', args, { errorCode: 'SANDBOX_LINK_FAILED' });

/** Host-wide directory of link address leases (CRAB_LINK_LEASE_DIR overrides it, e.g. for unit tests). */
export const LINK_LEASE_DIR = process.env.CRAB_LINK_LEASE_DIR ?? '/var/lib/crab-links';

/** Leases a free address for a sandbox of `scope` (its CRAB_HOME; atomic: an O_EXCL file per address). */
export function leaseLink(leaseDir: string, sandboxId: string, scope = ''): SandboxLink {
  fs.mkdirSync(leaseDir, { recursive: true, mode: 0o700 });
  for (let i = FIRST_INDEX; i <= LAST_INDEX; i++) {
    const address = linkAddress(i);
    try {
      fs.writeFileSync(path.join(leaseDir, address), `${sandboxId}\n${scope}`, { flag: 'wx', mode: 0o600 });
      return { address, ...linkNames(sandboxId) };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
  }
  throw new CrabError('SANDBOX_LINK_EXHAUSTED', 'unavailable', 'no free link address left in 10.213.0.0/16', 'Remove sandboxes created with --link that are no longer needed.');
}

/** The sandbox of `scope` holding a link address, from the leases (null when none, or another scope's). */
export function leaseOwner(leaseDir: string, address: string, scope = ''): string | null {
  let text: string;
  try {
    text = fs.readFileSync(path.join(leaseDir, address), 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw err;
  }
  const nl = text.indexOf('\n');
  const [id, owner] = nl < 0 ? [text, ''] : [text.slice(0, nl), text.slice(nl + 1)];
  return owner === scope ? id : null;
}

/** The leases of `scope`: address → sandbox id. */
export function leases(leaseDir: string, scope = ''): Map<string, string> {
  const out = new Map<string, string>();
  for (const a of fs.existsSync(leaseDir) ? fs.readdirSync(leaseDir) : []) {
    const owner = leaseOwner(leaseDir, a, scope);
    if (owner !== null) out.set(a, owner);
  }
  return out;
}

async function hasGatewayAddress(): Promise<boolean> {
  const r = await run('ip', ['-o', '-4', 'addr', 'show', 'dev', LINK_GATEWAY_IF], { errorCode: 'SANDBOX_LINK_FAILED' });
  return r.stdout.includes(` ${LINK_GATEWAY}/32`);
}

/** The host side of every link: LINK_GATEWAY on a portless bridge. Idempotent. */
export async function ensureGateway(): Promise<void> {
  if (!fs.existsSync(`/sys/class/net/${LINK_GATEWAY_IF}`)) {
    await ip(['link', 'add', LINK_GATEWAY_IF, 'type', 'bridge']).catch((err: unknown) => {
      if (!fs.existsSync(`/sys/class/net/${LINK_GATEWAY_IF}`)) throw err; // another process made it first
    });
  }
  if (!(await hasGatewayAddress())) {
    await ip(['addr', 'add', `${LINK_GATEWAY}/32`, 'dev', LINK_GATEWAY_IF]).catch(async (err: unknown) => {
      if (!(await hasGatewayAddress())) throw err; // another process added it first
    });
  }
  await ip(['link', 'set', LINK_GATEWAY_IF, 'up']);
}

/**
 * Makes the sandbox's namespace, veth pair, addresses and routes exist (after a host restart
 * /run/netns is empty). Idempotent; a half-made link is torn down and built again.
 */
export async function ensureLink(link: SandboxLink): Promise<void> {
  await ensureGateway();
  const nsFile = netnsPath(link);
  if (fs.existsSync(nsFile) && fs.existsSync(`/sys/class/net/${link.hostIf}`)) return;
  await removeLinkDevices(link);
  await ip(['netns', 'add', link.netns]);
  try {
    await ip(['link', 'add', link.hostIf, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', link.netns]);
    await ip(['link', 'set', link.hostIf, 'up']);
    await ip(['route', 'replace', `${link.address}/32`, 'dev', link.hostIf, 'src', LINK_GATEWAY]);
    const inNs = (args: string[]) => ip(['-n', link.netns, ...args]);
    await inNs(['link', 'set', 'lo', 'up']);
    await inNs(['addr', 'add', `${link.address}/32`, 'dev', 'eth0']);
    await inNs(['link', 'set', 'eth0', 'up']);
    await inNs(['route', 'add', `${LINK_GATEWAY}/32`, 'dev', 'eth0', 'scope', 'link', 'src', link.address]);
  } catch (err) {
    await removeLinkDevices(link).catch(() => undefined); // the original error says what failed
    throw err;
  }
}

/**
 * Aborts the sandbox's TCP connections to the gateway. After a restore they are stale (the proxy's
 * ends died with the old run): an agent blocked on one would wait for a reply that never comes;
 * aborted, it sees ECONNABORTED at once and retries.
 */
export async function abortGatewayConnections(link: SandboxLink): Promise<void> {
  await ip(['netns', 'exec', link.netns, 'ss', '-K', 'dst', LINK_GATEWAY]);
}

/** Deletes the namespace (which takes the veth pair and the host route with it). Idempotent. */
export async function removeLinkDevices(link: Pick<SandboxLink, 'netns' | 'hostIf'>): Promise<void> {
  if (fs.existsSync(netnsPath(link))) await ip(['netns', 'del', link.netns]);
  if (fs.existsSync(`/sys/class/net/${link.hostIf}`)) {
    // Deleting the namespace takes the veth with it, asynchronously: it may vanish under us.
    await ip(['link', 'del', link.hostIf]).catch((err: unknown) => {
      if (fs.existsSync(`/sys/class/net/${link.hostIf}`)) throw err;
    });
  }
}

/** Removes the devices and the address lease. */
export async function releaseLink(leaseDir: string, link: SandboxLink): Promise<void> {
  await removeLinkDevices(link);
  fs.rmSync(path.join(leaseDir, link.address), { force: true });
}
