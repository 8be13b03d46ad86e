// The aescbc format, also the payload of kms v1 values written by Kubernetes 1.10–1.24. Pure.
//
//   value (after `k8s:enc:aescbc:v1:<keyName>:`):  [IV 16][AES-CBC(PKCS#7(plaintext))]
//
// No MAC and no authenticated data: a modified value can decrypt to different bytes. That is the format,
// not a bug here; it is why aescbc is not recommended.

import { createCipheriv, createDecipheriv, createSecretKey } from 'node:crypto';
import { FormatInvalidError } from '../errors.js';
import { assertAesKey, truncated } from './aes-gcm.js';
import { defaultRandom } from '../random.js';
import type { RandomOptions } from './aes-gcm.js';
import type { FromStorageResult, TransformContext, Transformer } from './transformer.js';

export const CBC_IV_SIZE = 16;
export const CBC_BLOCK_SIZE = 16;

function cbcAlgorithm(keyLength: number): 'aes-128-cbc' | 'aes-192-cbc' | 'aes-256-cbc' {
  return keyLength === 16 ? 'aes-128-cbc' : keyLength === 24 ? 'aes-192-cbc' : 'aes-256-cbc';
}

export interface CbcKey {
  seal(iv: Uint8Array, plaintext: Uint8Array): Buffer;
  open(data: Uint8Array): Buffer;
}

export function createCbcKey(key: Uint8Array): CbcKey {
  assertAesKey(key);
  const algorithm = cbcAlgorithm(key.length);
  const keyObject = createSecretKey(key);
  return {
    seal(iv, plaintext) {
      if (iv.length !== CBC_IV_SIZE) throw new RangeError('CBC IV must be 16 bytes');
      // node's automatic padding is PKCS#7: p = 16 - (len mod 16) bytes of value p, 1 <= p <= 16.
      const cipher = createCipheriv(algorithm, keyObject, iv);
      return Buffer.concat([iv, cipher.update(plaintext), cipher.final()]);
    },
    open(data) {
      if (data.length < CBC_IV_SIZE) throw truncated();
      const body = data.subarray(CBC_IV_SIZE);
      if (body.length % CBC_BLOCK_SIZE !== 0) {
        throw new FormatInvalidError(
          'ERR_FORMAT_MALFORMED',
          'the stored data is not a multiple of the block size',
        );
      }
      const decipher = createDecipheriv(algorithm, keyObject, data.subarray(0, CBC_IV_SIZE));
      decipher.setAutoPadding(false);
      const plain = Buffer.concat([decipher.update(body), decipher.final()]);
      return unpadLikeUpstream(plain);
    },
  };
}

/**
 * PKCS#7 removal with upstream's exact acceptance rule: 1 <= p <= len(decrypted) and the last p bytes all
 * equal p. Upstream does not require p <= 16, so neither do we (node's own unpadding would); this only
 * matters for values no writer produced.
 */
function unpadLikeUpstream(plain: Buffer): Buffer {
  const p = plain.length === 0 ? 0 : plain[plain.length - 1]!;
  if (p === 0 || p > plain.length) {
    throw new FormatInvalidError(
      'ERR_FORMAT_MALFORMED',
      'invalid PKCS7 data (empty or not padded)',
    );
  }
  for (let i = plain.length - p; i < plain.length; i++) {
    if (plain[i] !== p)
      throw new FormatInvalidError('ERR_FORMAT_MALFORMED', 'invalid padding on input');
  }
  return plain.subarray(0, plain.length - p);
}

/** The raw aescbc transformer (no prefix). The etcd key is ignored: CBC has no authenticated data. */
export function createAesCbcTransformer(key: Uint8Array, options: RandomOptions = {}): Transformer {
  const random = options.random ?? defaultRandom;
  const cbc = createCbcKey(key);
  return {
    async transformToStorage(data: Uint8Array, _context: TransformContext): Promise<Buffer> {
      return cbc.seal(random(CBC_IV_SIZE), data);
    },
    async transformFromStorage(
      data: Uint8Array,
      _context: TransformContext,
    ): Promise<FromStorageResult> {
      return { data: cbc.open(data), stale: false };
    },
  };
}
