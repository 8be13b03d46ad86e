// The aesgcm format and the AES-GCM primitives shared with kms v1 and kms v2. Pure: node:crypto only.
//
//   aesgcm value (after `k8s:enc:aesgcm:v1:<keyName>:`):  [nonce 12][ciphertext n][tag 16]
//   kms v2 seed mode encryptedData:                      [info 32][nonce 12][ciphertext n][tag 16]
//
// The authenticated data is always the exact etcd key (context.authenticatedData).

import {
  createCipheriv,
  createDecipheriv,
  createHmac,
  createSecretKey,
} from 'node:crypto';
import type { KeyObject } from 'node:crypto';
import { DecryptionFailedError, FormatInvalidError } from '../errors.js';
import { defaultRandom, type RandomSource } from '../random.js';
import type { FromStorageResult, TransformContext, Transformer } from './transformer.js';

export const GCM_NONCE_SIZE = 12;
export const GCM_TAG_SIZE = 16;
/** kms v2 seed mode: info, derived key and minimum seed are all 32 bytes ("do not change" upstream). */
export const HKDF_INFO_SIZE = 32;
export const HKDF_MIN_SEED_SIZE = 32;

export const AES_KEY_SIZES: readonly number[] = [16, 24, 32];

export interface RandomOptions {
  readonly random?: RandomSource;
}

export function assertAesKey(key: Uint8Array, what = 'AES key'): void {
  if (!AES_KEY_SIZES.includes(key.length)) {
    throw new RangeError(`${what} must be 16, 24 or 32 bytes, got ${key.length}`);
  }
}

function gcmAlgorithm(keyLength: number): 'aes-128-gcm' | 'aes-192-gcm' | 'aes-256-gcm' {
  return keyLength === 16 ? 'aes-128-gcm' : keyLength === 24 ? 'aes-192-gcm' : 'aes-256-gcm';
}

export function truncated(): FormatInvalidError {
  return new FormatInvalidError(
    'ERR_FORMAT_TRUNCATED',
    'the stored data was shorter than the required size',
  );
}

/** A prepared AES-GCM key: seal gives [nonce 12][ct][tag 16], open takes the same. */
export interface GcmKey {
  seal(nonce: Uint8Array, plaintext: Uint8Array, aad: Uint8Array): Buffer;
  open(data: Uint8Array, aad: Uint8Array): Buffer;
}

/** `singleUse`: the key serves one value (kms v2 derived keys), so skip building a KeyObject. */
export function createGcmKey(key: Uint8Array, singleUse = false): GcmKey {
  assertAesKey(key);
  const algorithm = gcmAlgorithm(key.length);
  const keyObject: KeyObject | Uint8Array = singleUse ? key : createSecretKey(key);
  return {
    seal(nonce, plaintext, aad) {
      if (nonce.length !== GCM_NONCE_SIZE) throw new RangeError('GCM nonce must be 12 bytes');
      const cipher = createCipheriv(algorithm, keyObject, nonce, { authTagLength: GCM_TAG_SIZE });
      cipher.setAAD(aad);
      const head = cipher.update(plaintext);
      const tail = cipher.final();
      return Buffer.concat([nonce, head, tail, cipher.getAuthTag()]);
    },
    open(data, aad) {
      // Upstream refuses fewer than 12 bytes outright; fewer than 12+16 fails Go's Open. Both are
      // reported as truncated: neither can be a value any writer produced.
      if (data.length < GCM_NONCE_SIZE + GCM_TAG_SIZE) throw truncated();
      const nonce = data.subarray(0, GCM_NONCE_SIZE);
      const tag = data.subarray(data.length - GCM_TAG_SIZE);
      const body = data.subarray(GCM_NONCE_SIZE, data.length - GCM_TAG_SIZE);
      try {
        const decipher = createDecipheriv(algorithm, keyObject, nonce, {
          authTagLength: GCM_TAG_SIZE,
        });
        decipher.setAAD(aad);
        decipher.setAuthTag(tag);
        const head = decipher.update(body);
        const tail = decipher.final();
        return tail.length === 0 ? head : Buffer.concat([head, tail]);
      } catch (cause) {
        throw new DecryptionFailedError({ cause });
      }
    },
  };
}

/** The raw aesgcm transformer (no prefix): [nonce 12][ct][tag 16], AAD = etcd key. */
export function createAesGcmTransformer(key: Uint8Array, options: RandomOptions = {}): Transformer {
  const random = options.random ?? defaultRandom;
  const gcm = createGcmKey(key);
  return {
    async transformToStorage(data: Uint8Array, context: TransformContext): Promise<Buffer> {
      return gcm.seal(random(GCM_NONCE_SIZE), data, context.authenticatedData);
    },
    async transformFromStorage(
      data: Uint8Array,
      context: TransformContext,
    ): Promise<FromStorageResult> {
      return { data: gcm.open(data, context.authenticatedData), stale: false };
    },
  };
}

/**
 * HKDF-Expand only (no Extract, no salt), L = 32 = one SHA-256 block: HMAC-SHA256(seed, info || 0x01).
 * node:crypto's hkdf always runs Extract first, so it cannot be used here.
 */
export function deriveSeedKey(seed: Uint8Array, info: Uint8Array): Buffer {
  return createHmac('sha256', seed).update(info).update(COUNTER_ONE).digest();
}

const COUNTER_ONE = Buffer.from([0x01]);

/**
 * kms v2 seed mode (HKDF_SHA256_XNONCE_AES_GCM_SEED): a fresh 32-byte info (hence a fresh DEK) and a fresh
 * nonce per write. Layout: [info 32][nonce 12][ct][tag 16], AAD = etcd key.
 */
export function createAesGcmSeedTransformer(
  seed: Uint8Array,
  options: RandomOptions = {},
): Transformer {
  if (seed.length < HKDF_MIN_SEED_SIZE) {
    throw new RangeError(`seed must be at least ${HKDF_MIN_SEED_SIZE} bytes, got ${seed.length}`);
  }
  const random = options.random ?? defaultRandom;
  const seedCopy = Buffer.from(seed);
  return {
    async transformToStorage(data: Uint8Array, context: TransformContext): Promise<Buffer> {
      const info = random(HKDF_INFO_SIZE);
      const gcm = createGcmKey(deriveSeedKey(seedCopy, info), true);
      return Buffer.concat([
        info,
        gcm.seal(random(GCM_NONCE_SIZE), data, context.authenticatedData),
      ]);
    },
    async transformFromStorage(
      data: Uint8Array,
      context: TransformContext,
    ): Promise<FromStorageResult> {
      if (data.length < HKDF_INFO_SIZE) throw truncated();
      const info = data.subarray(0, HKDF_INFO_SIZE);
      const gcm = createGcmKey(deriveSeedKey(seedCopy, info), true);
      return {
        data: gcm.open(data.subarray(HKDF_INFO_SIZE), context.authenticatedData),
        stale: false,
      };
    },
  };
}
