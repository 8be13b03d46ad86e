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
