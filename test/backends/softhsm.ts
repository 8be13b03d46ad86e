// Test helper: a SoftHSM2 token of our own in a temporary directory (SOFTHSM2_CONF + softhsm2-util,
// installed by scripts/setup/20-softhsm.sh), and AES-256 keys generated in it through pkcs11js
// C_GenerateKey, as an operator would make them (by label, each with a fresh, greater CKA_ID).

import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pkcs11js from 'pkcs11js';
import { loadPkcs11Module } from '../../src/backends/pkcs11.js';
import { findTool } from './servers.js';

export interface SoftHsmToken {
  readonly dir: string;
  /** The SOFTHSM2_CONF path (already set in this process's environment). */
  readonly conf: string;
  readonly module: string;
  readonly tokenLabel: string;
  readonly pin: string;
  /** A 0600 file holding the PIN and a newline. */
  readonly pinFile: string;
  /** Generates an AES-256 key labelled `label` with the next CKA_ID; returns that CKA_ID. */
  generateKey(label: string): Buffer;
  /** Destroys every key object labelled `label` (C_DestroyObject): the key is gone for good. */
  destroyKey(label: string): number;
  remove(): void;
}

function findModule(): string {
  const candidates = [
    '/usr/lib/softhsm/libsofthsm2.so',
    '/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so',
  ];
  const found = candidates.find((p) => existsSync(p));
  if (found === undefined) {
    throw new Error('libsofthsm2.so not found; run "bash scripts/setup/20-softhsm.sh"');
  }
  return found;
}

export function createSoftHsmToken(tokenLabel = 'atrest-test', pin = '246810'): SoftHsmToken {
  const dir = mkdtempSync(join(tmpdir(), 'atrest-softhsm-'));
  const tokens = join(dir, 'tokens');
  mkdirSync(tokens, { recursive: true });
  const conf = join(dir, 'softhsm2.conf');
  writeFileSync(
    conf,
    `directories.tokendir = ${tokens}\nobjectstore.backend = file\nlog.level = ERROR\n`,
  );
  // SoftHSM reads its configuration from here at C_Initialize (in this process and its children).
  process.env['SOFTHSM2_CONF'] = conf;
  const module = findModule();
  execFileSync(
    findTool('softhsm2-util', '20-softhsm.sh'),
    ['--init-token', '--free', '--label', tokenLabel, '--pin', pin, '--so-pin', '13579246'],
    { env: process.env, stdio: 'ignore' },
  );
  const pinFile = join(dir, 'pin');
  writeFileSync(pinFile, pin + '\n', { mode: 0o600 });
  let nextID = 0x20261128_01;

  return {
    dir,
    conf,
    module,
    tokenLabel,
    pin,
    pinFile,
    generateKey(label) {
      return withAdminSession((admin, session) => {
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
      });
    },
    destroyKey(label) {
      return withAdminSession((admin, session) => {
        admin.C_FindObjectsInit(session, [{ type: pkcs11js.CKA_LABEL, value: label }]);
        const handles = admin.C_FindObjects(session, 100);
        admin.C_FindObjectsFinal(session);
        for (const h of handles) admin.C_DestroyObject(session, h);
        return handles.length;
      });
    },
    remove() {
      rmSync(dir, { recursive: true, force: true });
    },
  };

  function withAdminSession<T>(fn: (admin: pkcs11js.PKCS11, session: Buffer) => T): T {
    // Through the backend's own loader: the library is initialised once per process, for concurrent
    // use, whichever of this helper and a backend in the same process comes first.
    const admin = loadPkcs11Module(module).lib;
    const slot = admin
      .C_GetSlotList(true)
      .find((s) => admin.C_GetTokenInfo(s).label.trim() === tokenLabel)!;
    const session = admin.C_OpenSession(
      slot,
      pkcs11js.CKF_SERIAL_SESSION | pkcs11js.CKF_RW_SESSION,
    );
    try {
      try {
        admin.C_Login(session, pkcs11js.CKU_USER, pin);
      } catch (err) {
        if ((err as { code?: number }).code !== pkcs11js.CKR_USER_ALREADY_LOGGED_IN) throw err;
      }
      return fn(admin, session);
    } finally {
      // Closing our session does not log the process out while a backend still has sessions open.
      admin.C_CloseSession(session);
    }
  }
}
