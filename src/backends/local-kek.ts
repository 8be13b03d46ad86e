// The local KEK tier: a random AES-256 key generated in memory, wrapped once by the remote key
// manager, then used to seal DEKs locally (AES-256-GCM), so 10,000 Encrypt calls cost one remote
// call instead of 10,000. The remotely wrapped local KEK travels with every DEK it sealed (see
// envelope.ts), so after a restart each old local KEK costs one remote unwrap, then is cached.
// Holds keys only in memory; no I/O of its own (the remote calls are passed in).

import { createCipheriv, createDecipheriv } from 'node:crypto';
import { DecryptionFailedError } from '../errors.js';
import {
  LOCAL_KEK_BYTES,
  LOCAL_NONCE_BYTES,
  LOCAL_TAG_BYTES,
  kekAAD,
  kekDigest,
  localAAD,
} from './envelope.js';

export interface LocalKekOptions {
  /** A local KEK seals at most this many DEKs, then a new one is made (default 100,000). */
  readonly maxUses: number;
  /** …or once it is this old (default 1 hour). */
  readonly maxAgeMs: number;
  /** Unwrapped old local KEKs kept in memory (default 1,024; least recently used go first). */
  readonly cacheSize: number;
}

export const DEFAULT_LOCAL_KEK_OPTIONS: LocalKekOptions = {
  maxUses: 100_000,
  maxAgeMs: 60 * 60 * 1000,
  cacheSize: 1024,
};

export interface LocalKekDeps {
  /** Remote wrap of a new local KEK under the remote key `keyID`, bound to `aad`. */
  readonly remoteWrap: (keyID: string, kek: Buffer, aad: Buffer) => Promise<Buffer>;
  /** Remote unwrap of a local KEK wrapped by `remoteWrap`. */
  readonly remoteUnwrap: (keyID: string, wrapped: Buffer, aad: Buffer) => Promise<Buffer>;
  readonly random: (n: number) => Buffer;
  readonly now: () => number;
}

export interface ActiveKek {
  readonly keyID: string;
  readonly wrappedKEK: Buffer;
  readonly digest: Buffer;
}

export interface SealedDEK extends ActiveKek {
  readonly nonce: Buffer;
  /** ciphertext ‖ tag */
  readonly sealedWithTag: Buffer;
}

export interface LocalKekTier {
  /** Seals a DEK under the current local KEK for remote key `keyID` (making one if needed). */
  seal(keyID: string, plaintext: Uint8Array): Promise<SealedDEK>;
  /** Opens a DEK sealed by `seal`, here or in an earlier process. */
  open(
    keyID: string,
    wrappedKEK: Buffer,
    digest: Buffer,
    nonce: Buffer,
    sealed: Buffer,
    tag: Buffer,
  ): Promise<Buffer>;
  /** Drops the current local KEK so the next seal makes a new one (e.g. after a reload). */
  retireCurrent(): void;
  /** Local KEKs unwrapped and cached (for metrics/tests). */
  cachedCount(): number;
  /** Forgets every key held in memory (current and cached). */
  clear(): void;
}

interface Current extends ActiveKek {
  readonly kek: Buffer;
  readonly created: number;
  uses: number;
}

export function createLocalKekTier(options: LocalKekOptions, deps: LocalKekDeps): LocalKekTier {
  let current: Current | undefined;
  let creating: Promise<Current> | undefined;
  let creatingFor: string | undefined;
  // key = keyID ‖ 0x00 ‖ digest hex; Map keeps insertion order, which we use as LRU order.
  const cache = new Map<string, Buffer>();
  const opening = new Map<string, Promise<Buffer>>();

  const cacheKey = (keyID: string, digest: Buffer): string =>
    `${keyID}\u0000${digest.toString('hex')}`;

  function remember(key: string, kek: Buffer): void {
    cache.delete(key);
    cache.set(key, kek);
    while (cache.size > options.cacheSize) {
      // Dropped, not wiped: a seal or open in flight may still hold it (see clear()).
      cache.delete(cache.keys().next().value as string);
    }
  }

  function usable(c: Current | undefined, keyID: string): c is Current {
    return (
      c !== undefined &&
      c.keyID === keyID &&
      c.uses < options.maxUses &&
      deps.now() - c.created < options.maxAgeMs
    );
  }

  async function create(keyID: string): Promise<Current> {
    const kek = deps.random(LOCAL_KEK_BYTES);
    const wrappedKEK = await deps.remoteWrap(keyID, kek, kekAAD(keyID));
    const digest = kekDigest(wrappedKEK);
    const made: Current = { keyID, kek, wrappedKEK, digest, created: deps.now(), uses: 0 };
    remember(cacheKey(keyID, digest), kek);
    return made;
  }

  async function currentFor(keyID: string): Promise<Current> {
    while (!usable(current, keyID)) {
      if (creating === undefined || creatingFor !== keyID) {
        const pending = create(keyID);
        creating = pending;
        creatingFor = keyID;
        pending
          .then(
            (made) => {
              current = made;
            },
            () => undefined,
          )
          .finally(() => {
            if (creating === pending) creating = undefined;
          });
      }
      // Every caller waiting on one creation shares its outcome, failure included: an outage
      // costs one remote attempt (with its retries), not one per waiting request.
      await creating;
    }
    return current;
  }

  return {
    async seal(keyID, plaintext) {
      const c = await currentFor(keyID);
      c.uses++;
      const nonce = deps.random(LOCAL_NONCE_BYTES);
      const cipher = createCipheriv('aes-256-gcm', c.kek, nonce);
      cipher.setAAD(localAAD(keyID, c.digest));
      const body = Buffer.concat([cipher.update(plaintext), cipher.final(), cipher.getAuthTag()]);
      return { keyID, wrappedKEK: c.wrappedKEK, digest: c.digest, nonce, sealedWithTag: body };
    },

    async open(keyID, wrappedKEK, digest, nonce, sealed, tag) {
      if (tag.length !== LOCAL_TAG_BYTES || nonce.length !== LOCAL_NONCE_BYTES) {
        throw new DecryptionFailedError();
      }
      const key = cacheKey(keyID, digest);
      let kek = cache.get(key);
      if (kek !== undefined) {
        remember(key, kek);
      } else {
        let pending = opening.get(key);
        if (pending === undefined) {
          pending = deps.remoteUnwrap(keyID, wrappedKEK, kekAAD(keyID)).then((k) => {
            if (k.length !== LOCAL_KEK_BYTES) throw new DecryptionFailedError();
            remember(key, k);
            return k;
          });
          opening.set(key, pending);
          pending.then(
            () => opening.delete(key),
            () => opening.delete(key),
          );
        }
        kek = await pending;
      }
      try {
        const decipher = createDecipheriv('aes-256-gcm', kek, nonce);
        decipher.setAAD(localAAD(keyID, digest));
        decipher.setAuthTag(tag);
        return Buffer.concat([decipher.update(sealed), decipher.final()]);
      } catch (err) {
        throw new DecryptionFailedError({ cause: err });
      }
    },

    retireCurrent() {
      current = undefined;
    },

    cachedCount() {
      return cache.size;
    },

    clear() {
      // Drop, do not wipe: a seal already past currentFor() may still hold the current key, and
      // zeroing it in place would seal that DEK under an all-zero key.
      cache.clear();
      current = undefined;
    },
  };
}
