// Stability of the stored bytes atrest writes: "changing this makes stored data unreadable".
// The recorded vectors (atrest-golden.ts, with their provenance) must still decrypt, and the same inputs
// must still produce the very same bytes.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { RECORDED_GOLDEN } from './atrest-golden.js';
import { GOLDEN_CASES, GOLDEN_ETCD_KEY, GOLDEN_PLAINTEXT } from './golden-setup.js';
import { describeStoredValue } from '../../src/transformers/describe.js';

const context = { authenticatedData: Buffer.from(GOLDEN_ETCD_KEY, 'utf8') };

test('every golden case has a recorded vector and every recorded vector a case', () => {
  assert.deepEqual(GOLDEN_CASES.map((c) => c.name).sort(), Object.keys(RECORDED_GOLDEN).sort());
});

for (const c of GOLDEN_CASES) {
  test(`changing this makes stored data unreadable: reads the recorded ${c.name} value`, async () => {
    const t = await c.make();
    const recorded = Buffer.from(RECORDED_GOLDEN[c.name]!, 'hex');
    const r = await t.transformFromStorage(recorded, context);
    assert.equal(r.data.toString('utf8'), GOLDEN_PLAINTEXT.toString('utf8'));
    assert.equal(r.stale, c.name === 'kms-v1-legacy-cbc');
  });

  test(`changing this makes stored data unreadable: writes the recorded ${c.name} bytes again`, async () => {
    const t = await c.make();
    const written = await t.transformToStorage(GOLDEN_PLAINTEXT, context);
    assert.equal(written.toString('hex'), RECORDED_GOLDEN[c.name]);
  });
}

test('the recorded kms v2 value is described without decrypting it', () => {
  const info = describeStoredValue(Buffer.from(RECORDED_GOLDEN['kms-v2']!, 'hex'));
  assert.deepEqual(info, {
    format: 'kms-v2',
    kmsName: 'golden',
    prefix: 'k8s:enc:kms:v2:golden:',
    keyID: 'golden-key-1',
    dekSourceType: 1,
    annotationKeys: ['version.encryption.remote.io'],
  });
});
