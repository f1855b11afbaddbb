/**
 * @module The framing of CRIU's protobuf images: a u32 common magic, the image's magic, then
 * messages, each a u32 length and its bytes (CRIU 4.2 `criu/protobuf.c`).
 */
import protobuf from 'protobufjs';
import { CrabError } from '../core/errors.js';

export const IMG_COMMON_MAGIC = 0x54564319;

export function unreadable(name: string, why: string): CrabError {
  return new CrabError('CRIU_IMAGE_UNREADABLE', 'internal', `CRIU image ${name}: ${why}`, 'This CRIU version writes images Crab does not understand; dumps are stored without page deltas.', { name });
}

/** The messages of image `name`; throws CRIU_IMAGE_UNREADABLE on a bad magic or a truncated message. */
export function imageMessages(name: string, buf: Buffer, magic: number): Buffer[] {
  if (buf.length < 8 || buf.readUInt32LE(0) !== IMG_COMMON_MAGIC || buf.readUInt32LE(4) !== magic) throw unreadable(name, `not the image expected (bad magic)`);
  const out: Buffer[] = [];
  for (let off = 8; off < buf.length; ) {
    if (off + 4 > buf.length) throw unreadable(name, 'truncated entry length');
    const len = buf.readUInt32LE(off);
    if (off + 4 + len > buf.length) throw unreadable(name, 'truncated entry');
    out.push(buf.subarray(off + 4, off + 4 + len));
    off += 4 + len;
  }
  return out;
}

/** Decodes one message; throws CRIU_IMAGE_UNREADABLE when it does not fit `type`. */
export function decodeMessage(name: string, type: protobuf.Type, msg: Buffer): Record<string, unknown> {
  try {
    return type.toObject(type.decode(msg), { longs: Number });
  } catch (err) {
    throw unreadable(name, `bad ${type.name}: ${(err as Error).message}`);
  }
}
