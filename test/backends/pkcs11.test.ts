// The PKCS#11 backend against SoftHSM2 (Debian's softhsm2, installed by scripts/setup/20-softhsm.sh):
// the test makes its own token and AES keys (softhsm.ts).

import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { symlinkSync } from 'node:fs';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import pkcs11js from 'pkcs11js';
import { BackendError } from '../../src/errors.js';
import {
  createPkcs11Service,
  classifyPkcs11Error,
  loadPkcs11Module,
} from '../../src/backends/pkcs11.js';
import {
  createRemoteBackend,
  type RemoteBackendOptions,
  type RemoteKeyBackend,
} from '../../src/backends/remote.js';
import { runBackendSuite, waitFor } from './suite.js';
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

  it('initialises the module once per process, for calls from several threads', () => {
    const m = loadPkcs11Module(MODULE);
    assert.equal(m, loadPkcs11Module(MODULE));
    assert.equal(m.threadSafe, true, 'C_Initialize with CKF_OS_LOCKING_OK, by this process');
  });

  it('calls a library initialised before it (flags unknown) from the main thread only, and still works', async (t) => {
    // The same library through another path: dlopen gives the already initialised one, so
    // C_Initialize answers CKR_CRYPTOKI_ALREADY_INITIALIZED, as with a library some other code in
    // the process set up.
    const alias = join(token.dir, 'alias-libsofthsm2.so');
    symlinkSync(MODULE, alias);
    const m = loadPkcs11Module(alias);
    assert.equal(m.threadSafe, false);
    const service = createPkcs11Service(
      { module: alias, tokenLabel: TOKEN, keyLabel: KEY_LABEL, sessions: 3 },
      { pin: readPin },
    );
    const b = createRemoteBackend(service, { background: false, localKEK: false });
    t.after(() => b.close());
    const plaintexts = Array.from({ length: 20 }, () => randomBytes(32));
    const wrapped = await Promise.all(plaintexts.map((plaintext) => b.wrap({ plaintext })));
    const back = await Promise.all(wrapped.map((w) => b.unwrap({ ciphertext: w.ciphertext })));
    assert.deepEqual(back, plaintexts);
  });

  it('close() lets the calls in flight finish and fails the waiting ones', async () => {
    const b = open({ background: false });
    const keyID = await b.currentKeyID();
    const settled: string[] = [];
    const plaintexts = Array.from({ length: 30 }, () => randomBytes(32));
    const calls = plaintexts.map((plaintext) =>
      b.wrap({ plaintext }).then(
        async (w) => {
          settled.push('wrapped');
          return w;
        },
        (err: unknown) => {
          assert.ok(err instanceof BackendError, String(err));
          assert.match(err.message, /the backend is closed/);
          settled.push('refused');
          return undefined;
        },
      ),
    );
    // Once one call has finished (a native completion, after every microtask), all the others
    // are in the session pool: in flight on a session or waiting for one.
    await Promise.race(calls);
    await b.close();
    // A session closed under a running C_Encrypt would fail that call (or crash): every call either
    // finished soundly or was refused as closed — nothing else.
    const wrapped = await Promise.all(calls);
    assert.equal(settled.length, 30);
    assert.ok(settled.includes('wrapped'), 'the calls that had a session finished');
    await assert.rejects(b.wrap({ plaintext: randomBytes(32) }), /the backend is closed/);
    // What was wrapped before close() is sound: a fresh backend unwraps it.
    const b2 = open({ background: false });
    try {
      for (const [i, w] of wrapped.entries()) {
        if (w === undefined) continue;
        assert.equal(w.keyID, keyID);
        assert.deepEqual(await b2.unwrap({ ciphertext: w.ciphertext }), plaintexts[i]);
      }
    } finally {
      await b2.close();
    }
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
      // Let the background refresh (every 50 ms after a failure) try three more times.
      const tried = b.remoteCalls().resolve;
      await waitFor('three background refreshes', () => b.remoteCalls().resolve >= tried + 3);
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
