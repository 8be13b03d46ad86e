// KMIP's TTLV encoding (KMIP Specification 1.x, section 9.1 "TTLV Encoding"): every item is
//   [tag 3][type 1][length u32be][value length, padded with zeros to a multiple of 8]
// Structures hold items; integers, enumerations and intervals are 4 bytes padded to 8; long
// integers, booleans and date-times 8; text and byte strings pad to 8. Pure: no I/O. The decoder is
// for bytes from a peer: it checks every length, padding and nesting depth, and never allocates
// more than the input.

import { FormatInvalidError } from '../../errors.js';

export const TTLV_TYPE = {
  structure: 0x01,
  integer: 0x02,
  longInteger: 0x03,
  bigInteger: 0x04,
  enumeration: 0x05,
  boolean: 0x06,
  textString: 0x07,
  byteString: 0x08,
  dateTime: 0x09,
  interval: 0x0a,
} as const;

export type TtlvType = keyof typeof TTLV_TYPE;

export type TtlvItem =
  | { readonly tag: number; readonly type: 'structure'; readonly value: readonly TtlvItem[] }
  | {
      readonly tag: number;
      readonly type: 'integer' | 'enumeration' | 'interval';
      readonly value: number;
    }
  | { readonly tag: number; readonly type: 'longInteger' | 'dateTime'; readonly value: bigint }
  | { readonly tag: number; readonly type: 'boolean'; readonly value: boolean }
  | { readonly tag: number; readonly type: 'textString'; readonly value: string }
  | { readonly tag: number; readonly type: 'byteString' | 'bigInteger'; readonly value: Buffer };

/** Nesting deeper than this is not a KMIP message we send or expect. */
export const TTLV_MAX_DEPTH = 16;
const HEADER_BYTES = 8;
const TYPE_NAME = new Map<number, TtlvType>(
  Object.entries(TTLV_TYPE).map(([k, v]) => [v, k as TtlvType]),
);

const padded = (n: number): number => Math.ceil(n / 8) * 8;

function header(tag: number, type: number, length: number): Buffer {
  if (!Number.isInteger(tag) || tag < 0 || tag > 0xffffff) throw new RangeError(`bad tag ${tag}`);
  const h = Buffer.alloc(HEADER_BYTES);
  h.writeUIntBE(tag, 0, 3);
  h[3] = type;
  h.writeUInt32BE(length, 4);
  return h;
}

/** Encodes one item (and its children) to TTLV bytes. */
export function encodeTtlv(item: TtlvItem): Buffer {
  const code = TTLV_TYPE[item.type];
  switch (item.type) {
    case 'structure': {
      const body = Buffer.concat(item.value.map(encodeTtlv));
      return Buffer.concat([header(item.tag, code, body.length), body]);
    }
    case 'integer':
    case 'enumeration':
    case 'interval': {
      const v = Buffer.alloc(8);
      if (item.type === 'integer') v.writeInt32BE(item.value, 0);
      else v.writeUInt32BE(item.value, 0);
      return Buffer.concat([header(item.tag, code, 4), v]);
    }
    case 'longInteger':
    case 'dateTime': {
      const v = Buffer.alloc(8);
      v.writeBigInt64BE(item.value, 0);
      return Buffer.concat([header(item.tag, code, 8), v]);
    }
    case 'boolean': {
      const v = Buffer.alloc(8);
      v[7] = item.value ? 1 : 0;
      return Buffer.concat([header(item.tag, code, 8), v]);
    }
    case 'textString':
    case 'byteString':
    case 'bigInteger': {
      const raw = item.type === 'textString' ? Buffer.from(item.value, 'utf8') : item.value;
      if (item.type === 'bigInteger' && raw.length % 8 !== 0) {
        throw new RangeError('a Big Integer is encoded in a multiple of 8 bytes');
      }
      const v = Buffer.alloc(padded(raw.length));
      raw.copy(v);
      return Buffer.concat([header(item.tag, code, raw.length), v]);
    }
  }
}

function malformed(message: string): FormatInvalidError {
  return new FormatInvalidError('ERR_FORMAT_MALFORMED', `KMIP message: ${message}`);
}

function decodeAt(buf: Buffer, offset: number, depth: number): [TtlvItem, number] {
  if (depth > TTLV_MAX_DEPTH) throw malformed(`nested deeper than ${TTLV_MAX_DEPTH}`);
  if (buf.length - offset < HEADER_BYTES) throw malformed('truncated item header');
  const tag = buf.readUIntBE(offset, 3);
  const code = buf[offset + 3]!;
  const length = buf.readUInt32BE(offset + 4);
  const type = TYPE_NAME.get(code);
  if (type === undefined) throw malformed(`unknown item type 0x${code.toString(16)}`);
  const start = offset + HEADER_BYTES;
  const size = type === 'structure' ? length : padded(length);
  if (length > buf.length - start || size > buf.length - start)
    throw malformed(`item 0x${tag.toString(16)} runs past the end`);
  const end = start + size;
  const fixed = (n: number): void => {
    if (length !== n) throw malformed(`item 0x${tag.toString(16)} has length ${length}, not ${n}`);
  };
  const zeroPad = (from: number): void => {
    for (let i = from; i < end; i++) {
      if (buf[i] !== 0) throw malformed(`item 0x${tag.toString(16)} has non-zero padding`);
    }
  };
  switch (type) {
    case 'structure': {
      if (length % 8 !== 0) throw malformed(`structure 0x${tag.toString(16)} is not 8-aligned`);
      const items: TtlvItem[] = [];
      let at = start;
      while (at < end) {
        const [child, next] = decodeAt(buf.subarray(0, end), at, depth + 1);
        items.push(child);
        at = next;
      }
      return [{ tag, type, value: items }, end];
    }
    case 'integer':
    case 'enumeration':
    case 'interval': {
      fixed(4);
      zeroPad(start + 4);
      const value = type === 'integer' ? buf.readInt32BE(start) : buf.readUInt32BE(start);
      return [{ tag, type, value }, end];
    }
    case 'longInteger':
    case 'dateTime':
      fixed(8);
      return [{ tag, type, value: buf.readBigInt64BE(start) }, end];
    case 'boolean': {
      fixed(8);
      const v = buf.readBigUInt64BE(start);
      if (v > 1n) throw malformed(`boolean 0x${tag.toString(16)} is neither 0 nor 1`);
      return [{ tag, type, value: v === 1n }, end];
    }
    case 'textString': {
      zeroPad(start + length);
      let value: string;
      try {
        value = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true }).decode(
          buf.subarray(start, start + length),
        );
      } catch {
        throw malformed(`text 0x${tag.toString(16)} is not UTF-8`);
      }
      return [{ tag, type, value }, end];
    }
    case 'byteString':
    case 'bigInteger': {
      if (type === 'bigInteger' && length % 8 !== 0) throw malformed('big integer not 8-aligned');
      zeroPad(start + length);
      return [{ tag, type, value: Buffer.from(buf.subarray(start, start + length)) }, end];
    }
  }
}

/** Decodes exactly one item filling `buf`; FormatInvalidError for anything else. */
export function decodeTtlv(buf: Buffer): TtlvItem {
  const [item, end] = decodeAt(buf, 0, 0);
  if (end !== buf.length) throw malformed(`${buf.length - end} bytes after the message`);
  return item;
}

/** The length a message announces in its first 8 bytes (for framing a stream), header included. */
export function ttlvMessageLength(first8: Buffer): number {
  if (first8.length < HEADER_BYTES) throw new RangeError('need 8 bytes');
  if (first8[3] !== TTLV_TYPE.structure) throw malformed('a message must be a structure');
  return HEADER_BYTES + first8.readUInt32BE(4);
}

// Small builders and readers, so message code reads like the specification's tables.
export const ttlv = {
  struct: (tag: number, value: readonly (TtlvItem | undefined)[]): TtlvItem => ({
    tag,
    type: 'structure',
    value: value.filter((v): v is TtlvItem => v !== undefined),
  }),
  int: (tag: number, value: number): TtlvItem => ({ tag, type: 'integer', value }),
  enumeration: (tag: number, value: number): TtlvItem => ({ tag, type: 'enumeration', value }),
  text: (tag: number, value: string): TtlvItem => ({ tag, type: 'textString', value }),
  bytes: (tag: number, value: Buffer): TtlvItem => ({ tag, type: 'byteString', value }),
  bool: (tag: number, value: boolean): TtlvItem => ({ tag, type: 'boolean', value }),
};

export function children(item: TtlvItem): readonly TtlvItem[] {
  return item.type === 'structure' ? item.value : [];
}

export function child(item: TtlvItem, tag: number): TtlvItem | undefined {
  return children(item).find((c) => c.tag === tag);
}
