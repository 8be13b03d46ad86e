// The proto3 codec: exact bytes for the KMS messages, and refusal of malformed input.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as v2 from '../../src/proto/kms-v2.js';
import * as v1 from '../../src/proto/kms-v1beta1.js';
import { EncryptedObject } from '../../src/proto/encrypted-object.js';
import { FormatInvalidError } from '../../src/errors.js';

test('encodes StatusResponse fields in number order with the documented tags', () => {
  const bytes = v2.StatusResponse.encode({ version: 'v2', healthz: 'ok', key_id: 'k1' });
  assert.equal(bytes.toString('hex'), '0a027632' + '12026f6b' + '1a026b31');
});

test('omits zero values and decodes absent fields as zero values', () => {
  assert.equal(v1.EncryptResponse.encode({ cipher: Buffer.alloc(0) }).length, 0);
  const decoded = v2.DecryptRequest.decode(Buffer.alloc(0));
  assert.deepEqual(decoded, { ciphertext: Buffer.alloc(0), uid: '', key_id: '', annotations: {} });
});

test('round-trips map<string, bytes> annotations and the enum field', () => {
  const msg = {
    encryptedData: Buffer.from('data'),
    keyID: 'key-1',
    encryptedDEKSource: Buffer.from('seed'),
    annotations: { 'a.example.com': Buffer.from([1, 2]), 'b.example.com': Buffer.alloc(0) },
    encryptedDEKSourceType: 1,
  };
  assert.deepEqual(EncryptedObject.decode(EncryptedObject.encode(msg)), msg);
  assert.ok(EncryptedObject.encode(msg).subarray(-2).equals(Buffer.from([0x28, 0x01])));
});

test('skips unknown fields of every wire type', () => {
  const known = v1.VersionRequest.encode({ version: 'v1beta1' });
  const unknown = Buffer.from([0x38, 0x05, 0x41, 1, 2, 3, 4, 5, 6, 7, 8, 0x4a, 0x01, 0xff, 0x55, 1, 2, 3, 4]);
  assert.equal(v1.VersionRequest.decode(Buffer.concat([unknown, known])).version, 'v1beta1');
});

test('refuses truncated, mistyped and non-UTF-8 input with ERR_PROTO_MALFORMED', () => {
  const bad = [
    Buffer.from([0x0a, 0x05, 0x61]), // length past the end
    Buffer.from([0x0a]), // tag without a value
    Buffer.from([0x08, 0x01]), // varint where a string is expected
    Buffer.from([0x0a, 0x01, 0xff]), // invalid UTF-8 in a string
    Buffer.from([0x0b]), // group wire type
    Buffer.from([0x00, 0x00]), // field number 0
  ];
  for (const b of bad) {
    assert.throws(() => v1.VersionRequest.decode(b), (e: unknown) => {
      return e instanceof FormatInvalidError && e.code === 'ERR_PROTO_MALFORMED';
    });
  }
});

test('skips an unknown varint field larger than 2^53 (an int64 such as an etcd lease id)', () => {
  const bigVarint = Buffer.from([0x48, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]);
  const known = v1.VersionRequest.encode({ version: 'v1beta1' });
  assert.equal(v1.VersionRequest.decode(Buffer.concat([bigVarint, known])).version, 'v1beta1');
});

// encode() sizes the message first and writes into one buffer: check it byte for byte against a
// plain field-by-field encoder, across lengths whose varints take 1, 2 and 3 bytes and strings whose
// UTF-8 is longer than their UTF-16 (a lone surrogate becomes U+FFFD, 3 bytes, as Buffer.from does).
function refVarint(v: number): number[] {
  const out: number[] = [];
  while (v > 0x7f) {
    out.push((v & 0x7f) | 0x80);
    v = Math.floor(v / 128);
  }
  out.push(v);
  return out;
}
function refLen(no: number, body: Uint8Array): Buffer {
  return Buffer.concat([Buffer.from(refVarint((no << 3) | 2)), Buffer.from(refVarint(body.length)), body]);
}

test('encode writes the same bytes as a field-by-field encoder at every varint size', () => {
  const strings = ['', 'k', 'é€😀', 'x\ud800y', 'a'.repeat(127), 'b'.repeat(128), 'c'.repeat(16_384)];
  const lengths = [0, 1, 127, 128, 300, 16_383, 16_384, 70_000];
  let checked = 0;
  for (const s of strings) {
    for (const n of lengths) {
      const data = Buffer.alloc(n, 0xab);
      const annotations: Record<string, Buffer> = { [s || 'e.example.com']: data.subarray(0, n >> 1), 'z.example.com': Buffer.alloc(0) };
      const msg = { encryptedData: data, keyID: s, encryptedDEKSource: data.subarray(0, 5), annotations, encryptedDEKSourceType: n % 3 };
      const want = Buffer.concat([
        ...(n > 0 ? [refLen(1, data)] : []),
        ...(s.length > 0 ? [refLen(2, Buffer.from(s, 'utf8'))] : []),
        ...(n > 0 ? [refLen(3, data.subarray(0, 5))] : []),
        ...Object.entries(annotations).map(([k, v]) => refLen(4, Buffer.concat([refLen(1, Buffer.from(k, 'utf8')), refLen(2, v)]))),
        ...(n % 3 !== 0 ? [Buffer.from([0x28, ...refVarint(n % 3)])] : []),
      ]);
      const got = EncryptedObject.encode(msg);
      assert.ok(got.equals(want), `string ${JSON.stringify(s.slice(0, 8))} (${s.length}), bytes ${n}`);
      if (!s.includes('\ud800')) assert.deepEqual(EncryptedObject.decode(got), msg);
      checked++;
    }
  }
  assert.equal(checked, strings.length * lengths.length);
});
