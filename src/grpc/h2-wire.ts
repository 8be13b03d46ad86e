// HTTP/2 wire constants and frame builders (RFC 9113 §6, §7, §11; RFC 7541 §6.2.2), shared by our
// own server (lean-server.ts) and client (client-connection.ts).

import { encodeHpackInt } from './hpack.js';

export const PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1');
export const FRAME_HEADER = 9;

export const TYPE_DATA = 0x0;
export const TYPE_HEADERS = 0x1;
export const TYPE_PRIORITY = 0x2;
export const TYPE_RST_STREAM = 0x3;
export const TYPE_SETTINGS = 0x4;
export const TYPE_PUSH_PROMISE = 0x5;
export const TYPE_PING = 0x6;
export const TYPE_GOAWAY = 0x7;
export const TYPE_WINDOW_UPDATE = 0x8;
export const TYPE_CONTINUATION = 0x9;

export const FLAG_END_STREAM = 0x1;
export const FLAG_ACK = 0x1;
export const FLAG_END_HEADERS = 0x4;
export const FLAG_PADDED = 0x8;
export const FLAG_PRIORITY = 0x20;

export const SETTINGS_HEADER_TABLE_SIZE = 0x1;
export const SETTINGS_ENABLE_PUSH = 0x2;
export const SETTINGS_MAX_CONCURRENT_STREAMS = 0x3;
export const SETTINGS_INITIAL_WINDOW_SIZE = 0x4;
export const SETTINGS_MAX_FRAME_SIZE = 0x5;
export const SETTINGS_MAX_HEADER_LIST_SIZE = 0x6;

export const NO_ERROR = 0x0;
export const PROTOCOL_ERROR = 0x1;
export const INTERNAL_ERROR = 0x2;
export const FLOW_CONTROL_ERROR = 0x3;
export const STREAM_CLOSED = 0x5;
export const FRAME_SIZE_ERROR = 0x6;
export const REFUSED_STREAM = 0x7;
export const CANCEL = 0x8;
export const COMPRESSION_ERROR = 0x9;
export const ENHANCE_YOUR_CALM = 0xb;

export const DEFAULT_WINDOW = 65_535;
export const MAX_WINDOW = 0x7fff_ffff;
export const MIN_MAX_FRAME_SIZE = 16_384;
export const MAX_MAX_FRAME_SIZE = 16_777_215;

export function writeFrameHeader(out: Buffer, at: number, length: number, type: number, flags: number, id: number): void {
  out[at] = length >>> 16;
  out[at + 1] = (length >>> 8) & 0xff;
  out[at + 2] = length & 0xff;
  out[at + 3] = type;
  out[at + 4] = flags;
  out.writeUInt32BE(id, at + 5);
}

export function controlFrame(type: number, flags: number, id: number, payload: Buffer): Buffer {
  const out = Buffer.allocUnsafe(FRAME_HEADER + payload.length);
  writeFrameHeader(out, 0, payload.length, type, flags, id);
  payload.copy(out, FRAME_HEADER);
  return out;
}

export function u32Frame(type: number, id: number, value: number): Buffer {
  const out = Buffer.allocUnsafe(FRAME_HEADER + 4);
  writeFrameHeader(out, 0, 4, type, 0, id);
  out.writeUInt32BE(value, FRAME_HEADER);
  return out;
}

/** GOAWAY with the last stream id we processed (or opened) and an error code, no debug data. */
export function goawayFrame(lastStreamId: number, code: number): Buffer {
  const out = Buffer.allocUnsafe(FRAME_HEADER + 8);
  writeFrameHeader(out, 0, 8, TYPE_GOAWAY, 0, 0);
  out.writeUInt32BE(lastStreamId, FRAME_HEADER);
  out.writeUInt32BE(code, FRAME_HEADER + 4);
  return out;
}

/** An HPACK literal header field without indexing, new name, no Huffman (RFC 7541 §6.2.2). */
export function literalField(name: string, value: string): Buffer {
  return Buffer.concat([
    Buffer.from([0x00]),
    Buffer.from(encodeHpackInt(name.length, 7, 0)),
    Buffer.from(name, 'latin1'),
    Buffer.from(encodeHpackInt(Buffer.byteLength(value, 'latin1'), 7, 0)),
    Buffer.from(value, 'latin1'),
  ]);
}

/** An HPACK literal without indexing whose name is static table entry `index` (RFC 7541 §6.2.2). */
export function literalIndexedName(index: number, value: string): Buffer {
  return Buffer.concat([
    Buffer.from(encodeHpackInt(index, 4, 0x00)),
    Buffer.from(encodeHpackInt(Buffer.byteLength(value, 'latin1'), 7, 0)),
    Buffer.from(value, 'latin1'),
  ]);
}
