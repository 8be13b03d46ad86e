// A small proto3 codec driven by a field table: enough for the KMS messages and the kms v2
// EncryptedObject (string, bytes, map<string, bytes>, enum). Pure: no I/O.
//
// Decoding follows proto3: absent fields take their zero value, unknown fields are skipped, the last
// occurrence of a scalar wins, map entries may come in any order. Strings must be valid UTF-8 (grpc-go
// refuses invalid UTF-8 in string fields too). Anything else malformed raises ERR_PROTO_MALFORMED.

import { FormatInvalidError } from '../errors.js';

export type FieldKind = 'string' | 'bytes' | 'map<string,bytes>' | 'enum';

type ValueOf<K extends FieldKind> = K extends 'string'
  ? string
  : K extends 'bytes'
    ? Buffer
    : K extends 'map<string,bytes>'
      ? Record<string, Buffer>
      : number;

export interface FieldSpec<K extends FieldKind = FieldKind> {
  readonly no: number;
  readonly kind: K;
}

export type Schema = Record<string, FieldSpec>;

/** The decoded shape of a message: every field present, zero values for absent ones. */
export type MessageOf<S extends Schema> = { [F in keyof S]: ValueOf<S[F]['kind']> };

/** What encode() takes: every field optional, bytes may be any Uint8Array. */
export type MessageInit<S extends Schema> = {
  [F in keyof S]?: S[F]['kind'] extends 'bytes'
    ? Uint8Array
    : S[F]['kind'] extends 'map<string,bytes>'
      ? Readonly<Record<string, Uint8Array>>
      : ValueOf<S[F]['kind']>;
};

export interface MessageCodec<S extends Schema> {
  readonly name: string;
  encode(message: MessageInit<S>): Buffer;
  decode(data: Uint8Array): MessageOf<S>;
}

const WIRE_VARINT = 0;
const WIRE_I64 = 1;
const WIRE_LEN = 2;
const WIRE_I32 = 5;

const utf8 = new TextDecoder('utf-8', { fatal: true });

function malformed(message: string, cause?: unknown): FormatInvalidError {
  return new FormatInvalidError('ERR_PROTO_MALFORMED', message, { cause });
}

/** Bytes a varint of `value` (0..2^53) takes. */
function varintSize(value: number): number {
  let n = 1;
  let v = value;
  while (v > 0x7f) {
    n++;
    v = Math.floor(v / 128);
  }
  return n;
}

/** Writes `value` as a varint at `pos`; returns the position after it. */
function putVarint(out: Buffer, pos: number, value: number): number {
  let v = value;
  let p = pos;
  while (v > 0x7f) {
    out[p++] = (v & 0x7f) | 0x80;
    v = Math.floor(v / 128);
  }
  out[p++] = v;
  return p;
}

/** Size of a length-delimited field (tag, length, body) whose body is `len` bytes. */
function lenFieldSize(fieldNo: number, len: number): number {
  return varintSize((fieldNo << 3) | WIRE_LEN) + varintSize(len) + len;
}

/** Writes the tag and length of a length-delimited field; the body goes at the returned position. */
function putLenHeader(out: Buffer, pos: number, fieldNo: number, len: number): number {
  return putVarint(out, putVarint(out, pos, (fieldNo << 3) | WIRE_LEN), len);
}

/** Zero value of bytes fields: empty, so one instance serves every decoded message. */
const EMPTY = Buffer.alloc(0);

/** Reads one message's fields in order; a cursor over a byte range (also used by proto/etcd-rpc.ts). */
export class Reader {
  pos: number;
  private readonly end: number;
  private readonly buf: Uint8Array;

  constructor(buf: Uint8Array, start = 0, end = buf.length) {
    this.buf = buf;
    this.pos = start;
    this.end = end;
  }

  done(): boolean {
    return this.pos >= this.end;
  }

  varint(): number {
    let result = 0;
    let factor = 1;
    for (let i = 0; i < 10; i++) {
      if (this.pos >= this.end) throw malformed('truncated varint');
      const byte = this.buf[this.pos++]!;
      result += (byte & 0x7f) * factor;
      if ((byte & 0x80) === 0) {
        if (result > Number.MAX_SAFE_INTEGER) throw malformed('varint too large');
        return result;
      }
      factor *= 128;
    }
    throw malformed('varint longer than 10 bytes');
  }

  /** Skips a varint of any value (an unknown int64 field may exceed 2^53). */
  private skipVarint(): void {
    for (let i = 0; i < 10; i++) {
      if (this.pos >= this.end) throw malformed('truncated varint');
      if ((this.buf[this.pos++]! & 0x80) === 0) return;
    }
    throw malformed('varint longer than 10 bytes');
  }

  bytes(): Uint8Array {
    const len = this.varint();
    if (len > this.end - this.pos) throw malformed('length-delimited field runs past the end');
    const out = this.buf.subarray(this.pos, this.pos + len);
    this.pos += len;
    return out;
  }

  skip(wireType: number): void {
    switch (wireType) {
      case WIRE_VARINT:
        this.skipVarint();
        return;
      case WIRE_I64:
        this.advance(8);
        return;
      case WIRE_LEN:
        this.bytes();
        return;
      case WIRE_I32:
        this.advance(4);
        return;
      default:
        throw malformed(`unsupported wire type ${wireType}`);
    }
  }

  private advance(n: number): void {
    if (n > this.end - this.pos) throw malformed('fixed-width field runs past the end');
    this.pos += n;
  }
}

function decodeString(raw: Uint8Array, field: string): string {
  try {
    return utf8.decode(raw);
  } catch (cause) {
    throw malformed(`field ${field} is not valid UTF-8`, cause);
  }
}

function decodeMapEntry(raw: Uint8Array, field: string): [string, Buffer] {
  const r = new Reader(raw);
  let key = '';
  let value: Buffer = EMPTY;
  while (!r.done()) {
    const tag = r.varint();
    const no = Math.floor(tag / 8);
    const wire = tag & 7;
    if (no === 1 && wire === WIRE_LEN) key = decodeString(r.bytes(), `${field}.key`);
    else if (no === 2 && wire === WIRE_LEN) value = Buffer.from(r.bytes());
    else r.skip(wire);
  }
  return [key, value];
}

function zeroValue(kind: FieldKind): unknown {
  switch (kind) {
    case 'string':
      return '';
    case 'bytes':
      return EMPTY;
    case 'map<string,bytes>':
      return {};
    case 'enum':
      return 0;
  }
}

/** Builds the codec for one message from its field table. */
export function defineMessage<S extends Schema>(name: string, schema: S): MessageCodec<S> {
  const entries = Object.entries(schema).sort((a, b) => a[1].no - b[1].no);
  const byNumber = new Map<number, [string, FieldSpec]>(entries.map(([f, s]) => [s.no, [f, s]]));

  return {
    name,
    // Two passes over the fields: sizes first, then every byte written into one buffer (no
    // per-field buffers or arrays: this runs for every RPC).
    encode(message) {
      const msg = message as Record<string, unknown>;
      let size = 0;
      for (const [field, spec] of entries) {
        const value = msg[field];
        if (value === undefined) continue;
        switch (spec.kind) {
          case 'string': {
            const n = Buffer.byteLength(value as string, 'utf8');
            if (n > 0) size += lenFieldSize(spec.no, n);
            break;
          }
          case 'bytes': {
            const n = (value as Uint8Array).length;
            if (n > 0) size += lenFieldSize(spec.no, n);
            break;
          }
          case 'map<string,bytes>': {
            for (const [k, v] of Object.entries(value as Record<string, Uint8Array>)) {
              const entry = lenFieldSize(1, Buffer.byteLength(k, 'utf8')) + lenFieldSize(2, v.length);
              size += lenFieldSize(spec.no, entry);
            }
            break;
          }
          case 'enum': {
            const n = value as number;
            if (!Number.isInteger(n) || n < 0) throw new RangeError(`${name}.${field}: bad enum ${n}`);
            if (n !== 0) size += varintSize((spec.no << 3) | WIRE_VARINT) + varintSize(n);
            break;
          }
        }
      }
      const out = Buffer.allocUnsafe(size);
      let pos = 0;
      for (const [field, spec] of entries) {
        const value = msg[field];
        if (value === undefined) continue;
        switch (spec.kind) {
          case 'string': {
            const s = value as string;
            const n = Buffer.byteLength(s, 'utf8');
            if (n > 0) {
              pos = putLenHeader(out, pos, spec.no, n);
              pos += out.write(s, pos, n, 'utf8');
            }
            break;
          }
          case 'bytes': {
            const b = value as Uint8Array;
            if (b.length > 0) {
              pos = putLenHeader(out, pos, spec.no, b.length);
              out.set(b, pos);
              pos += b.length;
            }
            break;
          }
          case 'map<string,bytes>': {
            for (const [k, v] of Object.entries(value as Record<string, Uint8Array>)) {
              const kn = Buffer.byteLength(k, 'utf8');
              pos = putLenHeader(out, pos, spec.no, lenFieldSize(1, kn) + lenFieldSize(2, v.length));
              pos = putLenHeader(out, pos, 1, kn);
              pos += out.write(k, pos, kn, 'utf8');
              pos = putLenHeader(out, pos, 2, v.length);
              out.set(v, pos);
              pos += v.length;
            }
            break;
          }
          case 'enum': {
            const n = value as number;
            if (n !== 0) pos = putVarint(out, putVarint(out, pos, (spec.no << 3) | WIRE_VARINT), n);
            break;
          }
        }
      }
      if (pos !== size) throw new Error(`${name}: encoded ${pos} bytes, expected ${size}`);
      return out;
    },

    decode(data) {
      const out: Record<string, unknown> = {};
      for (const [field, spec] of entries) out[field] = zeroValue(spec.kind);
      const r = new Reader(data);
      while (!r.done()) {
        const tag = r.varint();
        const no = Math.floor(tag / 8);
        const wire = tag & 7;
        if (no === 0) throw malformed(`${name}: field number 0`);
        const known = byNumber.get(no);
        if (!known) {
          r.skip(wire);
          continue;
        }
        const [field, spec] = known;
        const expectedWire = spec.kind === 'enum' ? WIRE_VARINT : WIRE_LEN;
        if (wire !== expectedWire) throw malformed(`${name}.${field}: wrong wire type ${wire}`);
        switch (spec.kind) {
          case 'string':
            out[field] = decodeString(r.bytes(), `${name}.${field}`);
            break;
          case 'bytes':
            out[field] = Buffer.from(r.bytes());
            break;
          case 'map<string,bytes>': {
            const [k, v] = decodeMapEntry(r.bytes(), `${name}.${field}`);
            (out[field] as Record<string, Buffer>)[k] = v;
            break;
          }
          case 'enum':
            out[field] = r.varint();
            break;
        }
      }
      return out as MessageOf<S>;
    },
  };
}
