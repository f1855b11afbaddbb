import test from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { leaseLink, leaseOwner, leases, linkAddress, linkNames } from '../../../src/sandbox/net-link.js';

test('linkAddress: 10.213.x.y from an index, gateway and broadcast-like ends excluded', () => {
  assert.equal(linkAddress(2), '10.213.0.2');
  assert.equal(linkAddress(256), '10.213.1.0');
  assert.equal(linkAddress(65534), '10.213.255.254');
  for (const bad of [0, 1, 65535, 1.5]) assert.throws(() => linkAddress(bad), RangeError);
});

test('linkNames: stable, distinct, within IFNAMSIZ', () => {
  const a = linkNames('sandbox-a');
  assert.deepEqual(a, linkNames('sandbox-a'));
  assert.notEqual(a.hostIf, linkNames('sandbox-b').hostIf);
  assert.ok(a.hostIf.length <= 15 && a.netns.length <= 15);
});

test('leaseLink: one address per sandbox, never twice; owners readable', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'crab-links-'));
  try {
    const a = leaseLink(dir, 'a');
    const b = leaseLink(dir, 'b');
    assert.equal(a.address, '10.213.0.2');
    assert.equal(b.address, '10.213.0.3');
    assert.equal(leaseOwner(dir, a.address), 'a');
    assert.equal(leaseOwner(dir, '10.213.9.9'), null);
    assert.deepEqual([...leases(dir)].sort(), [['10.213.0.2', 'a'], ['10.213.0.3', 'b']]);
    fs.rmSync(path.join(dir, a.address));
    assert.equal(leaseLink(dir, 'c').address, '10.213.0.2', 'a released address is reused');
    // another CRAB_HOME on the same host: never the same address, and it sees only its own leases
    const d = leaseLink(dir, 'd', '/var/lib/other');
    assert.equal(d.address, '10.213.0.4');
    assert.equal(leaseOwner(dir, d.address), null);
    assert.equal(leaseOwner(dir, d.address, '/var/lib/other'), 'd');
    assert.deepEqual([...leases(dir, '/var/lib/other')], [['10.213.0.4', 'd']]);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
