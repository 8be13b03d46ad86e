// The PKCS#11 backend against SoftHSM2 (Debian's softhsm2, installed by scripts/setup/20-softhsm.sh):
// the test makes its own token and AES keys (softhsm.ts).

import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import pkcs11js from 'pkcs11js';
import { BackendError } from '../../src/errors.js';
import { createPkcs11Service, classifyPkcs11Error } from '../../src/backends/pkcs11.js';
import {
  createRemoteBackend,
  type RemoteBackendOptions,
  type RemoteKeyBackend,
} from '../../src/backends/remote.js';
import { runBackendSuite } from './suite.js';
import { replaceEnvelopeKeyID } from './envelope-edit.js';
import { createSoftHsmToken } from './softhsm.js';

const KEY_LABEL = 'atrest-kek';
const token = createSoftHsmToken();
after(() => token.remove());
const { module: MODULE, tokenLabel: TOKEN, pin: PIN, pinFile } = token;
const generateKey = (label = KEY_LABEL): Buffer => token.generateKey(label);

generateKey();

function open(
  options: RemoteBackendOptions = {},
  pin: () => Promise<string> = readPin,
): RemoteKeyBackend {
  const service = createPkcs11Service(
    { module: MODULE, tokenLabel: TOKEN, keyLabel: KEY_LABEL, sessions: 3 },
    { pin },
  );
  return createRemoteBackend(service, {
    refreshIntervalMs: 200,
    refreshRetryMs: 200,
    localKEK: false,
    ...options,
  });
}

async function readPin(): Promise<string> {
  return (await readFile(pinFile, 'utf8')).trim();
}

const unknownKeyID = (c: Buffer): Buffer =>
  replaceEnvelopeKeyID(c, `pkcs11:${KEY_LABEL}:ffffffffffffffff`);

runBackendSuite('pkcs11 (SoftHSM2, direct)', {
  open: async () => open(),
  rotate: async () => void generateKey(),
  rotationNoticedBy: 'background',
  withUnknownKeyID: unknownKeyID,
});

runBackendSuite('pkcs11 (SoftHSM2, local KEK tier)', {
  open: async () => open({ localKEK: {} }),
  rotate: async () => void generateKey(),
  rotationNoticedBy: 'background',
  withUnknownKeyID: unknownKeyID,
});

describe('pkcs11 backend', () => {
  it('derives the key id from the label and the greatest CKA_ID', async (t) => {
    const b = open({ background: false });
    t.after(() => b.close());
    const id = generateKey();
    assert.equal(await b.currentKeyID(), `pkcs11:${KEY_LABEL}:${id.toString('hex')}`);
  });

  it('wraps concurrently through its session pool', async (t) => {
    const b = open({ background: false });
    t.after(() => b.close());
    const plaintexts = Array.from({ length: 40 }, () => randomBytes(32));
    const wrapped = await Promise.all(plaintexts.map((plaintext) => b.wrap({ plaintext })));
    const back = await Promise.all(wrapped.map((w) => b.unwrap({ ciphertext: w.ciphertext })));
    assert.deepEqual(back, plaintexts);
  });

  it('never retries a wrong PIN, even from the background refresh, until reload', async () => {
    let logins = 0;
    let pin = '000000';
    const b = open({ refreshRetryMs: 50 }, async () => {
      logins++;
      return pin;
    });
    try {
      for (let i = 0; i < 3; i++) {
        await assert.rejects(b.wrap({ plaintext: randomBytes(32) }), (err: unknown) => {
          assert.ok(err instanceof BackendError);
          assert.equal(err.kind, 'user-induced');
          assert.match(err.message, /rejected the PIN \(CKR_PIN_INCORRECT\).*not retried/);
          assert.ok(!err.message.includes('000000'), 'the PIN never appears in a message');
          return true;
        });
      }
      await new Promise((r) => setTimeout(r, 500));
      assert.equal(logins, 1, 'exactly one login attempt with the wrong PIN');
      assert.equal(b.health().kind, 'user-induced');
      pin = PIN;
      await b.reload();
      const plaintext = randomBytes(32);
      const w = await b.wrap({ plaintext });
      assert.deepEqual(await b.unwrap({ ciphertext: w.ciphertext }), plaintext);
      assert.equal(logins, 2);
      assert.equal(b.health().ok, true);
    } finally {
      await b.close();
    }
  });

  it('reports a missing key label as user-induced', async (t) => {
    const service = createPkcs11Service(
      { module: MODULE, tokenLabel: TOKEN, keyLabel: 'no-such-key' },
      { pin: readPin },
    );
    const b = createRemoteBackend(service, { background: false });
    t.after(() => b.close());
    await assert.rejects(b.currentKeyID(), (err: unknown) => {
      assert.ok(err instanceof BackendError);
      assert.equal(err.kind, 'user-induced');
      assert.match(err.message, /no AES key labelled "no-such-key"/);
      return true;
    });
  });

  it('classifies Cryptoki return values', () => {
    assert.equal(classifyPkcs11Error({ code: pkcs11js.CKR_PIN_INCORRECT }), 'user-induced');
    assert.equal(classifyPkcs11Error({ code: pkcs11js.CKR_ENCRYPTED_DATA_INVALID }), 'corruption');
    assert.equal(classifyPkcs11Error({ code: pkcs11js.CKR_DEVICE_REMOVED }), 'unavailable');
    assert.equal(classifyPkcs11Error(new Error('x')), 'other');
  });
});
