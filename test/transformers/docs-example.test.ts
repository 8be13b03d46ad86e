// The example in docs/formats.md, run as written (with an in-process KMS v2 service and a recorded
// old aescbc value).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  createIdentityProvider,
  createKeyedProvider,
  createKmsV2Transformer,
  createPrefixTransformers,
} from '../../src/transformers/index.js';
import { createFakeKmsV2 } from './helpers.js';

test('the docs/formats.md example writes with kms v2 and still reads aescbc and plaintext as stale', async () => {
  const myKmsV2Client = createFakeKmsV2();
  const oldKey = Buffer.alloc(32, 9);
  const plaintext = Buffer.from('k8s\x00secret', 'latin1');

  const kms = createKmsV2Transformer({ name: 'vault', service: myKmsV2Client });
  await kms.refreshStatus();
  const poll = kms.startPolling();

  const secrets = createPrefixTransformers([
    kms,
    createKeyedProvider('aescbc', [{ name: 'key1', secret: oldKey }]),
    createIdentityProvider(),
  ]);
  const ctx = { authenticatedData: Buffer.from('/registry/secrets/default/db-password') };
  const stored = await secrets.transformToStorage(plaintext, ctx);
  const { data, stale } = await secrets.transformFromStorage(stored, ctx);
  poll.stop();

  assert.ok(stored.subarray(0, 21).equals(Buffer.from('k8s:enc:kms:v2:vault:')));
  assert.deepEqual({ data, stale }, { data: plaintext, stale: false });
  const old = await createPrefixTransformers([
    createKeyedProvider('aescbc', [{ name: 'key1', secret: oldKey }]),
  ]).transformToStorage(plaintext, ctx);
  assert.deepEqual(await secrets.transformFromStorage(old, ctx), { data: plaintext, stale: true });
  assert.deepEqual(await secrets.transformFromStorage(plaintext, ctx), {
    data: plaintext,
    stale: true,
  });
});
