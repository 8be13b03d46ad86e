// describeStoredValue: the format, key name, kms name and key id of a stored value, without decrypting.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { describeStoredValue } from '../../src/transformers/describe.js';
import { createKeyedProvider, createPrefixTransformers } from '../../src/transformers/prefix.js';
import { createKmsV1Transformer } from '../../src/transformers/kms-v1.js';
import { createKmsV2Transformer } from '../../src/transformers/kms-v2.js';
import { EncryptedObject } from '../../src/proto/encrypted-object.js';
import { createFakeKmsV1, createFakeKmsV2, ctx } from './helpers.js';

const VALUE = Buffer.from('k8s\x00abc', 'latin1');

test('describes plaintext and how it is encoded', () => {
  assert.deepEqual(describeStoredValue(VALUE), { format: 'identity', encoding: 'protobuf' });
  assert.deepEqual(describeStoredValue(Buffer.from('{"a":1}')), {
    format: 'identity',
    encoding: 'json',
  });
  assert.deepEqual(describeStoredValue(Buffer.alloc(0)), { format: 'identity', encoding: 'other' });
});

test('describes aescbc, aesgcm and secretbox values with their key name', async () => {
  for (const provider of ['aescbc', 'aesgcm', 'secretbox'] as const) {
    const t = createPrefixTransformers([
      createKeyedProvider(provider, [{ name: 'key-2026', secret: Buffer.alloc(32, 7) }]),
    ]);
    const stored = await t.transformToStorage(VALUE, ctx());
    assert.deepEqual(describeStoredValue(stored), {
      format: provider,
      keyName: 'key-2026',
      prefix: `k8s:enc:${provider}:v1:key-2026:`,
    });
    const info = describeStoredValue(
      stored.subarray(0, `k8s:enc:${provider}:v1:key-2026:`.length + 3),
    );
    assert.equal(info.format, provider);
    assert.equal(info.problems?.length, 1);
  }
});

test('describes kms v1 values with their provider name and encrypted DEK length', async () => {
  const t = createKmsV1Transformer({ name: 'vault', service: createFakeKmsV1(), cacheSize: 10 });
  const stored = await createPrefixTransformers([t]).transformToStorage(VALUE, ctx());
  assert.deepEqual(describeStoredValue(stored), {
    format: 'kms-v1',
    kmsName: 'vault',
    prefix: 'k8s:enc:kms:v1:vault:',
    encryptedDEKLength: 60,
  });
  assert.deepEqual(describeStoredValue(Buffer.from('k8s:enc:kms:v1:vault:\x00')).problems, [
    'no encrypted DEK length',
  ]);
  assert.deepEqual(describeStoredValue(Buffer.from('k8s:enc:kms:v1:vault:\x00\x09abc')).problems, [
    'shorter than its encrypted DEK length',
  ]);
});

test('describes kms v2 values with key id, source type and annotation keys', async () => {
  const kms = createFakeKmsV2();
  kms.status_.keyID = 'arn:aws:kms:eu-west-1:1:key/abc';
  kms.annotations = { 'b.example.io': Buffer.from('x'), 'a.example.io': Buffer.from('y') };
  const t = createKmsV2Transformer({ name: 'aws', service: kms });
  await t.refreshStatus();
  const stored = await createPrefixTransformers([t]).transformToStorage(VALUE, ctx());
  assert.deepEqual(describeStoredValue(stored), {
    format: 'kms-v2',
    kmsName: 'aws',
    prefix: 'k8s:enc:kms:v2:aws:',
    keyID: 'arn:aws:kms:eu-west-1:1:key/abc',
    dekSourceType: 1,
    annotationKeys: ['a.example.io', 'b.example.io'],
  });
  const type0 = Buffer.concat([
    Buffer.from('k8s:enc:kms:v2:aws:'),
    EncryptedObject.encode({
      encryptedData: Buffer.alloc(40),
      keyID: 'old',
      encryptedDEKSource: Buffer.alloc(8),
    }),
  ]);
  assert.equal(describeStoredValue(type0).dekSourceType, 0);
});

test('reports problems instead of throwing on damaged or foreign values', () => {
  const garbage = describeStoredValue(Buffer.from('k8s:enc:kms:v2:aws:\x0a\xff'));
  assert.equal(garbage.format, 'kms-v2');
  assert.match(garbage.problems![0]!, /^EncryptedObject does not decode/);
  const invalid = describeStoredValue(
    Buffer.concat([Buffer.from('k8s:enc:kms:v2:aws:'), EncryptedObject.encode({ keyID: 'k' })]),
  );
  assert.deepEqual(invalid.problems, ['encrypted data is empty', 'encrypted DEK source is empty']);
  assert.deepEqual(describeStoredValue(Buffer.from('k8s:enc:aescbc:v1:')), {
    format: 'aescbc',
    prefix: 'k8s:enc:aescbc:v1:',
    problems: ['no key name after the provider prefix'],
  });
  assert.deepEqual(describeStoredValue(Buffer.from('k8s:enc:rot13:v1:x:abc')), {
    format: 'unknown-encrypted',
    prefix: 'k8s:enc:rot13:',
    problems: ['no known provider prefix after k8s:enc:'],
  });
});
