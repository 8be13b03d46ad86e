// The keyring KeyBackend: AES-256-GCM key-encryption keys read from a local 0600 JSON file
// (keyring-file.ts), wrapped DEKs in the self-describing format of keyring-wrap.ts. reload() (SIGHUP)
// re-reads the file and swaps keys only if the new file is valid, consistent with the old one, and its
// active key passes a wrap/unwrap self-test (keyring-check.ts); otherwise the loaded keys stay.

import { defaultRandom } from '../random.js';
import { AtrestError, BackendError } from '../errors.js';
import { bytesEqual } from '../bytes.js';
import type { KeyBackend, UnwrapRequest, WrapRequest, Wrapped } from './backend.js';
import { readKeyringFile, type Keyring, type RandomBytes } from './keyring-file.js';
import { WRAP_NONCE_BYTES, openWrapped, parseWrapped, sealWrapped } from './keyring-wrap.js';
import { keyringFingerprint, probeKey } from './keyring-check.js';

export const KEYRING_BACKEND_NAME = 'keyring';

export interface KeyringBackendOptions {
  readonly path: string;
  /** Refuse files readable by group/other (always true outside tests of that very check). */
  readonly requirePrivate?: boolean;
  readonly random?: RandomBytes;
}

export interface KeyringBackend extends KeyBackend {
  /** What is loaded now (ids and creation times are not secret; secrets stay inside). */
  describe(): {
    readonly active: string;
    readonly ids: readonly string[];
    readonly development: boolean;
    /** keyring-check.ts: equal on every node that holds the same keys; reveals none of them. */
    readonly fingerprint: string;
  };
}

/**
 * Refuses a new keyring that would give an already known key id different key material: a key id
 * must never name two keys, or data wrapped before the change would silently become unreadable.
 */
function checkConsistent(previous: Keyring, next: Keyring, path: string): void {
  const old = new Map(previous.keys.map((k) => [k.id, k.secret]));
  for (const k of next.keys) {
    const before = old.get(k.id);
    if (before !== undefined && !bytesEqual(before, k.secret)) {
      throw new AtrestError(
        'ERR_KEYRING_INVALID',
        `keyring ${path}: key ${k.id} has different key material than the loaded key with that id`,
      );
    }
  }
}

export async function createKeyringBackend(
  options: KeyringBackendOptions,
): Promise<KeyringBackend> {
  const random = options.random ?? defaultRandom;
  const requirePrivate = options.requirePrivate ?? true;
  let keyring = await readKeyringFile(options.path, { requirePrivate });
  let byID = new Map(keyring.keys.map((k) => [k.id, k.secret]));
  probeKey(keyring, keyring.active, random);
  let fingerprint = keyringFingerprint(keyring);
  let closed = false;

  const assertOpen = (): void => {
    if (closed) throw new BackendError(KEYRING_BACKEND_NAME, 'unavailable', 'backend is closed');
  };

  return {
    name: KEYRING_BACKEND_NAME,

    async currentKeyID() {
      assertOpen();
      return keyring.active;
    },

    async wrap(request: WrapRequest): Promise<Wrapped> {
      assertOpen();
      const keyID = keyring.active;
      const key = byID.get(keyID)!;
      const ciphertext = sealWrapped(keyID, key, random(WRAP_NONCE_BYTES), request.plaintext);
      return { ciphertext, keyID };
    },

    async unwrap(request: UnwrapRequest): Promise<Buffer> {
      assertOpen();
      const parsed = parseWrapped(request.ciphertext);
      if (request.keyID !== undefined && request.keyID !== parsed.keyID) {
        throw new AtrestError(
          'ERR_KEY_ID_MISMATCH',
          `the request key_id (${request.keyID}) does not match the key id in the ciphertext (${parsed.keyID})`,
        );
      }
      const key = byID.get(parsed.keyID);
      if (key === undefined) {
        throw new AtrestError(
          'ERR_KEY_UNKNOWN',
          `key ${parsed.keyID} is not in the keyring (retired, or from another keyring)`,
        );
      }
      return openWrapped(parsed, key);
    },

    async reload() {
      assertOpen();
      const next = await readKeyringFile(options.path, { requirePrivate });
      checkConsistent(keyring, next, options.path);
      // Never start wrapping with a key this plugin cannot unwrap with: the new active key is tried
      // before anything is swapped, so a failure leaves the loaded keys in service.
      probeKey(next, next.active, random);
      keyring = next;
      byID = new Map(next.keys.map((k) => [k.id, k.secret]));
      fingerprint = keyringFingerprint(next);
    },

    keySet() {
      return { fingerprint, keys: keyring.keys.length };
    },

    async close() {
      closed = true;
      for (const k of keyring.keys) k.secret.fill(0);
      byID = new Map();
    },

    describe() {
      return {
        active: keyring.active,
        ids: keyring.keys.map((k) => k.id),
        development: keyring.development,
        fingerprint,
      };
    },
  };
}
