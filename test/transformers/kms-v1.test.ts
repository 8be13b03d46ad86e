// kms v1: one Encrypt per write, the DEK cache, legacy CBC payloads, plugin failures, the health check.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { AtrestError } from '../../src/errors.js';
import { createKmsV1Transformer } from '../../src/transformers/kms-v1.js';
import { createPrefixTransformers } from '../../src/transformers/prefix.js';
import { createFakeKmsV1, ctx, manualClock } from './helpers.js';

const VALUE = Buffer.from('k8s\x00some protobuf bytes of a secret', 'latin1');

test('every write generates a new DEK and calls Encrypt exactly once', async () => {
  const kms = createFakeKmsV1();
  const t = createKmsV1Transformer({ name: 'p', service: kms, cacheSize: 1000 });
  const a = await t.transformToStorage(VALUE, ctx());
  const b = await t.transformToStorage(VALUE, ctx());
  assert.equal(kms.calls.encrypt, 2);
  const edekA = a.subarray(2, 2 + a.readUInt16BE(0));
  const edekB = b.subarray(2, 2 + b.readUInt16BE(0));
  assert.notDeepEqual(edekA, edekB);
  assert.equal(t.cachedDEKs(), 2);
});

test('stores [u16be length][EDEK][nonce 12][ct][tag 16] after its prefix', async () => {
  const kms = createFakeKmsV1();
  const t = createKmsV1Transformer({ name: 'my-kms', service: kms, cacheSize: 10 });
  assert.deepEqual(t.prefix, Buffer.from('k8s:enc:kms:v1:my-kms:'));
  assert.equal(t.transformer, t);
  const stored = await t.transformToStorage(VALUE, ctx());
  const l = stored.readUInt16BE(0);
  assert.equal(l, 12 + 32 + 16); // the fake wraps a 32-byte DEK with AES-GCM
  assert.equal(stored.length, 2 + l + 12 + VALUE.length + 16);
});

test('reads through the DEK cache keyed by the EDEK, calling Decrypt once per EDEK', async () => {
  const kms = createFakeKmsV1();
  const writer = createKmsV1Transformer({ name: 'p', service: kms, cacheSize: 1000 });
  const stored = await writer.transformToStorage(VALUE, ctx());
  const reader = createKmsV1Transformer({ name: 'p', service: kms, cacheSize: 1000 });
  for (let i = 0; i < 3; i++) {
    assert.deepEqual(await reader.transformFromStorage(stored, ctx()), {
      data: VALUE,
      stale: false,
    });
  }
  assert.equal(kms.calls.decrypt, 1);
  // The writer cached its own DEK on write.
  await writer.transformFromStorage(stored, ctx());
  assert.equal(kms.calls.decrypt, 1);
});

test('a negative cache size disables the cache: every read calls Decrypt', async () => {
  const kms = createFakeKmsV1();
  const t = createKmsV1Transformer({ name: 'p', service: kms, cacheSize: -1 });
  const stored = await t.transformToStorage(VALUE, ctx());
  await t.transformFromStorage(stored, ctx());
  await t.transformFromStorage(stored, ctx());
  assert.equal(kms.calls.decrypt, 2);
  assert.equal(t.cachedDEKs(), 0);
  assert.throws(
    () => createKmsV1Transformer({ name: 'p', service: kms, cacheSize: 0 }),
    RangeError,
  );
});

test('the cache keeps only the most recently used cacheSize DEKs', async () => {
  const kms = createFakeKmsV1();
  const writer = createKmsV1Transformer({ name: 'p', service: kms, cacheSize: -1 });
  const values = [];
  for (let i = 0; i < 3; i++) values.push(await writer.transformToStorage(VALUE, ctx()));
  const reader = createKmsV1Transformer({ name: 'p', service: kms, cacheSize: 2 });
  const before = kms.calls.decrypt;
  await reader.transformFromStorage(values[0]!, ctx());
  await reader.transformFromStorage(values[1]!, ctx());
  await reader.transformFromStorage(values[0]!, ctx()); // hit; values[1] is now least recent
  await reader.transformFromStorage(values[2]!, ctx()); // evicts values[1]
  await reader.transformFromStorage(values[0]!, ctx()); // still cached
  assert.equal(kms.calls.decrypt - before, 3);
  await reader.transformFromStorage(values[1]!, ctx());
  assert.equal(kms.calls.decrypt - before, 4);
  assert.equal(reader.cachedDEKs(), 2);
});

test('reads values written by 1.10–1.24 (CBC payload) and reports them stale', async () => {
  const kms = createFakeKmsV1();
  const legacy = createKmsV1Transformer({
    name: 'p',
    service: kms,
    cacheSize: 10,
    legacyCbcWrites: true,
  });
  const stored = await legacy.transformToStorage(VALUE, ctx('/registry/secrets/x/y'));
  const l = stored.readUInt16BE(0);
  assert.equal(stored.length, 2 + l + 16 + 16 * Math.ceil((VALUE.length + 1) / 16));
  const current = createKmsV1Transformer({ name: 'p', service: kms, cacheSize: 10 });
  // CBC has no AAD: the etcd key does not matter for these.
  const r = await current.transformFromStorage(stored, ctx('/registry/other'));
  assert.deepEqual(r, { data: VALUE, stale: true });
  // Through a prefix list at index 0 the inner staleness is kept.
  const list = createPrefixTransformers([current]);
  const viaList = await list.transformFromStorage(Buffer.concat([current.prefix, stored]), ctx());
  assert.equal(viaList.stale, true);
});

test('a plugin failure on write or read becomes ERR_KMS_CALL_FAILED without leaking data', async () => {
  const kms = createFakeKmsV1();
  const t = createKmsV1Transformer({ name: 'p', service: kms, cacheSize: -1 });
  const stored = await t.transformToStorage(VALUE, ctx());
  kms.failing = true;
  await assert.rejects(t.transformToStorage(VALUE, ctx()), (err: unknown) => {
    assert.ok(err instanceof AtrestError);
    assert.equal(err.code, 'ERR_KMS_CALL_FAILED');
    assert.match(err.message, /^failed to encrypt DEK, error: fake KMS v1 is down$/);
    return true;
  });
  await assert.rejects(t.transformFromStorage(stored, ctx()), {
    code: 'ERR_KMS_CALL_FAILED',
    message: 'failed to decrypt DEK, error: fake KMS v1 is down',
  });
});

test('reads fail cleanly when the length prefix runs past the value', async () => {
  const t = createKmsV1Transformer({ name: 'p', service: createFakeKmsV1(), cacheSize: 10 });
  for (const bad of [Buffer.alloc(0), Buffer.from([0]), Buffer.from([0, 5, 1, 2, 3, 4])]) {
    await assert.rejects(t.transformFromStorage(bad, ctx()), {
      code: 'ERR_FORMAT_TRUNCATED',
      message:
        'invalid data encountered by envelope transformer: failed to read uint16 length prefixed data',
    });
  }
});

test('refuses a plugin whose DEK is not an AES key', async () => {
  const t = createKmsV1Transformer({
    name: 'p',
    service: { encrypt: async () => Buffer.from('edek'), decrypt: async () => Buffer.alloc(7) },
    cacheSize: 10,
  });
  const stored = Buffer.concat([Buffer.from([0, 4]), Buffer.from('edek'), Buffer.alloc(40)]);
  await assert.rejects(t.transformFromStorage(stored, ctx()), { code: 'ERR_KMS_RESPONSE_INVALID' });
});

test('the health check encrypts and decrypts "ping" and caches the result 20 s / 3 s', async () => {
  const kms = createFakeKmsV1();
  const clock = manualClock();
  const t = createKmsV1Transformer({ name: 'p', service: kms, cacheSize: 10, now: clock.now });
  assert.equal((await t.healthz()).ok, true);
  clock.advance(19_000);
  await t.healthz();
  assert.equal(kms.calls.encrypt, 1);
  clock.advance(1_000);
  kms.failing = true;
  const bad = await t.healthz();
  assert.equal(bad.ok, false);
  assert.match(
    bad.error!.message,
    /^failed to perform encrypt section of the healthz check for KMS Provider p/,
  );
  kms.failing = false;
  clock.advance(2_999);
  assert.equal((await t.healthz()).ok, false);
  clock.advance(1);
  assert.equal((await t.healthz()).ok, true);
});

test('with legacyCbcReads off, CBC payloads are refused', async () => {
  const kms = createFakeKmsV1();
  const legacy = createKmsV1Transformer({
    name: 'p',
    service: kms,
    cacheSize: 10,
    legacyCbcWrites: true,
  });
  const stored = await legacy.transformToStorage(VALUE, ctx());
  const strict = createKmsV1Transformer({
    name: 'p',
    service: kms,
    cacheSize: 10,
    legacyCbcReads: false,
  });
  await assert.rejects(strict.transformFromStorage(stored, ctx()), {
    code: 'ERR_DECRYPTION_FAILED',
  });
});

test('concurrent reads of values sharing an EDEK make one Decrypt call', async () => {
  const kms = createFakeKmsV1();
  const writer = createKmsV1Transformer({ name: 'p', service: kms, cacheSize: 10 });
  const stored = await writer.transformToStorage(VALUE, ctx());
  const reader = createKmsV1Transformer({ name: 'p', service: kms, cacheSize: 10 });
  const results = await Promise.all(
    Array.from({ length: 8 }, () => reader.transformFromStorage(stored, ctx())),
  );
  assert.ok(results.every((r) => r.data.equals(VALUE)));
  assert.equal(kms.calls.decrypt, 1);
});
