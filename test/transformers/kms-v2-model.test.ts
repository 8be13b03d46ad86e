// A model-based property test of the kms v2 state machine: random sequences of Status answers, plugin
// outages, clock jumps and writes, checked against a few lines that restate the upstream v2 state machine (k8s.io/apiserver encryptionconfig/config.go).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { EncryptedObject } from '../../src/proto/encrypted-object.js';
import { createKmsV2Transformer } from '../../src/transformers/kms-v2.js';
import { createFakeKmsV2, ctx, manualClock } from './helpers.js';

type Step =
  | { kind: 'status'; keyID: string; healthy: boolean }
  | { kind: 'status-down' }
  | { kind: 'advance'; ms: number }
  | { kind: 'write' }
  | { kind: 'read-first' };

const stepArb: fc.Arbitrary<Step> = fc.oneof(
  fc.record({
    kind: fc.constant('status' as const),
    keyID: fc.constantFrom('k-a', 'k-b', 'k-c'),
    healthy: fc.boolean(),
  }),
  fc.constant({ kind: 'status-down' as const }),
  fc.record({
    kind: fc.constant('advance' as const),
    // Exact window lengths too, so the "<= 3 minutes" boundary is hit, not only crossed.
    ms: fc.oneof(fc.integer({ min: 0, max: 5 * 60_000 }), fc.constantFrom(1, 60_000, 3 * 60_000)),
  }),
  fc.constant({ kind: 'write' as const }),
  fc.constant({ kind: 'read-first' as const }),
);

test('Encrypt only on a key_id change; writes only within 3 minutes of the last good Status', async () => {
  await fc.assert(
    fc.asyncProperty(fc.array(stepArb, { maxLength: 40 }), async (steps) => {
      const kms = createFakeKmsV2();
      const clock = manualClock();
      const t = createKmsV2Transformer({ name: 'm', service: kms, now: clock.now });
      const model = { keyID: undefined as string | undefined, expiresAt: 0, encrypts: 0 };
      let first: { stored: Buffer; keyID: string } | undefined;
      for (const step of steps) {
        switch (step.kind) {
          case 'status': {
            kms.statusFails = false;
            kms.status_ = {
              version: 'v2',
              healthz: step.healthy ? 'ok' : 'sick',
              keyID: step.keyID,
            };
            const h = await t.refreshStatus();
            assert.equal(h.ok, step.healthy);
            if (model.keyID !== step.keyID) model.encrypts++;
            model.keyID = step.keyID;
            model.expiresAt = clock.now() + 3 * 60_000;
            break;
          }
          case 'status-down':
            kms.statusFails = true;
            assert.equal((await t.refreshStatus()).ok, false);
            break;
          case 'advance':
            clock.advance(step.ms);
            break;
          case 'write': {
            const allowed = model.keyID !== undefined && clock.now() <= model.expiresAt;
            try {
              const stored = await t.transformToStorage(Buffer.from('v'), ctx());
              assert.ok(allowed, 'write accepted outside the window');
              assert.equal(EncryptedObject.decode(stored).keyID, model.keyID);
              first ??= { stored, keyID: model.keyID! };
            } catch (err) {
              assert.ok(!allowed, `write refused inside the window: ${String(err)}`);
              assert.equal((err as { code?: string }).code, 'ERR_KMS_STATE');
            }
            break;
          }
          case 'read-first':
            if (first) {
              const r = await t.transformFromStorage(first.stored, ctx());
              assert.equal(r.stale, first.keyID !== model.keyID);
            }
            break;
        }
        assert.equal(kms.calls.encrypt, model.encrypts);
        assert.equal(t.currentState()?.keyID, model.keyID);
      }
    }),
    { numRuns: 200 },
  );
});
