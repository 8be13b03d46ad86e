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
import { Reader } from './wire.js';

/** Field numbers, everything about the wire format in one table (rpc.proto, kv.proto). */
export const ETCD_FIELD = {
  responseHeader: { revision: 3 },
  keyValue: { key: 1, createRevision: 2, modRevision: 3, version: 4, value: 5 },
  rangeRequest: { key: 1, rangeEnd: 2, limit: 3, revision: 4, serializable: 7, keysOnly: 8, countOnly: 9 },
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
const WIRE_LEN = 2;

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
  readonly serializable?: boolean | undefined;
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

  /**
   * An embedded message, present even when empty (a oneof member or a repeated element). `capacity`:
   * its expected size, so that a large member (a put of a whole value) is not grown by doubling.
   */
  message(field: number, write: (w: Writer) => void, capacity = 64): void {
    const inner = new Writer(capacity);
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
  w.bool(f.serializable, r.serializable);
  w.bool(f.keysOnly, r.keysOnly);
  w.bool(f.countOnly, r.countOnly);
}

/** Framing allowance per field or message: tag and length varints, small varint fields. */
const FIELD_OVERHEAD = 24;

/** An upper estimate of one RequestOp's encoded size (for the writer's capacity). */
function requestOpSize(op: EtcdRequestOp): number {
  if ('range' in op) return FIELD_OVERHEAD * 2 + op.range.key.length + (op.range.rangeEnd?.length ?? 0);
  if ('put' in op) return FIELD_OVERHEAD * 2 + op.put.key.length + op.put.value.length;
  return FIELD_OVERHEAD * 2 + op.deleteRange.key.length + (op.deleteRange.rangeEnd?.length ?? 0);
}

function writeRequestOp(w: Writer, op: EtcdRequestOp): void {
  const f = ETCD_FIELD.requestOp;
  const size = requestOpSize(op);
  if ('range' in op) w.message(f.range, (m) => writeRange(m, op.range), size);
  else if ('put' in op) w.message(f.put, (m) => writePut(m, op.put.key, op.put.value), size);
  else w.message(f.deleteRange, (m) => writeDeleteRange(m, op.deleteRange.key, op.deleteRange.rangeEnd), size);
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
  // Sized up front: a batch of 64 puts is ~100 KiB, and growing by doubling copied it ~10 times.
  let capacity = 64;
  for (const cmp of t.compare) capacity += FIELD_OVERHEAD * 2 + cmp.key.length;
  for (const op of t.success) capacity += FIELD_OVERHEAD + requestOpSize(op);
  for (const op of t.failure) capacity += FIELD_OVERHEAD + requestOpSize(op);
  const w = new Writer(capacity);
  const f = ETCD_FIELD.txnRequest;
  const c = ETCD_FIELD.compare;
  for (const cmp of t.compare) {
    assertUint('modRevision', cmp.modRevision);
    w.message(
      f.compare,
      (m) => {
        m.uint(c.result, COMPARE_RESULT_EQUAL);
        m.uint(c.target, COMPARE_TARGET_MOD);
        m.bytes(c.key, cmp.key);
        m.uint(c.modRevision, cmp.modRevision, true);
      },
      FIELD_OVERHEAD * 2 + cmp.key.length,
    );
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

const asBuffer = (data: Uint8Array): Buffer =>
  Buffer.isBuffer(data) ? data : Buffer.from(data.buffer, data.byteOffset, data.byteLength);

/** Reads a tag: [field number, wire type]. */
function tagOf(r: Reader): [number, number] {
  const t = r.varint();
  const field = Math.floor(t / 8);
  if (field === 0) throw malformed('field number 0');
  return [field, t & 7];
}

function expectWire(expected: number, actual: number, what: string): void {
  if (expected !== actual) throw malformed(`${what}: wire type ${actual}, expected ${expected}`);
}

function readHeaderRevision(r: Reader): number {
  const h = new Reader(r.bytes());
  let revision = 0;
  while (!h.done()) {
    const [field, wire] = tagOf(h);
    if (field === ETCD_FIELD.responseHeader.revision && wire === WIRE_VARINT) revision = h.varint();
    else h.skip(wire);
  }
  return revision;
}

function readKeyValue(buf: Buffer): EtcdKeyValue {
  const f = ETCD_FIELD.keyValue;
  const r = new Reader(buf);
  let key: Buffer | undefined;
  let value: Buffer | undefined;
  let createRevision = 0;
  let modRevision = 0;
  let version = 0;
  while (!r.done()) {
    const [field, wire] = tagOf(r);
    switch (field) {
      case f.key: {
        expectWire(WIRE_LEN, wire, 'KeyValue.key');
        key = Buffer.from(r.bytes());
        break;
      }
      case f.value: {
        expectWire(WIRE_LEN, wire, 'KeyValue.value');
        value = asBuffer(r.bytes());
        break;
      }
      case f.createRevision:
        expectWire(WIRE_VARINT, wire, 'KeyValue.create_revision');
        createRevision = r.varint();
        break;
      case f.modRevision:
        expectWire(WIRE_VARINT, wire, 'KeyValue.mod_revision');
        modRevision = r.varint();
        break;
      case f.version:
        expectWire(WIRE_VARINT, wire, 'KeyValue.version');
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

function readRange(buf: Buffer): EtcdRangeResponse {
  const f = ETCD_FIELD.rangeResponse;
  const r = new Reader(buf);
  let revision = 0;
  const kvs: EtcdKeyValue[] = [];
  let more = false;
  let count = 0;
  while (!r.done()) {
    const [field, wire] = tagOf(r);
    switch (field) {
      case f.header:
        expectWire(WIRE_LEN, wire, 'RangeResponse.header');
        revision = readHeaderRevision(r);
        break;
      case f.kvs: {
        expectWire(WIRE_LEN, wire, 'RangeResponse.kvs');
        kvs.push(readKeyValue(asBuffer(r.bytes())));
        break;
      }
      case f.more:
        expectWire(WIRE_VARINT, wire, 'RangeResponse.more');
        more = r.varint() !== 0;
        break;
      case f.count:
        expectWire(WIRE_VARINT, wire, 'RangeResponse.count');
        count = r.varint();
        break;
      default:
        r.skip(wire);
    }
  }
  return { revision, kvs, more, count };
}

export function decodeRangeResponse(data: Uint8Array): EtcdRangeResponse {
  return readRange(asBuffer(data));
}

/** PutResponse: only the header's revision. */
export function decodePutResponse(data: Uint8Array): { revision: number } {
  const r = new Reader(data);
  let revision = 0;
  while (!r.done()) {
    const [field, wire] = tagOf(r);
    if (field === ETCD_FIELD.putResponse.header && wire === WIRE_LEN) revision = readHeaderRevision(r);
    else r.skip(wire);
  }
  return { revision };
}

export function decodeDeleteRangeResponse(data: Uint8Array): { revision: number; deleted: number } {
  const f = ETCD_FIELD.deleteRangeResponse;
  const r = new Reader(data);
  let revision = 0;
  let deleted = 0;
  while (!r.done()) {
    const [field, wire] = tagOf(r);
    if (field === f.header && wire === WIRE_LEN) revision = readHeaderRevision(r);
    else if (field === f.deleted && wire === WIRE_VARINT) deleted = r.varint();
    else r.skip(wire);
  }
  return { revision, deleted };
}

function readResponseOp(buf: Buffer): EtcdResponseOp {
  const f = ETCD_FIELD.responseOp;
  const r = new Reader(buf);
  let op: EtcdResponseOp = { kind: 'other' };
  while (!r.done()) {
    const [field, wire] = tagOf(r);
    if (wire !== WIRE_LEN) {
      r.skip(wire);
      continue;
    }
    const body = asBuffer(r.bytes());
    if (field === f.range) op = { kind: 'range', range: readRange(body) };
    else if (field === f.put) op = { kind: 'put' };
    else if (field === f.deleteRange) op = { kind: 'deleteRange' };
  }
  return op;
}

export function decodeTxnResponse(data: Uint8Array): EtcdTxnResponse {
  const f = ETCD_FIELD.txnResponse;
  const r = new Reader(asBuffer(data));
  let revision = 0;
  let succeeded = false;
  const responses: EtcdResponseOp[] = [];
  while (!r.done()) {
    const [field, wire] = tagOf(r);
    switch (field) {
      case f.header:
        expectWire(WIRE_LEN, wire, 'TxnResponse.header');
        revision = readHeaderRevision(r);
        break;
      case f.succeeded:
        expectWire(WIRE_VARINT, wire, 'TxnResponse.succeeded');
        succeeded = r.varint() !== 0;
        break;
      case f.responses: {
        expectWire(WIRE_LEN, wire, 'TxnResponse.responses');
        responses.push(readResponseOp(asBuffer(r.bytes())));
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
  const r = new Reader(asBuffer(data));
  let revision = 0;
  let version = '';
  let dbSize = 0;
  while (!r.done()) {
    const [field, wire] = tagOf(r);
    if (field === f.header && wire === WIRE_LEN) revision = readHeaderRevision(r);
    else if (field === f.version && wire === WIRE_LEN) {
      const raw = r.bytes();
      try {
        version = utf8.decode(raw);
      } catch {
        throw malformed('StatusResponse.version is not UTF-8');
      }
    } else if (field === f.dbSize && wire === WIRE_VARINT) dbSize = r.varint();
    else r.skip(wire);
  }
  return { revision, version, dbSize };
}
