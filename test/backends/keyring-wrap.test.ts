// The keyring's wrapped-DEK byte format: golden vector, independent cross-check, tamper regions, fuzz.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import fc from 'fast-check';
import { gcm } from '@noble/ciphers/aes.js';
import { AtrestError, DecryptionFailedError, FormatInvalidError } from '../../src/errors.js';
import {
  WRAP_OVERHEAD_BYTES,
  openWrapped,
  parseWrapped,
  sealWrapped,
} from '../../src/backends/keyring-wrap.js';

// Golden vector. Provenance: produced by sealWrapped when the format was introduced (2026-11-28) and
// checked, in the test below, against @noble/ciphers' independent AES-256-GCM with the header as AAD.
// IMPORTANT: changing this makes stored data unreadable. kube-apiserver stores these bytes in etcd;
// if this test fails, the format changed: add a new format version instead of editing the vector.
const GOLDEN = {
  keyID: 'k20260101T000000Z-0123456789abcdef',
  key: Buffer.from([...Array(32).keys()]),
  nonce: Buffer.from('000102030405060708090a0b', 'hex'),
  plaintext: Buffer.from('atrest golden DEK 32 bytes long!'),
  wrapped:
    '41544b01226b3230323630313031543030303030305a2d30313233343536373839616263646566' +
    '000102030405060708090a0b' +
    '2676a47eb691e27ce22df3eedfc93c28c8f6b406d01926085d14c5e972076793' +
    'd296a5bd19da4da0c549e0c31fd889f6',
};

test('the wrapped-DEK format is stable: changing this makes stored data unreadable', () => {
  const out = sealWrapped(GOLDEN.keyID, GOLDEN.key, GOLDEN.nonce, GOLDEN.plaintext);
  assert.equal(out.toString('hex'), GOLDEN.wrapped);
  const parsed = parseWrapped(Buffer.from(GOLDEN.wrapped, 'hex'));
  assert.equal(parsed.keyID, GOLDEN.keyID);
  assert.deepEqual(openWrapped(parsed, GOLDEN.key), GOLDEN.plaintext);
});

test('the golden vector decrypts with an independent AES-GCM using the header as AAD', () => {
  const bytes = Buffer.from(GOLDEN.wrapped, 'hex');
  const headerLen = 3 + 1 + 1 + GOLDEN.keyID.length;
  const header = bytes.subarray(0, headerLen);
  assert.equal(header.subarray(0, 3).toString('ascii'), 'ATK');
  assert.equal(header[3], 1);
  assert.equal(header[4], GOLDEN.keyID.length);
  const nonce = bytes.subarray(headerLen, headerLen + 12);
  const plain = gcm(GOLDEN.key, nonce, header).decrypt(bytes.subarray(headerLen + 12));
  assert.deepEqual(Buffer.from(plain), GOLDEN.plaintext);
});

test('a 32-byte DEK wraps into a ciphertext far below the 1024-byte KMS v2 limit', () => {
  const out = sealWrapped('k'.repeat(128), randomBytes(32), randomBytes(12), randomBytes(32));
  assert.equal(out.length, WRAP_OVERHEAD_BYTES + 128 + 32);
  assert.ok(out.length <= 1024);
});

test('flipping a bit in any region of a wrapped DEK gives a clean error, never plaintext', () => {
  const wrapped = Buffer.from(GOLDEN.wrapped, 'hex');
  const headerLen = 5 + GOLDEN.keyID.length;
  const regions: Record<string, number> = {
    magic: 0,
    format: 3,
    'key id length': 4,
    'key id': 10,
    nonce: headerLen + 3,
    body: headerLen + 12 + 5,
    tag: wrapped.length - 1,
  };
  for (const [region, offset] of Object.entries(regions)) {
    const bad = Buffer.from(wrapped);
    bad[offset]! ^= 0x01;
    assert.throws(
      () => openWrapped(parseWrapped(bad), GOLDEN.key),
      (err: unknown) => err instanceof FormatInvalidError || err instanceof DecryptionFailedError,
      region,
    );
  }
});

test('a wrapped DEK opened with other key material fails authentication', () => {
  const wrapped = Buffer.from(GOLDEN.wrapped, 'hex');
  assert.throws(() => openWrapped(parseWrapped(wrapped), randomBytes(32)), DecryptionFailedError);
});

test('truncated and foreign ciphertexts are refused as malformed', () => {
  const wrapped = Buffer.from(GOLDEN.wrapped, 'hex');
  for (const len of [0, 2, 4, 5, 39, 50, 66]) {
    assert.throws(
      () => parseWrapped(wrapped.subarray(0, len)),
      FormatInvalidError,
      `length ${len}`,
    );
  }
  assert.throws(() => parseWrapped(Buffer.from('k8s:enc:kms:v1:foo')), FormatInvalidError);
});

test('random bytes never crash the parser: they parse or raise an atrest error', () => {
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 200 }), fc.boolean(), (bytes, withMagic) => {
      const input = withMagic ? Buffer.concat([Buffer.from('ATK\x01'), bytes]) : Buffer.from(bytes);
      try {
        openWrapped(parseWrapped(input), GOLDEN.key);
      } catch (err) {
        assert.ok(err instanceof AtrestError, String(err));
      }
    }),
    { numRuns: 500 },
  );
});

test('wrap then unwrap round-trips any plaintext under any key id', () => {
  fc.assert(
    fc.property(
      fc.uint8Array({ maxLength: 600 }),
      fc.stringMatching(/^[A-Za-z0-9][A-Za-z0-9._-]{0,40}$/),
      (plain, keyID) => {
        const key = randomBytes(32);
        const parsed = parseWrapped(sealWrapped(keyID, key, randomBytes(12), plain));
        assert.equal(parsed.keyID, keyID);
        assert.deepEqual(openWrapped(parsed, key), Buffer.from(plain));
      },
    ),
    { numRuns: 200 },
  );
});
