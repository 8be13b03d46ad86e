// The recovery layer around a real keyring backend: v1 wraps carry a container with the seal, v2
// wraps an annotation; the plugin still unwraps with the KEK (with sealing on or off), and the
// break-glass services open the seals without any key backend. Tampering and missing seals are
// reported, never turned into wrong plaintext.

import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createKeyring, writeKeyringFile } from '../../src/backends/keyring-file.js';
import { createKeyringBackend } from '../../src/backends/keyring.js';
import { DecryptionFailedError } from '../../src/errors.js';
import { withRecoveryLayer } from '../../src/recovery/backend.js';
import { RECOVERY_ANNOTATION, looksLikeContainer, parseContainer, v1CarriesSeal } from '../../src/recovery/container.js';
import { generateRecoveryKey } from '../../src/recovery/seal.js';
import { createRecoveryV1Service, createRecoveryV2Service } from '../../src/recovery/services.js';

const dir = await mkdtemp(join(tmpdir(), 'atrest-recovery-layer-'));
after(() => rm(dir, { recursive: true, force: true }));
const path = join(dir, 'keyring.json');
await writeKeyringFile(path, createKeyring({ now: new Date(), random: randomBytes }), { exclusive: true, random: randomBytes });

describe('recovery layer on the keyring backend', async () => {
  const recovery = generateRecoveryKey();
  const inner = await createKeyringBackend({ path });
  const sealing = withRecoveryLayer(inner, { publicKey: recovery });
  const readOnly = withRecoveryLayer(await createKeyringBackend({ path }), {});
  after(() => Promise.all([sealing.close(), readOnly.close()]));
  const dek = randomBytes(32);

  it('kms v1: a container with the KEK wrap and a seal; the KEK and the recovery key both unwrap it', async () => {
    const w = await sealing.wrap({ plaintext: dek });
    assert.ok(looksLikeContainer(w.ciphertext));
    assert.ok(v1CarriesSeal(w.ciphertext));
    assert.equal(w.annotations, undefined);
    assert.deepEqual(await sealing.unwrap({ ciphertext: w.ciphertext }), dek);
    assert.deepEqual(await readOnly.unwrap({ ciphertext: w.ciphertext }), dek, 'sealing switched off still reads');
    assert.deepEqual(await createRecoveryV1Service([recovery]).decrypt(w.ciphertext), dek);
  });

  it('kms v2: the seal travels in the recovery.atrest.io annotation; the ciphertext is the backend\'s', async () => {
    const w = await sealing.wrap({ plaintext: dek, annotationsAllowed: true });
    assert.ok(!looksLikeContainer(w.ciphertext));
    const annotations = w.annotations ?? {};
    assert.ok(RECOVERY_ANNOTATION in annotations);
    assert.deepEqual(await sealing.unwrap({ ciphertext: w.ciphertext, keyID: w.keyID, annotations }), dek);
    assert.deepEqual(await readOnly.unwrap({ ciphertext: w.ciphertext, keyID: w.keyID, annotations }), dek);
    const v2 = createRecoveryV2Service([recovery]);
    assert.deepEqual(await v2.decrypt({ ciphertext: w.ciphertext, keyID: w.keyID, annotations, uid: 'u' }), dek);
    // The seal is bound to the key id and to the wrapped seed it came with.
    await assert.rejects(v2.decrypt({ ciphertext: w.ciphertext, keyID: 'other', annotations, uid: 'u' }), DecryptionFailedError);
    const other = await sealing.wrap({ plaintext: dek, annotationsAllowed: true });
    await assert.rejects(v2.decrypt({ ciphertext: other.ciphertext, keyID: w.keyID, annotations, uid: 'u' }), DecryptionFailedError);
  });

  it('hands the caller\'s signal on without reading it (the plugin creates it on first read), and passes it when read', async () => {
    const w = await sealing.wrap({ plaintext: dek, annotationsAllowed: true });
    const controller = new AbortController();
    let reads = 0;
    const request = {
      ciphertext: w.ciphertext,
      keyID: w.keyID,
      annotations: w.annotations ?? {},
      get signal() {
        reads++;
        return controller.signal;
      },
    };
    assert.deepEqual(await sealing.unwrap(request), dek);
    assert.deepEqual(await readOnly.unwrap(request), dek);
    assert.equal(reads, 0, 'the keyring never needs the signal, so nothing may read it');
    let seen: AbortSignal | undefined;
    const probe = withRecoveryLayer(
      { ...inner, unwrap: async (r) => ((seen = r.signal), inner.unwrap(r)) },
      {},
    );
    await probe.unwrap(request);
    assert.equal(seen, controller.signal);
    assert.equal(reads, 1);
  });

  it('a tampered seal is detected; the KEK path does not depend on the seal', async () => {
    const w = await sealing.wrap({ plaintext: dek });
    const { seal } = parseContainer(w.ciphertext);
    const tampered = Buffer.from(w.ciphertext);
    tampered[tampered.length - seal.length + 60]! ^= 0x80;
    await assert.rejects(createRecoveryV1Service([recovery]).decrypt(tampered), DecryptionFailedError);
    assert.deepEqual(await sealing.unwrap({ ciphertext: tampered }), dek);
  });

  it('a value without a seal is reported as such, not skipped', async () => {
    const plain = await inner.wrap({ plaintext: dek });
    await assert.rejects(createRecoveryV1Service([recovery]).decrypt(plain.ciphertext), { code: 'ERR_RECOVERY_NO_SEAL' });
    const v2 = await inner.wrap({ plaintext: dek, annotationsAllowed: true });
    await assert.rejects(
      createRecoveryV2Service([recovery]).decrypt({ ciphertext: v2.ciphertext, keyID: v2.keyID, annotations: {}, uid: 'u' }),
      { code: 'ERR_RECOVERY_NO_SEAL' },
    );
  });
});

describe('recovery layer passes the backend through', () => {
  it('keeps the optional parts of the backend it wraps (keySet for /metrics, health)', async () => {
    const inner = await createKeyringBackend({ path });
    const layer = withRecoveryLayer(inner, { publicKey: generateRecoveryKey() });
    try {
      assert.ok(inner.keySet !== undefined);
      assert.deepEqual(layer.keySet?.(), inner.keySet());
      assert.equal(layer.health === undefined, inner.health === undefined);
      assert.equal(layer.name, inner.name);
      assert.equal(await layer.currentKeyID(), await inner.currentKeyID());
    } finally {
      await layer.close();
    }
  });
});
