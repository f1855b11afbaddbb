import test from 'node:test';
import assert from 'node:assert/strict';
import { classifyTrace, HEAVY_LAYER_BYTES, HEAVY_LAYER_ENTRIES, type TraceClassing } from '../../../src/bench/trace-class.js';

const SHELL = 'bash --noprofile --norc -O expand_aliases';
const files = (n: number, size = 10): Record<string, string> => Object.fromEntries(Array.from({ length: n }, (_, i) => [`w/f${i}`, `f 420 ${size} abc`]));

test('classifyTrace: heavy by background processes, bytes or entries of the writable layer; else shell', () => {
  const rows: Array<[string, Record<string, string>, string[], TraceClassing]> = [
    ['persistent shell, a few files', { w: 'd 493', ...files(20) }, [SHELL], { class: 'shell', why: null }],
    ['fresh shells: no process at the end', files(3), [], { class: 'shell', why: null }],
    ['a pid file and a whiteout count as entries, not bytes', { 'w/s.pid': 'f 420 pid-of python3 s.py', 'w/gone': 'o 8192 0' }, [SHELL], { class: 'shell', why: null }],
    ['a server still running', files(3), [SHELL, 'python3 -m http.server 8000'], { class: 'heavy', why: '1 background process (python3 -m http.server 8000)' }],
    ['two jobs', {}, ['sleep 100', 'sleep 200'], { class: 'heavy', why: '2 background processes (sleep 100)' }],
    ['just under the byte limit', { 'w/big': `f 420 ${HEAVY_LAYER_BYTES - 1} x` }, [SHELL], { class: 'shell', why: null }],
    ['a 64 MiB log', { 'w/big': `f 420 ${64 * 2 ** 20} x` }, [SHELL], { class: 'heavy', why: '64 MiB of files' }],
    ['many small files', files(HEAVY_LAYER_ENTRIES), [SHELL], { class: 'heavy', why: `${HEAVY_LAYER_ENTRIES} files` }],
    ['every reason at once', { ...files(HEAVY_LAYER_ENTRIES - 1), 'w/big': `f 420 ${HEAVY_LAYER_BYTES} x` }, [SHELL, 'worker'], { class: 'heavy', why: '1 background process (worker), 16 MiB of files, 1000 files' }],
  ];
  for (const [name, f, processes, want] of rows) assert.deepEqual(classifyTrace({ files: f, processes }, [SHELL]), want, name);
});
