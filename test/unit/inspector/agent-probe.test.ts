import test from 'node:test';
import assert from 'node:assert/strict';
import { establishedSocketInodes, procNetIpv4 } from '../../../src/inspector/agent-probe.js';

const HEADER = '  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n';
const row = (local: string, rem: string, st: string, inode: number) => `   0: ${local} ${rem} ${st} 00000000:00000000 00:00000000 00000000     0        0 ${inode} 1 0000000000000000 20 4 30 10 -1\n`;

test('procNetIpv4: little-endian hex as /proc/net/tcp prints it', () => {
  for (const [ip, hex] of [
    ['10.213.0.1', '0100D50A'],
    ['127.0.0.1', '0100007F'],
    ['0.0.0.0', '00000000'],
  ] as const) assert.equal(procNetIpv4(ip), hex);
  assert.throws(() => procNetIpv4('10.213.1'), RangeError);
  assert.throws(() => procNetIpv4('300.1.1.1'), RangeError);
});

test('establishedSocketInodes: only ESTABLISHED connections to the endpoint (v4 and v4-mapped v6)', () => {
  const to = { address: '10.213.0.1', port: 8080 };
  const v4 =
    HEADER +
    row('0200D50A:A000', '0100D50A:1F90', '01', 101) + // established to 10.213.0.1:8080
    row('0200D50A:A001', '0100D50A:1F90', '06', 102) + // TIME_WAIT
    row('0200D50A:A002', '0100D50A:1F91', '01', 103) + // other port
    row('0100007F:1F90', '00000000:0000', '0A', 104); // a listener
  assert.deepEqual(establishedSocketInodes(v4, to), [101]);
  const v6 = HEADER + row('0000000000000000FFFF00000200D50A:A003', '0000000000000000FFFF00000100D50A:1F90', '01', 105);
  assert.deepEqual(establishedSocketInodes(v6, to), [105]);
  assert.deepEqual(establishedSocketInodes('', to), []);
});
