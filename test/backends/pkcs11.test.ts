// The PKCS#11 backend against SoftHSM2 (Debian's softhsm2, installed by scripts/setup/20-softhsm.sh):
// the test makes its own token in a temporary directory (SOFTHSM2_CONF + softhsm2-util) and its AES
// keys through pkcs11js C_GenerateKey.

import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
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
import { findTool } from './servers.js';

const TOKEN = 'atrest-test';
const KEY_LABEL = 'atrest-kek';
const PIN = '246810';

function findModule(): string {
  const candidates = [
    '/usr/lib/softhsm/libsofthsm2.so',
    '/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so',
  ];
  const found = candidates.find((p) => existsSync(p));
  if (found === undefined)
    throw new Error('libsofthsm2.so not found; run "bash scripts/setup/20-softhsm.sh"');
  return found;
}

const dir = mkdtempSync(join(tmpdir(), 'atrest-softhsm-'));
after(() => rmSync(dir, { recursive: true, force: true }));
const tokens = join(dir, 'tokens');
execFileSync('mkdir', ['-p', tokens]);
writeFileSync(
  join(dir, 'softhsm2.conf'),
  `directories.tokendir = ${tokens}\nobjectstore.backend = file\nlog.level = ERROR\n`,
);
// SoftHSM reads its configuration from here at C_Initialize; the backend under test runs in this process.
process.env['SOFTHSM2_CONF'] = join(dir, 'softhsm2.conf');
const MODULE = findModule();
execFileSync(
  findTool('softhsm2-util', '20-softhsm.sh'),
  ['--init-token', '--free', '--label', TOKEN, '--pin', PIN, '--so-pin', '13579246'],
  { env: process.env, stdio: 'ignore' },
);
const pinFile = join(dir, 'pin');
writeFileSync(pinFile, PIN + '\n', { mode: 0o600 });

let nextID = 0x20261128_01;
/** Generates an AES-256 key in the token, as an operator would (by label, with a fresh CKA_ID). */
function generateKey(label = KEY_LABEL): Buffer {
  const admin = new pkcs11js.PKCS11();
  admin.load(MODULE);
  try {
    admin.C_Initialize();
  } catch (err) {
    if ((err as { code?: number }).code !== pkcs11js.CKR_CRYPTOKI_ALREADY_INITIALIZED) throw err;
  }
  const slot = admin
    .C_GetSlotList(true)
    .find((s) => admin.C_GetTokenInfo(s).label.trim() === TOKEN)!;
  const session = admin.C_OpenSession(slot, pkcs11js.CKF_SERIAL_SESSION | pkcs11js.CKF_RW_SESSION);
  try {
    try {
      admin.C_Login(session, pkcs11js.CKU_USER, PIN);
    } catch (err) {
      if ((err as { code?: number }).code !== pkcs11js.CKR_USER_ALREADY_LOGGED_IN) throw err;
    }
    const id = Buffer.alloc(8);
    id.writeBigUInt64BE(BigInt(nextID++));
    admin.C_GenerateKey(session, { mechanism: pkcs11js.CKM_AES_KEY_GEN }, [
      { type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_SECRET_KEY },
      { type: pkcs11js.CKA_KEY_TYPE, value: pkcs11js.CKK_AES },
      { type: pkcs11js.CKA_VALUE_LEN, value: 32 },
      { type: pkcs11js.CKA_LABEL, value: label },
      { type: pkcs11js.CKA_ID, value: id },
      { type: pkcs11js.CKA_TOKEN, value: true },
      { type: pkcs11js.CKA_PRIVATE, value: true },
      { type: pkcs11js.CKA_SENSITIVE, value: true },
      { type: pkcs11js.CKA_EXTRACTABLE, value: false },
      { type: pkcs11js.CKA_ENCRYPT, value: true },
      { type: pkcs11js.CKA_DECRYPT, value: true },
    ]);
    return id;
  } finally {
    // Closing our session does not log the process out while a backend still has sessions open.
    admin.C_CloseSession(session);
  }
}

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
