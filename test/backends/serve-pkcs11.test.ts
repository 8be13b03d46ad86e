// `atrest serve --backend pkcs11 --backend-config FILE` end to end: the real CLI over its UNIX socket,
// in front of a SoftHSM2 token of its own, the PIN read from a file named in the configuration.

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { waitFor } from './suite.js';
import { startPkcs11Plugin, type Pkcs11Plugin } from './pkcs11-plugin.js';

const LABEL = 'atrest-kek';

describe('atrest serve with the pkcs11 backend', () => {
  let plugin: Pkcs11Plugin;
  const status = () => plugin.kmsV2.status();

  before(async () => {
    plugin = await startPkcs11Plugin({ keyLabel: LABEL, extraConfig: ['  refreshInterval: 300ms'] });
  });

  after(async () => {
    await plugin?.stop();
  });

  it('reports the key label and CKA_ID as key_id and round-trips v2 and v1beta1', async () => {
    const s = await status();
    assert.equal(s.keyID, `pkcs11:${LABEL}:0000002026112801`);
    const seed = randomBytes(32);
    const { kmsV1, kmsV2 } = plugin;
    const enc = await kmsV2.encrypt(seed, 'u');
    assert.equal(enc.keyID, s.keyID);
    const dec = await kmsV2.decrypt({
      ciphertext: enc.ciphertext,
      uid: 'u',
      keyID: enc.keyID,
      annotations: enc.annotations,
    });
    assert.deepEqual(dec, seed);
    const dek = randomBytes(32);
    assert.deepEqual(await kmsV1.decrypt(await kmsV1.encrypt(dek)), dek);
  });

  it('reports a key generated in the token later as the new key_id, and still decrypts the old one', async () => {
    const dek = randomBytes(32);
    const old = await plugin.kmsV1.encrypt(dek);
    const id = plugin.token.generateKey(LABEL);
    await waitFor(
      'Status to show the new key',
      async () => (await status()).keyID === `pkcs11:${LABEL}:${id.toString('hex')}`,
    );
    assert.deepEqual(await plugin.kmsV1.decrypt(old), dek);
  });
});
