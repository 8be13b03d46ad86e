// Vectors recorded by others, decrypted by atrest. Provenance next to each one.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  createAesGcmSeedTransformer,
  createAesGcmTransformer,
  deriveSeedKey,
} from '../../src/transformers/aes-gcm.js';
import { createSecretboxTransformer } from '../../src/transformers/secretbox.js';
import { createKmsV2Transformer } from '../../src/transformers/kms-v2.js';
import { EncryptedObject } from '../../src/proto/encrypted-object.js';

const bamboo = { authenticatedData: Buffer.from('bamboo') };
const PANDAS = 'pandas are the best';

// kubernetes/apiserver pkg/storage/value/encrypt/aes/aes_test.go, TestGCMLegacyDataCompatibility
// key "snorlax_awesomes" (AES-128), AAD "bamboo". 47 bytes = nonce 12 + 19 + tag 16.
const GCM_LEGACY =
  '9f27c8fcea8a58c467d8e437dbf2d85955f9b4bd912f4ef967d788a0cb07797dac0a3f0a0845605ca85ac8562b4ae1';

// Same file, TestExtendedNonceGCMLegacyDataCompatibility: the kms v2 seed mode.
// 79 bytes = info 32 + nonce 12 + 19 + tag 16.
const SEED = '5d40323a820ff95561675e3b95e81867c5fdd561d35a88a2d08b08aa9d4fcf5c';
const SEED_DATA =
  '2442759e33945fbad709db577a0f037fd8a709fc76979b8942209debcecb9d57efe3d6ff6a1ef6ee9a5003b9833b3043' +
  'cec1e47b35175b151107a8d2416b0e296bbf66b5d102fcefdf9a78f293d271';
const SEED_DERIVED_KEY = '6e58b7659c304b0c382f42f16bd700465def1dead80bf6f1bf1d52073bdb0c00';

// NaCl (D. J. Bernstein) tests/secretbox.c and secretbox.out: crypto_secretbox of a 131-byte message.
// NaCl's output starts with 16 zero bytes; the "easy" layout upstream stores drops them: tag then ct.
const NACL_KEY = '1b27556473e985d462cd51197a9a46c76009549eac6474f206c4ee0844f68389';
const NACL_NONCE = '69696ee955b62b73cd62bda875fc73d68219e0036b7a0b37';
const NACL_MESSAGE =
  'be075fc53c81f2d5cf141316ebeb0c7b5228c52a4c62cbd44b66849b64244ffce5ecbaaf33bd751a1ac728d45e6c6129' +
  '6cdc3c01233561f41db66cce314adb310e3be8250c46f06dceea3a7fa1348057e2f6556ad6b1318a024a838f21af1fde' +
  '048977eb48f59ffd4924ca1c60902e52f0a089bc76897040e082f937763848645e0705';
const NACL_BOX =
  'f3ffc7703f9400e52a7dfb4b3d3305d98e993b9f48681273c29650ba32fc76ce48332ea7164d96a4476fb8c531a1186a' +
  'c0dfc17c98dce87b4da7f011ec48c97271d2c20f9b928fe2270d6fb863d51738b48eeee314a7cc8ab932164548e526ae' +
  '90224368517acfeabd6bb3732bc0e9da99832b61ca01b6de56244a9e88d5f9b37973f622a43d14a6599b1f654cb45a74' +
  'e355a5';

test('reads the upstream AES-GCM legacy compatibility vector', async () => {
  const t = createAesGcmTransformer(Buffer.from('snorlax_awesomes'));
  const r = await t.transformFromStorage(Buffer.from(GCM_LEGACY, 'hex'), bamboo);
  assert.equal(r.data.toString('utf8'), PANDAS);
  await assert.rejects(
    t.transformFromStorage(Buffer.from(GCM_LEGACY, 'hex'), {
      authenticatedData: Buffer.from('bamboO'),
    }),
    { code: 'ERR_DECRYPTION_FAILED' },
  );
});

test('derives the upstream HKDF-Expand key from the seed and info', () => {
  const info = Buffer.from(SEED_DATA, 'hex').subarray(0, 32);
  assert.equal(deriveSeedKey(Buffer.from(SEED, 'hex'), info).toString('hex'), SEED_DERIVED_KEY);
});

test('reads the upstream extended-nonce seed vector', async () => {
  const t = createAesGcmSeedTransformer(Buffer.from(SEED, 'hex'));
  const r = await t.transformFromStorage(Buffer.from(SEED_DATA, 'hex'), bamboo);
  assert.equal(r.data.toString('utf8'), PANDAS);
});

test('reads the upstream seed vector wrapped as a whole kms v2 EncryptedObject', async () => {
  const object = EncryptedObject.encode({
    encryptedData: Buffer.from(SEED_DATA, 'hex'),
    keyID: 'k1',
    encryptedDEKSource: Buffer.from('wrapped-seed'),
    encryptedDEKSourceType: 1,
  });
  const t = createKmsV2Transformer({
    name: 'v',
    allowReadWithoutStatus: true,
    service: {
      status: async () => ({ version: 'v2', healthz: 'ok', keyID: 'k1' }),
      encrypt: async () => {
        throw new Error('not used');
      },
      decrypt: async (req) => {
        assert.equal(Buffer.from(req.ciphertext).toString(), 'wrapped-seed');
        assert.equal(req.keyID, 'k1');
        return Buffer.from(SEED, 'hex');
      },
    },
  });
  const r = await t.transformFromStorage(object, bamboo);
  assert.deepEqual(r, { data: Buffer.from(PANDAS), stale: false });
});

test('reads the NaCl crypto_secretbox vector laid out as a secretbox value', async () => {
  const t = createSecretboxTransformer(Buffer.from(NACL_KEY, 'hex'));
  const stored = Buffer.concat([Buffer.from(NACL_NONCE, 'hex'), Buffer.from(NACL_BOX, 'hex')]);
  const r = await t.transformFromStorage(stored, bamboo);
  assert.equal(r.data.toString('hex'), NACL_MESSAGE);
  const written = await createSecretboxTransformer(Buffer.from(NACL_KEY, 'hex'), {
    random: () => Buffer.from(NACL_NONCE, 'hex'),
  }).transformToStorage(Buffer.from(NACL_MESSAGE, 'hex'), bamboo);
  assert.deepEqual(written, stored);
});
