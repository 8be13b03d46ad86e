// The secretbox format: NaCl crypto_secretbox (XSalsa20-Poly1305), "easy" layout. Pure.
//
//   value (after `k8s:enc:secretbox:v1:<keyName>:`):  [nonce 24][Poly1305 tag 16][XSalsa20 ciphertext n]
//
// No authenticated data: the value is not bound to its etcd key (as upstream).

import { xsalsa20poly1305 } from '@noble/ciphers/salsa.js';
import { DecryptionFailedError } from '../errors.js';
import { truncated } from './aes-gcm.js';
import { defaultRandom } from '../random.js';
import type { RandomOptions } from './aes-gcm.js';
import type { FromStorageResult, TransformContext, Transformer } from './transformer.js';

export const SECRETBOX_KEY_SIZE = 32;
export const SECRETBOX_NONCE_SIZE = 24;
export const SECRETBOX_TAG_SIZE = 16;

/** The raw secretbox transformer (no prefix). The etcd key is ignored. */
export function createSecretboxTransformer(
  key: Uint8Array,
  options: RandomOptions = {},
): Transformer {
  if (key.length !== SECRETBOX_KEY_SIZE) {
    throw new RangeError(`secretbox key must be 32 bytes, got ${key.length}`);
  }
  const random = options.random ?? defaultRandom;
  const keyCopy = Uint8Array.from(key);
  return {
    async transformToStorage(data: Uint8Array, _context: TransformContext): Promise<Buffer> {
      const nonce = random(SECRETBOX_NONCE_SIZE);
      // noble returns [tag 16][ciphertext], the NaCl "easy" layout upstream stores.
      const sealed = xsalsa20poly1305(keyCopy, Uint8Array.from(nonce)).encrypt(data);
      return Buffer.concat([nonce, sealed]);
    },
    async transformFromStorage(
      data: Uint8Array,
      _context: TransformContext,
    ): Promise<FromStorageResult> {
      if (data.length < SECRETBOX_NONCE_SIZE + SECRETBOX_TAG_SIZE) throw truncated();
      const nonce = Uint8Array.from(data.subarray(0, SECRETBOX_NONCE_SIZE));
      try {
        const plain = xsalsa20poly1305(keyCopy, nonce).decrypt(data.subarray(SECRETBOX_NONCE_SIZE));
        return {
          data: Buffer.from(plain.buffer, plain.byteOffset, plain.byteLength),
          stale: false,
        };
      } catch (cause) {
        throw new DecryptionFailedError({ cause });
      }
    },
  };
}
