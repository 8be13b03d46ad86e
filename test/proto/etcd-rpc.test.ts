// The hand-written codec of etcd's v3 messages: exact bytes for what atrest sends, decoding of what
// etcd sends (unknown fields and uint64 ids skipped), and refusal of malformed input. The
// cross-check with a real etcd and etcdctl is in test/etcd/client.test.ts.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import {
  decodeRangeResponse,
  decodeStatusResponse,
  decodeTxnResponse,
  encodePutRequest,
  encodeRangeRequest,
  encodeTxnRequest,
} from '../../src/proto/etcd-rpc.js';
import { FormatInvalidError } from '../../src/errors.js';

const hex = (s: string): Buffer => Buffer.from(s.replace(/\s+/g, ''), 'hex');

test('PutRequest: key (1) and value (2) as length-delimited fields; an empty value is omitted', () => {
  assert.equal(encodePutRequest(Buffer.from('k'), Buffer.from('v')).toString('hex'), '0a016b' + '120176');
  assert.equal(encodePutRequest(Buffer.from('k'), Buffer.alloc(0)).toString('hex'), '0a016b');
});

test('RangeRequest: range_end (2), limit (3), revision (4), keys_only (8); zero values omitted', () => {
  const bytes = encodeRangeRequest({ key: Buffer.from('a'), rangeEnd: Buffer.from('b'), limit: 300, revision: 0, keysOnly: true });
  assert.equal(bytes.toString('hex'), '0a0161' + '120162' + '18ac02' + '4001');
});

test('Txn: a mod_revision compare of 0 is still sent (a oneof member: "the key does not exist")', () => {
  const bytes = encodeTxnRequest({
    compare: [{ key: Buffer.from('k'), modRevision: 0 }],
    success: [{ put: { key: Buffer.from('k'), value: Buffer.from('v') } }],
    failure: [{ range: { key: Buffer.from('k') } }],
  });
  // compare (1): target MOD (2) = 2, key (3), mod_revision (6) = 0
  // success (2): RequestOp.request_put (2) { key, value }
  // failure (3): RequestOp.request_range (1) { key }
  assert.equal(
    bytes.toString('hex'),
    '0a07' + '1002' + '1a016b' + '3000' + '1208' + '1206' + '0a016b' + '120176' + '1a05' + '0a03' + '0a016b',
  );
});

test('refuses a negative or unsafe revision (programmer misuse)', () => {
  assert.throws(() => encodeRangeRequest({ key: Buffer.from('a'), revision: -1 }), RangeError);
  assert.throws(() => encodeTxnRequest({ compare: [{ key: Buffer.from('a'), modRevision: 2 ** 60 }], success: [], failure: [] }), RangeError);
});

test('RangeResponse: header revision, kvs in order, more, count; skips uint64 ids and unknown fields', () => {
  const data = hex(`
    0a 12  08 ffffffffffffffffff01  10 01  18 e807  20 02
    12 14  0a 03 2f6b31  10 05  18 07  20 02  2a 02 0001  30 09  9801 01
    12 07  0a 03 2f6b32  18 08
    18 01  20 c801
    f801 07
  `);
  const r = decodeRangeResponse(data);
  assert.equal(r.revision, 1000);
  assert.equal(r.more, true);
  assert.equal(r.count, 200);
  assert.equal(r.kvs.length, 2);
  assert.deepEqual(r.kvs[0], { key: Buffer.from('/k1'), value: Buffer.from([0, 1]), createRevision: 5, modRevision: 7, version: 2 });
  assert.deepEqual(r.kvs[1], { key: Buffer.from('/k2'), value: Buffer.alloc(0), createRevision: 0, modRevision: 8, version: 0 });
});

test('TxnResponse: succeeded and each ResponseOp, range responses decoded', () => {
  const data = hex(`
    0a 02 1809  10 01
    1a 04 12 02 0a00
    1a 0c 0a 0a 12 08 0a 01 6b  18 09  2a 01 76
  `);
  const t = decodeTxnResponse(data);
  assert.equal(t.revision, 9);
  assert.equal(t.succeeded, true);
  assert.equal(t.responses[0]!.kind, 'put');
  const op = t.responses[1]!;
  assert.equal(op.kind, 'range');
  assert.equal(op.kind === 'range' && op.range.kvs[0]!.value.toString(), 'v');
});

test('StatusResponse: version and dbSize', () => {
  const s = decodeStatusResponse(hex('0a02 1803  12 05 332e362e37  18 80 80 04'));
  assert.deepEqual(s, { revision: 3, version: '3.6.7', dbSize: 65536 });
});

test('truncated and malformed responses raise ERR_PROTO_MALFORMED', () => {
  const bad = [
    hex('12 14 0a 03'), // kvs runs past the end
    hex('18'), // truncated varint
    hex('12 02 18 ff'), // truncated varint inside a KeyValue
    hex('12 01 0b'), // wire type 3 (groups) inside a KeyValue
    hex('1a 02 0a 01'), // more: wrong wire type
    hex('20 ffffffffffffffffff01'), // count beyond 2^53
    hex('00'), // field number 0
  ];
  for (const b of bad) {
    assert.throws(() => decodeRangeResponse(b), (e: unknown) => e instanceof FormatInvalidError && e.code === 'ERR_PROTO_MALFORMED', b.toString('hex'));
  }
});

test('random bytes never crash a decoder: a result or ERR_PROTO_MALFORMED', () => {
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 200 }), (bytes) => {
      for (const decode of [decodeRangeResponse, decodeTxnResponse, decodeStatusResponse]) {
        try {
          decode(bytes);
        } catch (e) {
          if (!(e instanceof FormatInvalidError)) throw e;
        }
      }
    }),
    { numRuns: 2000 },
  );
});
