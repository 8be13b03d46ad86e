// The recovery seal: round trip, binding to its context, tamper detection region by region, a
// recorded vector (stability), and the key and share files.

import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { DecryptionFailedError, FormatInvalidError } from '../../src/errors.js';
import {
  SEAL_OVERHEAD_BYTES,
  generateRecoveryKey,
  openSeal,
  privateKeyFromRaw,
  seal,
  sealContext,
} from '../../src/recovery/seal.js';
import {
  combinePrivateKey,
  parsePrivateKeyPem,
  parsePublicKeyPem,
  parseShare,
  privateKeyPem,
  publicKeyPem,
  splitPrivateKey,
} from '../../src/recovery/keys.js';

const RECIPIENT_RAW = Buffer.from('a8abababababababababababababababababababababababababababababab6b', 'hex');
const EPHEMERAL_RAW = Buffer.from('c8cdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcd4d', 'hex');

describe('recovery seal', () => {
  const key = generateRecoveryKey();
  const context = sealContext('k1', Buffer.from('wrapped-by-the-kek'));
  const seed = randomBytes(32);

  it('round-trips a seed and adds a fixed overhead', () => {
    const s = seal(key, seed, context);
    assert.equal(s.length, 32 + SEAL_OVERHEAD_BYTES);
    assert.deepEqual(openSeal([key], s, context), seed);
  });

  it('is bound to its key id and wrapped bytes: other context fails', () => {
    const s = seal(key, seed, context);
    assert.throws(() => openSeal([key], s, sealContext('k2', Buffer.from('wrapped-by-the-kek'))), DecryptionFailedError);
    assert.throws(() => openSeal([key], s, sealContext('k1', Buffer.from('wrapped-by-the-keK'))), DecryptionFailedError);
  });

  it('detects tampering in every region (format, recipient, ephemeral key, nonce, body, tag)', () => {
    const s = seal(key, seed, context);
    for (const at of [3, 4, 12, 20, 44, 56, 70, s.length - 1]) {
      const t = Buffer.from(s);
      t[at]! ^= 0x01;
      assert.throws(() => openSeal([key], t, context), (e: unknown) => e instanceof DecryptionFailedError || e instanceof FormatInvalidError, `byte ${at}`);
    }
    assert.throws(() => openSeal([key], s.subarray(0, 40), context), FormatInvalidError);
  });

  it('names the recovery key a seal needs when another is given', () => {
    const s = seal(key, seed, context);
    assert.throws(() => openSeal([generateRecoveryKey()], s, context), new RegExp(key.recipient.toString('hex')));
  });

  it('opens a recorded seal (changing this makes every stored recovery seal unopenable)', () => {
    // Recorded with fixed keys and nonce; the seal format and derivation must not change.
    const recipient = privateKeyFromRaw(RECIPIENT_RAW);
    const ephemeral = privateKeyFromRaw(EPHEMERAL_RAW);
    const fixedNonce = () => Buffer.alloc(12, 0x11);
    const s = seal(recipient, Buffer.alloc(32, 0x42), sealContext('k1', Buffer.from('inner')), { ephemeral, random: fixedNonce });
    assert.equal(s.toString('hex'), RECORDED);
    assert.deepEqual(openSeal([recipient], Buffer.from(RECORDED, 'hex'), sealContext('k1', Buffer.from('inner'))), Buffer.alloc(32, 0x42));
  });
});

describe('recovery key files and shares', () => {
  it('writes and reads PEM key files', () => {
    const key = generateRecoveryKey();
    assert.deepEqual(parsePublicKeyPem(publicKeyPem(key), 'pub').raw, key.raw);
    assert.deepEqual(parsePrivateKeyPem(privateKeyPem(key), 'priv').raw, key.raw);
    assert.throws(() => parsePublicKeyPem('not a key', 'pub.pem'), /pub\.pem: not an X25519/);
  });

  it('recovers the key from any 2 of 3 share files, fails with 1, and catches a typo', () => {
    const key = generateRecoveryKey();
    const files = splitPrivateKey(key, 2, 3);
    const shares = files.map((f, i) => parseShare(f.text, `share-${i}`));
    for (const pair of [[0, 1], [0, 2], [1, 2]] as const) {
      const back = combinePrivateKey([shares[pair[0]]!, shares[pair[1]]!]);
      assert.deepEqual(back.raw, key.raw);
    }
    assert.throws(() => combinePrivateKey([shares[0]!]), /needs 2 shares; 1 given/);
    const typo = files[0]!.text.replace(/:(\d+):([A-Za-z0-9+/])/, (_m, x: string, c: string) => `:${x}:${c === 'A' ? 'B' : 'A'}`);
    assert.throws(() => parseShare(typo, 'share-typo'), /check digits/);
    const other = parseShare(splitPrivateKey(generateRecoveryKey(), 2, 2)[0]!.text, 'other');
    assert.throws(() => combinePrivateKey([shares[0]!, other]), /different recovery keys/);
  });
});

const RECORDED =
  '41545301bd7381eab08d2d62b5bea823d9c9ff576091c54b7c596c0ae296884f0e150290e88455d7fba6126f11111111111111111111111126a8cac3c44b3f2569c1e264b0f77744275b66f63bdd7bb57f7759393d611e81466a7f10f943f02df86883f1ae29607c';
