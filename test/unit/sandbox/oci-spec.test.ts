import test from 'node:test';
import assert from 'node:assert/strict';
import { buildOciSpec, parseSizeBytes } from '../../../src/sandbox/oci-spec.js';

test('parseSizeBytes', () => {
  const table: Array<[string, number | null]> = [
    ['512m', 512 * 1024 ** 2],
    ['1g', 1024 ** 3],
    ['1GiB', 1024 ** 3],
    ['65536k', 65536 * 1024],
    ['1048576', 1048576],
    ['1.5g', 1.5 * 1024 ** 3],
    ['lots', null],
    ['-1m', null],
  ];
  for (const [input, want] of table) assert.equal(parseSizeBytes(input), want, input);
});

test('OCI spec: namespaces, limits, no host stdio, init is bash', () => {
  const spec = buildOciSpec({ id: 'a', hostname: 'a', rootfsPath: '/x/rootfs', cgroupsPath: '/crab/a', memoryLimitBytes: 1234567, pidsLimit: 99 }) as {
    process: { terminal: boolean; args: string[] };
    linux: { namespaces: Array<{ type: string }>; resources: { memory: { limit: number }; pids: { limit: number } }; cgroupsPath: string; seccomp: unknown };
    root: { readonly: boolean };
  };
  assert.deepEqual(spec.linux.namespaces.map((n) => n.type).sort(), ['ipc', 'mount', 'network', 'pid', 'uts']);
  assert.equal(spec.linux.resources.memory.limit, 1234567);
  assert.equal(spec.linux.resources.pids.limit, 99);
  assert.equal(spec.linux.cgroupsPath, '/crab/a');
  assert.equal(spec.process.terminal, false);
  assert.equal(spec.process.args[0], '/bin/bash');
  assert.ok(spec.linux.seccomp);
  assert.equal(spec.root.readonly, false);
});
