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
import { defaultRandom } from '../random.js';
import { AtrestError, BackendError, type BackendErrorKind } from '../errors.js';
import type { KekService } from './remote.js';
import { createSessionPool } from './session-pool.js';

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

/** A Cryptoki library loaded and initialised in this process, and how it may be called. */
export interface Pkcs11Module {
  readonly lib: pkcs11js.PKCS11;
  /**
   * True when this process initialised the library with CKF_OS_LOCKING_OK: calls on different
   * sessions may then run on several threads at once. False when the library was initialised
   * before us without our knowledge (its flags unknown) or cannot lock: every call then runs
   * on the main thread, one at a time.
   */
  readonly threadSafe: boolean;
}

// A Cryptoki library is initialised once per process, whatever the number of PKCS11 objects or
// backend instances: one entry per module path, shared. No C_Finalize: another backend instance (or
// a reload) may still use the library, and it would be finalised under it.
const modules = new Map<string, Pkcs11Module>();

/**
 * Loads the module at `path` and initialises it for concurrent use (CKF_OS_LOCKING_OK), once per
 * process. Anything else in this process that uses the same library should load it through here.
 */
export function loadPkcs11Module(path: string): Pkcs11Module {
  const known = modules.get(path);
  if (known !== undefined) return known;
  const lib = new pkcs11js.PKCS11();
  try {
    lib.load(path);
  } catch (err) {
    throw new BackendError(PKCS11_BACKEND, 'user-induced', `cannot load the PKCS#11 module ${path}`, {
      cause: err,
    });
  }
  let threadSafe = true;
  try {
    // Without CKF_OS_LOCKING_OK (C_Initialize with no arguments) the library may assume one thread
    // and skip its own locking; pkcs11js runs C_Encrypt/C_Decrypt on libuv's thread pool, several at
    // once, and the library's heap got corrupted under load.
    lib.C_Initialize({ flags: pkcs11js.CKF_OS_LOCKING_OK });
  } catch (err) {
    const code = pkcs11Code(err);
    if (code === pkcs11js.CKR_CRYPTOKI_ALREADY_INITIALIZED) {
      // Someone else in this process initialised it, with flags we cannot know.
      threadSafe = false;
    } else if (code === pkcs11js.CKR_CANT_LOCK) {
      // The library cannot lock with OS primitives: use it as a single-threaded library.
      threadSafe = false;
      try {
        lib.C_Initialize();
      } catch (err2) {
        if (pkcs11Code(err2) !== pkcs11js.CKR_CRYPTOKI_ALREADY_INITIALIZED)
          throw toBackendError('C_Initialize', err2);
      }
    } else {
      throw toBackendError('C_Initialize', err);
    }
  }
  const loaded: Pkcs11Module = { lib, threadSafe };
  modules.set(path, loaded);
  return loaded;
}

/** Return values after which a session may still hold an active operation: close it, do not reuse it. */
const LEAVES_OPERATION_ACTIVE = new Set([
  pkcs11js.CKR_BUFFER_TOO_SMALL,
  pkcs11js.CKR_OPERATION_ACTIVE,
]);

function isSessionBroken(err: unknown): boolean {
  if (!(err instanceof BackendError)) return false;
  if (err.kind === 'unavailable') return true;
  if (err.cause === undefined) return false;
  const code = pkcs11Code(err.cause);
  // No Cryptoki code (0 or none): the binding failed, maybe between init and the operation.
  return code === undefined || code === 0 || LEAVES_OPERATION_ACTIVE.has(code);
}

export function createPkcs11Service(config: Pkcs11Config, deps: Pkcs11Deps): KekService {
  const random = deps.random ?? defaultRandom;
  let mod: Pkcs11Module | undefined;
  let slot: Handle | undefined;
  /** Sessions this service has open; PKCS#11 logs the application out when the last one closes. */
  let sessionsOpen = 0;
  let loggedIn = false;
  let loggingIn: Promise<void> | undefined;
  let pinRejected: BackendError | undefined;
  // Object handles are valid in every session of this application, so one cache serves all.
  const handles = new Map<string, Handle>();

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

  function closeSession(s: Handle): void {
    try {
      mod?.lib.C_CloseSession(s);
    } catch {
      // already closed
    }
    sessionsOpen--;
    // A session is closed only when broken or at close: the key may be gone too.
    handles.clear();
    if (sessionsOpen === 0) loggedIn = false;
  }

  async function openSession(): Promise<Handle> {
    if (pinRejected !== undefined) throw pinRejected;
    mod ??= loadPkcs11Module(config.module);
    const l = mod.lib;
    let s: Handle;
    try {
      slot ??= findSlot(l);
      s = l.C_OpenSession(slot, pkcs11js.CKF_SERIAL_SESSION | pkcs11js.CKF_RW_SESSION);
    } catch (err) {
      throw toBackendError('C_OpenSession', err);
    }
    sessionsOpen++;
    try {
      // Every opener waits for the one login in progress: one PIN read, one C_Login.
      if (!loggedIn) {
        loggingIn ??= login(l, s).finally(() => {
          loggingIn = undefined;
        });
        await loggingIn;
      }
    } catch (err) {
      closeSession(s);
      throw err;
    }
    return s;
  }

  const pool = createSessionPool<Handle>({
    size: Math.max(1, config.sessions ?? 4),
    open: openSession,
    close: closeSession,
    closedError: () => new BackendError(PKCS11_BACKEND, 'other', 'the backend is closed'),
    abortedError: (reason) =>
      (reason as { name?: unknown } | undefined)?.name === 'TimeoutError'
        ? new BackendError(PKCS11_BACKEND, 'unavailable', 'no PKCS#11 session became free in time')
        : new BackendError(PKCS11_BACKEND, 'other', 'the call was cancelled', { cause: reason }),
  });

  /** Runs `fn` on a session that no other call uses until `fn` settles. */
  function withSession<T>(
    op: string,
    signal: AbortSignal | undefined,
    fn: (m: Pkcs11Module, s: Handle) => Promise<T> | T,
  ): Promise<T> {
    return pool.use(
      async (s) => {
        try {
          return await fn(mod!, s);
        } catch (err) {
          throw err instanceof AtrestError ? err : toBackendError(op, err);
        }
      },
      isSessionBroken,
      signal,
    );
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

  /**
   * C_Encrypt or C_Decrypt of `input` into a fresh buffer: on a thread-pool thread when the library
   * locks for itself, else on the main thread. The session stays held by the caller until this
   * settles; `input` and the output stay referenced until the native call has returned.
   */
  function crypt(
    m: Pkcs11Module,
    op: 'C_Encrypt' | 'C_Decrypt',
    s: Handle,
    input: Buffer,
    outLength: number,
  ): Promise<Buffer> {
    const out = Buffer.alloc(outLength);
    if (!m.threadSafe) return Promise.resolve(m.lib[op](s, input, out));
    return new Promise((resolve, reject) =>
      m.lib[op](s, input, out, (error, data) => {
        void input;
        return error ? reject(error) : resolve(data);
      }),
    );
  }

  return {
    name: PKCS11_BACKEND,

    async resolveKeyID(signal) {
      return withSession('find key', signal, ({ lib: l }, s) => {
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

    async encrypt(keyID, plaintext, aad, signal) {
      parseKeyID(keyID);
      return withSession('C_Encrypt', signal, async (m, s) => {
        const key = keyHandle(m.lib, s, keyID);
        const iv = random(GCM_IV_BYTES);
        m.lib.C_EncryptInit(s, gcm(iv, aad), key);
        const out = await crypt(m, 'C_Encrypt', s, plaintext, plaintext.length + GCM_TAG_BYTES);
        return Buffer.concat([iv, out]);
      });
    },

    async decrypt(keyID, ciphertext, aad, signal) {
      parseKeyID(keyID);
      if (ciphertext.length < GCM_IV_BYTES + GCM_TAG_BYTES) {
        throw new BackendError(PKCS11_BACKEND, 'corruption', 'ciphertext is too short for AES-GCM');
      }
      return withSession('C_Decrypt', signal, async (m, s) => {
        const key = keyHandle(m.lib, s, keyID);
        const iv = ciphertext.subarray(0, GCM_IV_BYTES);
        m.lib.C_DecryptInit(s, gcm(iv, aad), key);
        const body = ciphertext.subarray(GCM_IV_BYTES);
        return crypt(m, 'C_Decrypt', s, body, body.length);
      });
    },

    async reload() {
      // A new PIN file may fix a rejected PIN: allow exactly one new login attempt.
      pinRejected = undefined;
    },

    async close() {
      // Refuses new calls, fails waiting ones, and resolves once the calls in flight have returned
      // their sessions and every session is closed: no native call outlives close().
      await pool.close();
      slot = undefined;
    },
  };
}
