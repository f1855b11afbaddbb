/** Integration tests need root (runc, CRIU, overlayfs, eBPF). They skip when not root, never in CI. */
import type { TestContext } from 'node:test';

export const isRoot = process.getuid?.() === 0;

/** Returns options for `test()`/`describe()`: skip unless root; in CI a missing root is a failure. */
export function rootOnly(): { skip?: string } {
  if (isRoot) return {};
  if (process.env.CI === 'true') throw new Error('integration tests must run as root in CI');
  return { skip: 'needs root' };
}

export function requireRoot(t: TestContext): boolean {
  if (isRoot) return true;
  if (process.env.CI === 'true') throw new Error('integration tests must run as root in CI');
  t.skip('needs root');
  return false;
}

/** A unique prefix for everything a test creates (sandboxes, cgroups, mounts), so cleanup can be exact. */
export function testPrefix(name: string): string {
  return `crabt-${name}-${process.pid.toString(36)}${Math.floor(Math.random() * 1e6).toString(36)}`;
}
