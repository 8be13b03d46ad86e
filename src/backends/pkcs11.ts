// A PKCS#11 token (an HSM, or SoftHSM2 in the tests) as a key manager, through pkcs11js: an AES key
// found by label wraps DEKs with CKM_AES_GCM inside the token. Every Cryptoki error becomes a
// BackendError here; no pkcs11js type escapes this file.
//
// key_id = `pkcs11:<label>:<hex CKA_ID>`. Several keys may share the label: the one with the greatest
// CKA_ID wraps. Rotation is: generate a new AES key with the same label and a greater CKA_ID (for
// example the date, 20261128); the background refresh picks it up, old keys keep decrypting because
// each ciphertext names its key's CKA_ID. A key without CKA_ID is refused (its id would not be stable).
//
// Remote ciphertext = [iv 12][ciphertext n][tag 16]; GCM with a 128-bit tag and the envelope header
// (which contains the key id) as additional authenticated data.
//
// A wrong PIN is never retried: tokens lock after a few wrong PINs. After CKR_PIN_INCORRECT (or
// any other PIN error) every call fails at once, without touching the token, until reload().

import pkcs11js from 'pkcs11js';
import { randomBytes } from 'node:crypto';
import { AtrestError, BackendError, type BackendErrorKind } from '../errors.js';
import type { KekService } from './remote.js';

export const PKCS11_BACKEND = 'pkcs11';
const KEY_ID_PREFIX = 'pkcs11:';
const GCM_IV_BYTES = 12;
const GCM_TAG_BYTES = 16;

export interface Pkcs11Config {
  /** Path of the PKCS#11 module (.so). */
  readonly module: string;
  /** The token, by label (as softhsm2-util --init-token --label). */
  readonly tokenLabel: string;
  /** Label of the AES key(s) that wrap. */
  readonly keyLabel: string;
  /** Sessions opened in parallel (default 4). */
  readonly sessions?: number;
}

export interface Pkcs11Deps {
  /** Reads the user PIN (from a file or the environment; see config.ts). Called on each login. */
  readonly pin: () => Promise<string>;
  readonly random?: (n: number) => Buffer;
}

type Handle = Buffer;

const PIN_ERRORS = new Set([
  pkcs11js.CKR_PIN_INCORRECT,
  pkcs11js.CKR_PIN_INVALID,
  pkcs11js.CKR_PIN_LEN_RANGE,
  pkcs11js.CKR_PIN_EXPIRED,
  pkcs11js.CKR_PIN_LOCKED,
]);
const UNAVAILABLE = new Set([
  pkcs11js.CKR_SESSION_HANDLE_INVALID,
  pkcs11js.CKR_SESSION_CLOSED,
  pkcs11js.CKR_SESSION_COUNT,
  pkcs11js.CKR_DEVICE_REMOVED,
  pkcs11js.CKR_DEVICE_ERROR,
  pkcs11js.CKR_DEVICE_MEMORY,
  pkcs11js.CKR_TOKEN_NOT_PRESENT,
  pkcs11js.CKR_TOKEN_NOT_RECOGNIZED,
  pkcs11js.CKR_USER_NOT_LOGGED_IN,
  pkcs11js.CKR_KEY_HANDLE_INVALID,
  pkcs11js.CKR_OBJECT_HANDLE_INVALID,
  pkcs11js.CKR_FUNCTION_FAILED,
]);
const CORRUPTION = new Set([
  pkcs11js.CKR_ENCRYPTED_DATA_INVALID,
  pkcs11js.CKR_ENCRYPTED_DATA_LEN_RANGE,
]);
const USER_INDUCED = new Set([
  pkcs11js.CKR_KEY_FUNCTION_NOT_PERMITTED,
  pkcs11js.CKR_KEY_TYPE_INCONSISTENT,
  pkcs11js.CKR_MECHANISM_INVALID,
  pkcs11js.CKR_MECHANISM_PARAM_INVALID,
  pkcs11js.CKR_USER_TYPE_INVALID,
  pkcs11js.CKR_USER_PIN_NOT_INITIALIZED,
]);

/** The Cryptoki return value in a pkcs11js error, if any. */
export function pkcs11Code(err: unknown): number | undefined {
  const code = (err as { code?: unknown })?.code;
  return typeof code === 'number' ? code : undefined;
}

export function classifyPkcs11Error(err: unknown): BackendErrorKind {
  const code = pkcs11Code(err);
  if (code === undefined) return 'other';
  if (PIN_ERRORS.has(code) || USER_INDUCED.has(code)) return 'user-induced';
  if (CORRUPTION.has(code)) return 'corruption';
  if (UNAVAILABLE.has(code)) return 'unavailable';
  return 'other';
}

function codeName(code: number | undefined): string {
  if (code === undefined) return 'no CKR code';
  for (const [k, v] of Object.entries(pkcs11js)) {
    if (k.startsWith('CKR_') && v === code) return k;
  }
  return `CKR 0x${code.toString(16)}`;
}

function toBackendError(op: string, err: unknown): BackendError {
  if (err instanceof BackendError) return err;
  const code = pkcs11Code(err);
  return new BackendError(
    PKCS11_BACKEND,
    classifyPkcs11Error(err),
    `${op} failed (${codeName(code)})`,
    {
      cause: err,
    },
  );
}

function parseKeyID(keyID: string): { label: string; id: Buffer } {
  const m = /^pkcs11:(.+):([0-9a-f]+)$/.exec(keyID);
  if (m === null || m[2]!.length % 2 !== 0) {
    throw new AtrestError('ERR_KEY_UNKNOWN', `key id ${keyID} was not made by the pkcs11 backend`);
  }
  return { label: m[1]!, id: Buffer.from(m[2]!, 'hex') };
}

function compareIDs(a: Buffer, b: Buffer): number {
  return a.length !== b.length ? a.length - b.length : Buffer.compare(a, b);
}

export function createPkcs11Service(config: Pkcs11Config, deps: Pkcs11Deps): KekService {
  const random = deps.random ?? randomBytes;
  const poolSize = Math.max(1, config.sessions ?? 4);
  let lib: pkcs11js.PKCS11 | undefined;
  let slot: Handle | undefined;
  let loggedIn = false;
  let pinRejected: BackendError | undefined;
  const free: Handle[] = [];
  let open = 0;
  const waiters: ((s: Handle) => void)[] = [];
  const handles = new Map<string, Handle>();
  let connecting: Promise<void> | undefined;
  let closed = false;
  let busy = 0;
  let idle: (() => void) | undefined;

  function ensureLib(): pkcs11js.PKCS11 {
    if (lib !== undefined) return lib;
    const l = new pkcs11js.PKCS11();
    try {
      l.load(config.module);
    } catch (err) {
      throw new BackendError(
        PKCS11_BACKEND,
        'user-induced',
        `cannot load the PKCS#11 module ${config.module}`,
        {
          cause: err,
        },
      );
    }
    try {
      l.C_Initialize();
    } catch (err) {
      if (pkcs11Code(err) !== pkcs11js.CKR_CRYPTOKI_ALREADY_INITIALIZED)
        throw toBackendError('C_Initialize', err);
    }
    lib = l;
    return l;
  }

  function findSlot(l: pkcs11js.PKCS11): Handle {
    for (const s of l.C_GetSlotList(true)) {
      if (l.C_GetTokenInfo(s).label.trim() === config.tokenLabel) return s;
    }
    throw new BackendError(
      PKCS11_BACKEND,
      'user-induced',
      `no token labelled "${config.tokenLabel}" is present`,
    );
  }

  async function login(l: pkcs11js.PKCS11, session: Handle): Promise<void> {
    if (loggedIn) return;
    const pin = await deps.pin();
    try {
      l.C_Login(session, pkcs11js.CKU_USER, pin);
    } catch (err) {
      const code = pkcs11Code(err);
      if (code === pkcs11js.CKR_USER_ALREADY_LOGGED_IN) {
        loggedIn = true;
        return;
      }
      if (code !== undefined && PIN_ERRORS.has(code)) {
        pinRejected = new BackendError(
          PKCS11_BACKEND,
          'user-induced',
          `the token rejected the PIN (${codeName(code)}); fix the PIN file and reload — not retried, tokens lock after a few wrong PINs`,
          { cause: err },
        );
        throw pinRejected;
      }
      throw toBackendError('C_Login', err);
    }
    loggedIn = true;
  }

  async function connect(): Promise<void> {
    const l = ensureLib();
    if (slot === undefined) slot = findSlot(l);
    let s: Handle;
    try {
      s = l.C_OpenSession(slot, pkcs11js.CKF_SERIAL_SESSION | pkcs11js.CKF_RW_SESSION);
    } catch (err) {
      throw toBackendError('C_OpenSession', err);
    }
    open++;
    try {
      await login(l, s);
    } catch (err) {
      l.C_CloseSession(s);
      open--;
      throw err;
    }
    free.push(s);
  }

  async function acquire(): Promise<{ l: pkcs11js.PKCS11; s: Handle }> {
    if (closed) throw new BackendError(PKCS11_BACKEND, 'other', 'the backend is closed');
    if (pinRejected !== undefined) throw pinRejected;
    // Every caller waits for the one login in progress: a session opened before it would be public.
    if (lib === undefined || !loggedIn) {
      connecting ??= connect().finally(() => {
        connecting = undefined;
      });
      await connecting;
    }
    const l = lib!;
    const s = free.pop();
    if (s !== undefined) return { l, s };
    if (open < poolSize) {
      open++;
      try {
        return {
          l,
          s: l.C_OpenSession(slot!, pkcs11js.CKF_SERIAL_SESSION | pkcs11js.CKF_RW_SESSION),
        };
      } catch (err) {
        open--;
        throw toBackendError('C_OpenSession', err);
      }
    }
    return { l, s: await new Promise<Handle>((resolve) => waiters.push(resolve)) };
  }

  function release(s: Handle, broken: boolean): void {
    if (broken) {
      // The session (or the whole login) is gone: close it and let the next call reopen.
      try {
        lib?.C_CloseSession(s);
      } catch {
        // already closed
      }
      open--;
      handles.clear();
      if (open === 0) loggedIn = false;
      const w = waiters.shift();
      if (w !== undefined) {
        acquire().then(
          ({ s: fresh }) => w(fresh),
          () => waiters.unshift(w),
        );
      }
      return;
    }
    const w = waiters.shift();
    if (w !== undefined) w(s);
    else free.push(s);
  }

  async function withSession<T>(
    op: string,
    fn: (l: pkcs11js.PKCS11, s: Handle) => Promise<T> | T,
  ): Promise<T> {
    const { l, s } = await acquire();
    busy++;
    let broken = false;
    try {
      return await fn(l, s);
    } catch (err) {
      if (err instanceof AtrestError && !(err instanceof BackendError)) throw err;
      const e = toBackendError(op, err);
      broken = e.kind === 'unavailable';
      throw e;
    } finally {
      busy--;
      release(s, broken || closed);
      if (busy === 0) idle?.();
    }
  }

  function findKeys(l: pkcs11js.PKCS11, s: Handle, label: string, id?: Buffer): Handle[] {
    const template: pkcs11js.Template = [
      { type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_SECRET_KEY },
      { type: pkcs11js.CKA_KEY_TYPE, value: pkcs11js.CKK_AES },
      { type: pkcs11js.CKA_LABEL, value: label },
    ];
    if (id !== undefined) template.push({ type: pkcs11js.CKA_ID, value: id });
    l.C_FindObjectsInit(s, template);
    try {
      return l.C_FindObjects(s, 64);
    } finally {
      l.C_FindObjectsFinal(s);
    }
  }

  function keyHandle(l: pkcs11js.PKCS11, s: Handle, keyID: string): Handle {
    const cached = handles.get(keyID);
    if (cached !== undefined) return cached;
    const { label, id } = parseKeyID(keyID);
    const found = findKeys(l, s, label, id);
    if (found.length === 0) {
      throw new AtrestError('ERR_KEY_UNKNOWN', `the token has no AES key for key id ${keyID}`);
    }
    handles.set(keyID, found[0]!);
    return found[0]!;
  }

  function gcm(iv: Buffer, aad: Buffer): pkcs11js.Mechanism {
    const parameter: pkcs11js.AesGCM = {
      type: pkcs11js.CK_PARAMS_AES_GCM,
      iv,
      aad,
      ivBits: GCM_IV_BYTES * 8,
      tagBits: GCM_TAG_BYTES * 8,
    };
    return { mechanism: pkcs11js.CKM_AES_GCM, parameter };
  }

  function run(fn: (cb: (error: Error, data: Buffer) => void) => void): Promise<Buffer> {
    return new Promise((resolve, reject) =>
      fn((error, data) => (error ? reject(error) : resolve(data))),
    );
  }

  return {
    name: PKCS11_BACKEND,

    async resolveKeyID() {
      return withSession('find key', (l, s) => {
        let best: Buffer | undefined;
        for (const h of findKeys(l, s, config.keyLabel)) {
          const [attr] = l.C_GetAttributeValue(s, h, [{ type: pkcs11js.CKA_ID }]);
          const id = attr?.value;
          if (id === undefined || id.length === 0) {
            throw new BackendError(
              PKCS11_BACKEND,
              'user-induced',
              `an AES key labelled "${config.keyLabel}" has no CKA_ID; give every key a unique CKA_ID`,
            );
          }
          if (best === undefined || compareIDs(id, best) > 0) best = Buffer.from(id);
        }
        if (best === undefined) {
          throw new BackendError(
            PKCS11_BACKEND,
            'user-induced',
            `no AES key labelled "${config.keyLabel}" on token "${config.tokenLabel}"`,
          );
        }
        return `${KEY_ID_PREFIX}${config.keyLabel}:${best.toString('hex')}`;
      });
    },

    async encrypt(keyID, plaintext, aad) {
      parseKeyID(keyID);
      return withSession('C_Encrypt', async (l, s) => {
        const key = keyHandle(l, s, keyID);
        const iv = random(GCM_IV_BYTES);
        l.C_EncryptInit(s, gcm(iv, aad), key);
        const out = await run((cb) =>
          l.C_Encrypt(s, plaintext, Buffer.alloc(plaintext.length + GCM_TAG_BYTES), cb),
        );
        return Buffer.concat([iv, out]);
      });
    },

    async decrypt(keyID, ciphertext, aad) {
      parseKeyID(keyID);
      if (ciphertext.length < GCM_IV_BYTES + GCM_TAG_BYTES) {
        throw new BackendError(PKCS11_BACKEND, 'corruption', 'ciphertext is too short for AES-GCM');
      }
      return withSession('C_Decrypt', async (l, s) => {
        const key = keyHandle(l, s, keyID);
        const iv = ciphertext.subarray(0, GCM_IV_BYTES);
        l.C_DecryptInit(s, gcm(iv, aad), key);
        const body = ciphertext.subarray(GCM_IV_BYTES);
        return run((cb) => l.C_Decrypt(s, body, Buffer.alloc(body.length), cb));
      });
    },

    async reload() {
      // A new PIN file may fix a rejected PIN: allow exactly one new login attempt.
      pinRejected = undefined;
    },

    async close() {
      closed = true;
      // Let calls in flight finish; each closes its session on release.
      if (busy > 0) await new Promise<void>((resolve) => (idle = resolve));
      const l = lib;
      if (l === undefined) return;
      for (const s of free.splice(0)) {
        try {
          l.C_CloseSession(s);
        } catch {
          // closing anyway
        }
      }
      // No C_Finalize: the module is process-wide, and another backend instance may still use it.
      lib = undefined;
      slot = undefined;
      open = 0;
      loggedIn = false;
      handles.clear();
    },
  };
}
