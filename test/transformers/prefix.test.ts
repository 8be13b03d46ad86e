// Prefix routing as kube-apiserver does it: who writes, who reads, what is stale, which errors come back.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { AtrestError, FormatInvalidError } from '../../src/errors.js';
import {
  createIdentityProvider,
  createKeyedProvider,
  createPrefixTransformers,
  ProvidersFailedError,
} from '../../src/transformers/prefix.js';
import { createIdentityTransformer } from '../../src/transformers/identity.js';
import type { Transformer } from '../../src/transformers/transformer.js';
import { ctx, deterministicRandom } from './helpers.js';

const rnd = deterministicRandom('prefix-tests');
const K1 = rnd(32);
const K2 = rnd(32);
const VALUE = Buffer.from('{"kind":"Secret"}');

async function write(t: Transformer, v = VALUE): Promise<Buffer> {
  return t.transformToStorage(v, ctx());
}

test('writes with the first provider and its first key', async () => {
  const t = createPrefixTransformers([
    createKeyedProvider('aesgcm', [
      { name: 'new', secret: K1 },
      { name: 'old', secret: K2 },
    ]),
    createIdentityProvider(),
  ]);
  const stored = await write(t);
  assert.ok(stored.subarray(0, 22).equals(Buffer.from('k8s:enc:aesgcm:v1:new:')));
  assert.deepEqual(await t.transformFromStorage(stored, ctx()), { data: VALUE, stale: false });
});

test('reading with a key that is not the first one is stale', async () => {
  const oldOnly = createPrefixTransformers([
    createKeyedProvider('secretbox', [{ name: 'old', secret: K2 }]),
  ]);
  const rotated = createPrefixTransformers([
    createKeyedProvider('secretbox', [
      { name: 'new', secret: K1 },
      { name: 'old', secret: K2 },
    ]),
  ]);
  const stored = await write(oldOnly);
  assert.deepEqual(await rotated.transformFromStorage(stored, ctx()), { data: VALUE, stale: true });
});

test('reading with a provider that is not the first one is stale', async () => {
  const cbc = createKeyedProvider('aescbc', [{ name: 'k', secret: K1 }]);
  const gcm = createKeyedProvider('aesgcm', [{ name: 'k', secret: K2 }]);
  const stored = await write(createPrefixTransformers([cbc]));
  const t = createPrefixTransformers([gcm, cbc]);
  assert.deepEqual(await t.transformFromStorage(stored, ctx()), { data: VALUE, stale: true });
});

test('with identity first, plaintext is fresh and encrypted values fall through, stale', async () => {
  const gcm = createKeyedProvider('aesgcm', [{ name: 'k', secret: K1 }]);
  const encrypted = await write(createPrefixTransformers([gcm]));
  const t = createPrefixTransformers([createIdentityProvider(), gcm]);
  assert.deepEqual(await write(t), VALUE);
  assert.deepEqual(await t.transformFromStorage(VALUE, ctx()), { data: VALUE, stale: false });
  assert.deepEqual(await t.transformFromStorage(encrypted, ctx()), { data: VALUE, stale: true });
});

test('with identity last, plaintext reads are stale and encrypted ones fresh', async () => {
  const gcm = createKeyedProvider('aesgcm', [{ name: 'k', secret: K1 }]);
  const t = createPrefixTransformers([gcm, createIdentityProvider()]);
  const encrypted = await write(t);
  assert.deepEqual(await t.transformFromStorage(VALUE, ctx()), { data: VALUE, stale: true });
  assert.deepEqual(await t.transformFromStorage(encrypted, ctx()), { data: VALUE, stale: false });
});

test('overlapping prefixes fall through: a failing provider is remembered, the next one is tried', async () => {
  const first = createKeyedProvider('aesgcm', [{ name: 'k', secret: K1 }], {
    description: 'first',
  });
  const second = createKeyedProvider('aesgcm', [{ name: 'k', secret: K2 }], {
    description: 'second',
  });
  const stored = await write(createPrefixTransformers([second]));
  const t = createPrefixTransformers([first, second]);
  assert.deepEqual(await t.transformFromStorage(stored, ctx()), { data: VALUE, stale: true });
});

test('when every matching provider fails, the error lists each attempt with its description', async () => {
  const a = createKeyedProvider('aesgcm', [{ name: 'k', secret: K1 }], {
    description: 'providers[0]',
  });
  const b = createKeyedProvider('aesgcm', [{ name: 'k', secret: K2 }], {
    description: 'providers[1]',
  });
  const foreign = await write(
    createPrefixTransformers([createKeyedProvider('aesgcm', [{ name: 'k', secret: rnd(32) }])]),
  );
  const t = createPrefixTransformers([a, createIdentityProvider(), b]);
  await assert.rejects(t.transformFromStorage(foreign, ctx()), (err: unknown) => {
    assert.ok(err instanceof ProvidersFailedError);
    assert.equal(err.code, 'ERR_DECRYPTION_FAILED');
    assert.deepEqual(
      err.attempts.map((x) => x.description),
      ['providers[0] key "k"', 'providers[1] key "k"'],
    );
    assert.equal(
      err.message,
      '[providers[0] key "k": decryption failed, providers[1] key "k": decryption failed]',
    );
    return true;
  });
});

test('a single failure keeps its own code and names its provider and key', async () => {
  const t = createPrefixTransformers([createKeyedProvider('aescbc', [{ name: 'k', secret: K1 }])]);
  const stored = await write(t);
  await assert.rejects(
    t.transformFromStorage(stored.subarray(0, stored.length - 1), ctx()),
    (err: unknown) => {
      assert.ok(err instanceof ProvidersFailedError);
      assert.equal(err.code, 'ERR_FORMAT_MALFORMED');
      assert.equal(
        err.message,
        'aescbc key "k": the stored data is not a multiple of the block size',
      );
      assert.equal(err.attempts.length, 1);
      return true;
    },
  );
});

test('an unknown key name gives the per-provider no-matching-key error', async () => {
  const writer = createPrefixTransformers([
    createKeyedProvider('secretbox', [{ name: 'gone', secret: K1 }]),
  ]);
  const t = createPrefixTransformers([
    createKeyedProvider('secretbox', [{ name: 'k', secret: K1 }]),
  ]);
  await assert.rejects(t.transformFromStorage(await write(writer), ctx()), (err: unknown) => {
    assert.ok(err instanceof ProvidersFailedError);
    assert.equal(err.code, 'ERR_FORMAT_NO_MATCHING_PROVIDER');
    assert.equal(
      err.message,
      'secretbox: no matching key was found for the provided Secretbox transformer',
    );
    return true;
  });
  const aes = createPrefixTransformers([
    createKeyedProvider('aesgcm', [{ name: 'k', secret: K1 }]),
  ]);
  const aesWriter = createPrefixTransformers([
    createKeyedProvider('aesgcm', [{ name: 'x', secret: K1 }]),
  ]);
  await assert.rejects(aes.transformFromStorage(await write(aesWriter), ctx()), {
    message: 'aesgcm: no matching key was found for the provided AES transformer',
  });
});

test('a value no prefix matches gives the no-match error (identity failures stay silent)', async () => {
  const t = createPrefixTransformers([
    createIdentityProvider(),
    createKeyedProvider('aesgcm', [{ name: 'k', secret: K1 }]),
  ]);
  await assert.rejects(
    t.transformFromStorage(Buffer.from('k8s:enc:unknown:v1:x'), ctx()),
    (err: unknown) => {
      assert.ok(err instanceof FormatInvalidError);
      assert.equal(err.code, 'ERR_FORMAT_NO_MATCHING_PROVIDER');
      assert.equal(err.message, 'no matching prefix found');
      return true;
    },
  );
  const custom = createPrefixTransformers(
    [createKeyedProvider('aesgcm', [{ name: 'k', secret: K1 }])],
    () => new AtrestError('ERR_FORMAT_NO_MATCHING_PROVIDER', 'custom'),
  );
  await assert.rejects(custom.transformFromStorage(VALUE, ctx()), { message: 'custom' });
});

test('identity writes the value unchanged and refuses to read encrypted data', async () => {
  const id = createIdentityTransformer();
  assert.deepEqual(await id.transformToStorage(VALUE, ctx()), VALUE);
  assert.deepEqual(await id.transformFromStorage(VALUE, ctx()), { data: VALUE, stale: false });
  await assert.rejects(id.transformFromStorage(Buffer.from('k8s:enc:aescbc:v1:k:xx'), ctx()), {
    code: 'ERR_FORMAT_PREFIX',
    message: 'identity transformer tried to read encrypted data',
  });
  // Only the full 8-byte reserved prefix counts.
  const almost = Buffer.from('k8s:enc');
  assert.deepEqual((await id.transformFromStorage(almost, ctx())).data, almost);
});

test('keyed providers refuse keys of the wrong size as programmer errors', () => {
  assert.throws(
    () => createKeyedProvider('aesgcm', [{ name: 'k', secret: Buffer.alloc(20) }]),
    RangeError,
  );
  assert.throws(
    () => createKeyedProvider('secretbox', [{ name: 'k', secret: Buffer.alloc(16) }]),
    RangeError,
  );
  assert.throws(() => createKeyedProvider('aescbc', []), TypeError);
  assert.throws(() => createPrefixTransformers([]), TypeError);
});

test('entries without a description are named by their position and prefix', async () => {
  const { createAesGcmTransformer } = await import('../../src/transformers/aes-gcm.js');
  const entry = (key: Buffer) => ({
    prefix: Buffer.from('custom:\n'),
    transformer: createAesGcmTransformer(key),
  });
  const stored = await write(createPrefixTransformers([entry(K2)]));
  const t = createPrefixTransformers([entry(K1)]);
  await assert.rejects(t.transformFromStorage(stored, ctx()), {
    message: 'provider 0 ("custom:?"): decryption failed',
  });
});

test('identity reads return a view of the stored bytes, not a copy (through the prefix list too)', async () => {
  const stored = Buffer.alloc(64 * 1024, 0x7b);
  const direct = await createIdentityTransformer().transformFromStorage(stored, ctx());
  assert.equal(direct.data.buffer, stored.buffer);
  assert.equal(direct.data.byteOffset, stored.byteOffset);
  assert.equal(direct.data.length, stored.length);
  const listed = await createPrefixTransformers([createIdentityProvider()]).transformFromStorage(stored, ctx());
  assert.equal(listed.data.buffer, stored.buffer);
  assert.deepEqual(listed.data, stored);
  // a plain Uint8Array in gives a Buffer view out
  const u8 = new Uint8Array(stored.buffer, 16, 32);
  const fromU8 = await createIdentityTransformer().transformFromStorage(u8, ctx());
  assert.ok(Buffer.isBuffer(fromU8.data));
  assert.equal(fromU8.data.buffer, stored.buffer);
  assert.equal(fromU8.data.byteOffset, 16);
});
