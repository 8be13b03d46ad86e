// The protobuf messages of etcd's v3 API that atrest's etcd client sends and reads (etcdserverpb KV
// Range/Put/DeleteRange/Txn, Maintenance Status; mvccpb KeyValue), written by hand from
// api/etcdserverpb/rpc.proto and api/mvccpb/kv.proto. Pure: no I/O. Only the fields atrest uses are
// encoded; every other field is skipped on decode, as proto3 requires.
//
// int64 fields (revisions, counts, sizes) are decoded to numbers: etcd revisions stay far below 2^53.
// uint64 ids (cluster_id, member_id) are never read. Keys are copied out of the response (a key may
// outlive its page, e.g. as a checkpoint); values are views into the one response buffer, so a page
// costs one allocation for all its values.

import { FormatInvalidError } from '../errors.js';

/** Field numbers, everything about the wire format in one table (rpc.proto, kv.proto). */
export const ETCD_FIELD = {
  responseHeader: { revision: 3 },
  keyValue: { key: 1, createRevision: 2, modRevision: 3, version: 4, value: 5 },
  rangeRequest: { key: 1, rangeEnd: 2, limit: 3, revision: 4, keysOnly: 8, countOnly: 9 },
  rangeResponse: { header: 1, kvs: 2, more: 3, count: 4 },
  putRequest: { key: 1, value: 2 },
  putResponse: { header: 1 },
  deleteRangeRequest: { key: 1, rangeEnd: 2 },
  deleteRangeResponse: { header: 1, deleted: 2 },
  /** oneof request */
  requestOp: { range: 1, put: 2, deleteRange: 3 },
  /** oneof response */
  responseOp: { range: 1, put: 2, deleteRange: 3 },
  /** target_union is a oneof: mod_revision is sent even when 0 (0 means "the key does not exist"). */
  compare: { result: 1, target: 2, key: 3, modRevision: 6 },
  txnRequest: { compare: 1, success: 2, failure: 3 },
  txnResponse: { header: 1, succeeded: 2, responses: 3 },
  statusResponse: { header: 1, version: 2, dbSize: 3 },
} as const;

/** Compare.CompareResult and Compare.CompareTarget values used here. */
export const COMPARE_RESULT_EQUAL = 0;
export const COMPARE_TARGET_MOD = 2;

/** gRPC method paths (service etcdserverpb.KV and etcdserverpb.Maintenance). */
export const ETCD_METHOD = {
  range: '/etcdserverpb.KV/Range',
  put: '/etcdserverpb.KV/Put',
  deleteRange: '/etcdserverpb.KV/DeleteRange',
  txn: '/etcdserverpb.KV/Txn',
  status: '/etcdserverpb.Maintenance/Status',
} as const;

const WIRE_VARINT = 0;
const WIRE_I64 = 1;
const WIRE_LEN = 2;
const WIRE_I32 = 5;

export interface EtcdKeyValue {
  readonly key: Buffer;
  readonly value: Buffer;
  readonly createRevision: number;
  readonly modRevision: number;
  readonly version: number;
}

export interface EtcdRangeRequest {
  readonly key: Uint8Array;
  readonly rangeEnd?: Uint8Array | undefined;
  readonly limit?: number | undefined;
  readonly revision?: number | undefined;
  readonly keysOnly?: boolean | undefined;
  readonly countOnly?: boolean | undefined;
}

export interface EtcdRangeResponse {
  readonly revision: number;
  readonly kvs: EtcdKeyValue[];
  readonly more: boolean;
  readonly count: number;
}

export type EtcdRequestOp =
  | { readonly range: EtcdRangeRequest }
  | { readonly put: { readonly key: Uint8Array; readonly value: Uint8Array } }
  | { readonly deleteRange: { readonly key: Uint8Array; readonly rangeEnd?: Uint8Array | undefined } };

/** One ResponseOp: the range response when it is one, else only which kind it was. */
export type EtcdResponseOp =
  | { readonly kind: 'range'; readonly range: EtcdRangeResponse }
  | { readonly kind: 'put' | 'deleteRange' | 'other' };

export interface EtcdModCompare {
  readonly key: Uint8Array;
  readonly modRevision: number;
}

export interface EtcdTxnRequest {
  /** Each: key's mod_revision EQUAL modRevision. */
  readonly compare: readonly EtcdModCompare[];
  readonly success: readonly EtcdRequestOp[];
  readonly failure: readonly EtcdRequestOp[];
}

export interface EtcdTxnResponse {
  readonly revision: number;
  readonly succeeded: boolean;
  readonly responses: EtcdResponseOp[];
}

export interface EtcdStatusResponse {
  readonly revision: number;
  readonly version: string;
  readonly dbSize: number;
}

function malformed(message: string): FormatInvalidError {
  return new FormatInvalidError('ERR_PROTO_MALFORMED', `etcd response: ${message}`);
}

// ---- encoding -------------------------------------------------------------------------------------

function assertUint(name: string, v: number): void {
  if (!Number.isSafeInteger(v) || v < 0) throw new RangeError(`${name} must be a non-negative safe integer, got ${v}`);
}

/** A message being written: fields appended in order into a buffer that grows as needed. */
class Writer {
  private buf: Buffer;
  private pos = 0;

  constructor(capacity = 64) {
    this.buf = Buffer.allocUnsafe(capacity);
  }

  private ensure(n: number): void {
    if (this.pos + n <= this.buf.length) return;
    const next = Buffer.allocUnsafe(Math.max(this.buf.length * 2, this.pos + n));
    this.buf.copy(next, 0, 0, this.pos);
    this.buf = next;
  }

  private rawVarint(v: number): void {
    this.ensure(10);
    while (v >= 128) {
      this.buf[this.pos++] = (v % 128) | 0x80;
      v = Math.floor(v / 128);
    }
    this.buf[this.pos++] = v;
  }

  /** A varint field; zero is omitted unless `always` (a oneof member carries presence). */
  uint(field: number, v: number, always = false): void {
    if (v === 0 && !always) return;
    this.rawVarint((field << 3) | WIRE_VARINT);
    this.rawVarint(v);
  }

  bool(field: number, v: boolean | undefined): void {
    if (v === true) this.uint(field, 1);
  }

  /** A bytes field; empty is omitted (proto3 default), except inside a oneof (`always`). */
  bytes(field: number, v: Uint8Array | undefined, always = false): void {
    if (v === undefined || (v.length === 0 && !always)) return;
    this.rawVarint((field << 3) | WIRE_LEN);
    this.rawVarint(v.length);
    this.ensure(v.length);
    this.buf.set(v, this.pos);
    this.pos += v.length;
  }

  /** An embedded message, present even when empty (a oneof member or a repeated element). */
  message(field: number, write: (w: Writer) => void): void {
    const inner = new Writer();
    write(inner);
    this.bytes(field, inner.finish(), true);
  }

  finish(): Buffer {
    return this.buf.subarray(0, this.pos);
  }
}

function writeRange(w: Writer, r: EtcdRangeRequest): void {
  const f = ETCD_FIELD.rangeRequest;
  w.bytes(f.key, r.key);
  w.bytes(f.rangeEnd, r.rangeEnd);
  if (r.limit !== undefined) {
    assertUint('limit', r.limit);
    w.uint(f.limit, r.limit);
  }
  if (r.revision !== undefined) {
    assertUint('revision', r.revision);
    w.uint(f.revision, r.revision);
  }
  w.bool(f.keysOnly, r.keysOnly);
  w.bool(f.countOnly, r.countOnly);
}

function writeRequestOp(w: Writer, op: EtcdRequestOp): void {
  const f = ETCD_FIELD.requestOp;
  if ('range' in op) w.message(f.range, (m) => writeRange(m, op.range));
  else if ('put' in op) w.message(f.put, (m) => writePut(m, op.put.key, op.put.value));
  else w.message(f.deleteRange, (m) => writeDeleteRange(m, op.deleteRange.key, op.deleteRange.rangeEnd));
}

function writePut(w: Writer, key: Uint8Array, value: Uint8Array): void {
  w.bytes(ETCD_FIELD.putRequest.key, key);
  w.bytes(ETCD_FIELD.putRequest.value, value);
}

function writeDeleteRange(w: Writer, key: Uint8Array, rangeEnd: Uint8Array | undefined): void {
  w.bytes(ETCD_FIELD.deleteRangeRequest.key, key);
  w.bytes(ETCD_FIELD.deleteRangeRequest.rangeEnd, rangeEnd);
}

export function encodeRangeRequest(r: EtcdRangeRequest): Buffer {
  const w = new Writer(32 + r.key.length + (r.rangeEnd?.length ?? 0));
  writeRange(w, r);
  return w.finish();
}

export function encodePutRequest(key: Uint8Array, value: Uint8Array): Buffer {
  const w = new Writer(16 + key.length + value.length);
  writePut(w, key, value);
  return w.finish();
}

export function encodeDeleteRangeRequest(key: Uint8Array, rangeEnd?: Uint8Array): Buffer {
  const w = new Writer(16 + key.length + (rangeEnd?.length ?? 0));
  writeDeleteRange(w, key, rangeEnd);
  return w.finish();
}

export function encodeTxnRequest(t: EtcdTxnRequest): Buffer {
  const w = new Writer(256);
  const f = ETCD_FIELD.txnRequest;
  const c = ETCD_FIELD.compare;
  for (const cmp of t.compare) {
    assertUint('modRevision', cmp.modRevision);
    w.message(f.compare, (m) => {
      m.uint(c.result, COMPARE_RESULT_EQUAL);
      m.uint(c.target, COMPARE_TARGET_MOD);
      m.bytes(c.key, cmp.key);
      m.uint(c.modRevision, cmp.modRevision, true);
    });
  }
  for (const op of t.success) w.message(f.success, (m) => writeRequestOp(m, op));
  for (const op of t.failure) w.message(f.failure, (m) => writeRequestOp(m, op));
  return w.finish();
}

/** StatusRequest has no fields. */
export function encodeStatusRequest(): Buffer {
  return Buffer.alloc(0);
}

// ---- decoding -------------------------------------------------------------------------------------

/** A cursor over one message's bytes [pos, end) inside a larger buffer. */
class Reader {
  pos: number;
  readonly end: number;
  readonly buf: Buffer;

  constructor(buf: Buffer, start: number, end: number) {
    this.buf = buf;
    this.pos = start;
    this.end = end;
  }

  more(): boolean {
    return this.pos < this.end;
  }

  varint(): number {
    const buf = this.buf;
    let pos = this.pos;
    // the common case: one byte
    if (pos < this.end) {
      const b = buf[pos]!;
      if (b < 0x80) {
        this.pos = pos + 1;
        return b;
      }
    }
    let result = 0;
    let factor = 1;
    for (let i = 0; i < 10; i++) {
      if (pos >= this.end) throw malformed('truncated varint');
      const byte = buf[pos++]!;
      result += (byte & 0x7f) * factor;
      if (byte < 0x80) {
        this.pos = pos;
        // int64 fields atrest reads are revisions, counts and sizes: a value past 2^53 (or a negative
        // int64, 10 bytes) is not something etcd sends for them.
        if (result > Number.MAX_SAFE_INTEGER) throw malformed('int64 out of range');
        return result;
      }
      factor *= 128;
    }
    throw malformed('varint longer than 10 bytes');
  }

  /** Start and end of a length-delimited field's body; the cursor moves past it. */
  span(): [number, number] {
    const len = this.varint();
    const start = this.pos;
    if (len > this.end - start) throw malformed('length-delimited field runs past the end');
    this.pos = start + len;
    return [start, start + len];
  }

  skip(wireType: number): void {
    switch (wireType) {
      case WIRE_VARINT:
        for (let i = 0; i < 10; i++) {
          if (this.pos >= this.end) throw malformed('truncated varint');
          if (this.buf[this.pos++]! < 0x80) return;
        }
        throw malformed('varint longer than 10 bytes');
      case WIRE_I64:
        this.advance(8);
        return;
      case WIRE_LEN:
        this.span();
        return;
      case WIRE_I32:
        this.advance(4);
        return;
      default:
        throw malformed(`unsupported wire type ${wireType}`);
    }
  }

  private advance(n: number): void {
    if (n > this.end - this.pos) throw malformed('fixed-size field runs past the end');
    this.pos += n;
  }

  /** Reads a tag; returns [field number, wire type]. */
  tag(): [number, number] {
    const t = this.varint();
    const field = Math.floor(t / 8);
    if (field === 0) throw malformed('field number 0');
    return [field, t & 7];
  }

  expect(wire: number, actual: number, what: string): void {
    if (wire !== actual) throw malformed(`${what}: wire type ${actual}, expected ${wire}`);
  }
}

function readHeaderRevision(r: Reader): number {
  const [start, end] = r.span();
  const h = new Reader(r.buf, start, end);
  let revision = 0;
  while (h.more()) {
    const [field, wire] = h.tag();
    if (field === ETCD_FIELD.responseHeader.revision && wire === WIRE_VARINT) revision = h.varint();
    else h.skip(wire);
  }
  return revision;
}

function readKeyValue(buf: Buffer, start: number, end: number): EtcdKeyValue {
  const f = ETCD_FIELD.keyValue;
  const r = new Reader(buf, start, end);
  let key: Buffer | undefined;
  let value: Buffer | undefined;
  let createRevision = 0;
  let modRevision = 0;
  let version = 0;
  while (r.more()) {
    const [field, wire] = r.tag();
    switch (field) {
      case f.key: {
        r.expect(WIRE_LEN, wire, 'KeyValue.key');
        const [s, e] = r.span();
        key = Buffer.from(buf.subarray(s, e));
        break;
      }
      case f.value: {
        r.expect(WIRE_LEN, wire, 'KeyValue.value');
        const [s, e] = r.span();
        value = buf.subarray(s, e);
        break;
      }
      case f.createRevision:
        r.expect(WIRE_VARINT, wire, 'KeyValue.create_revision');
        createRevision = r.varint();
        break;
      case f.modRevision:
        r.expect(WIRE_VARINT, wire, 'KeyValue.mod_revision');
        modRevision = r.varint();
        break;
      case f.version:
        r.expect(WIRE_VARINT, wire, 'KeyValue.version');
        version = r.varint();
        break;
      default:
        r.skip(wire);
    }
  }
  return {
    key: key ?? Buffer.alloc(0),
    value: value ?? Buffer.alloc(0),
    createRevision,
    modRevision,
    version,
  };
}

function readRange(buf: Buffer, start: number, end: number): EtcdRangeResponse {
  const f = ETCD_FIELD.rangeResponse;
  const r = new Reader(buf, start, end);
  let revision = 0;
  const kvs: EtcdKeyValue[] = [];
  let more = false;
  let count = 0;
  while (r.more()) {
    const [field, wire] = r.tag();
    switch (field) {
      case f.header:
        r.expect(WIRE_LEN, wire, 'RangeResponse.header');
        revision = readHeaderRevision(r);
        break;
      case f.kvs: {
        r.expect(WIRE_LEN, wire, 'RangeResponse.kvs');
        const [s, e] = r.span();
        kvs.push(readKeyValue(buf, s, e));
        break;
      }
      case f.more:
        r.expect(WIRE_VARINT, wire, 'RangeResponse.more');
        more = r.varint() !== 0;
        break;
      case f.count:
        r.expect(WIRE_VARINT, wire, 'RangeResponse.count');
        count = r.varint();
        break;
      default:
        r.skip(wire);
    }
  }
  return { revision, kvs, more, count };
}

const asBuffer = (data: Uint8Array): Buffer =>
  Buffer.isBuffer(data) ? data : Buffer.from(data.buffer, data.byteOffset, data.byteLength);

export function decodeRangeResponse(data: Uint8Array): EtcdRangeResponse {
  const buf = asBuffer(data);
  return readRange(buf, 0, buf.length);
}

/** PutResponse: only the header's revision. */
export function decodePutResponse(data: Uint8Array): { revision: number } {
  const r = new Reader(asBuffer(data), 0, data.length);
  let revision = 0;
  while (r.more()) {
    const [field, wire] = r.tag();
    if (field === ETCD_FIELD.putResponse.header && wire === WIRE_LEN) revision = readHeaderRevision(r);
    else r.skip(wire);
  }
  return { revision };
}

export function decodeDeleteRangeResponse(data: Uint8Array): { revision: number; deleted: number } {
  const f = ETCD_FIELD.deleteRangeResponse;
  const r = new Reader(asBuffer(data), 0, data.length);
  let revision = 0;
  let deleted = 0;
  while (r.more()) {
    const [field, wire] = r.tag();
    if (field === f.header && wire === WIRE_LEN) revision = readHeaderRevision(r);
    else if (field === f.deleted && wire === WIRE_VARINT) deleted = r.varint();
    else r.skip(wire);
  }
  return { revision, deleted };
}

function readResponseOp(buf: Buffer, start: number, end: number): EtcdResponseOp {
  const f = ETCD_FIELD.responseOp;
  const r = new Reader(buf, start, end);
  let op: EtcdResponseOp = { kind: 'other' };
  while (r.more()) {
    const [field, wire] = r.tag();
    if (wire !== WIRE_LEN) {
      r.skip(wire);
      continue;
    }
    const [s, e] = r.span();
    if (field === f.range) op = { kind: 'range', range: readRange(buf, s, e) };
    else if (field === f.put) op = { kind: 'put' };
    else if (field === f.deleteRange) op = { kind: 'deleteRange' };
  }
  return op;
}

export function decodeTxnResponse(data: Uint8Array): EtcdTxnResponse {
  const f = ETCD_FIELD.txnResponse;
  const buf = asBuffer(data);
  const r = new Reader(buf, 0, buf.length);
  let revision = 0;
  let succeeded = false;
  const responses: EtcdResponseOp[] = [];
  while (r.more()) {
    const [field, wire] = r.tag();
    switch (field) {
      case f.header:
        r.expect(WIRE_LEN, wire, 'TxnResponse.header');
        revision = readHeaderRevision(r);
        break;
      case f.succeeded:
        r.expect(WIRE_VARINT, wire, 'TxnResponse.succeeded');
        succeeded = r.varint() !== 0;
        break;
      case f.responses: {
        r.expect(WIRE_LEN, wire, 'TxnResponse.responses');
        const [s, e] = r.span();
        responses.push(readResponseOp(buf, s, e));
        break;
      }
      default:
        r.skip(wire);
    }
  }
  return { revision, succeeded, responses };
}

const utf8 = new TextDecoder('utf-8', { fatal: true });

export function decodeStatusResponse(data: Uint8Array): EtcdStatusResponse {
  const f = ETCD_FIELD.statusResponse;
  const buf = asBuffer(data);
  const r = new Reader(buf, 0, buf.length);
  let revision = 0;
  let version = '';
  let dbSize = 0;
  while (r.more()) {
    const [field, wire] = r.tag();
    if (field === f.header && wire === WIRE_LEN) revision = readHeaderRevision(r);
    else if (field === f.version && wire === WIRE_LEN) {
      const [s, e] = r.span();
      try {
        version = utf8.decode(buf.subarray(s, e));
      } catch {
        throw malformed('StatusResponse.version is not UTF-8');
      }
    } else if (field === f.dbSize && wire === WIRE_VARINT) dbSize = r.varint();
    else r.skip(wire);
  }
  return { revision, version, dbSize };
}
