// The kms v2 storage format: the EncryptedObject after the prefix, checked on every read; the DEK or
// seed a stored value names; and the key of the read cache. No plugin calls, no state.
//
//   value (after `k8s:enc:kms:v2:<name>:`) = protobuf EncryptedObject {
//     1 encryptedData  = [info 32][nonce 12][ct][tag 16]   (type 1, written here and by >= 1.29)
//                      | [nonce 12][ct][tag 16]            (type 0, written by 1.25–1.28; read only)
//     2 keyID, 3 encryptedDEKSource, 4 annotations, 5 encryptedDEKSourceType (0 is not emitted) }
//   AAD = etcd key; type 1 DEK = HMAC-SHA256(seed, info || 0x01); type 0 DEK = Decrypt(source).

import { createHash } from 'node:crypto';
import { AtrestError, FormatInvalidError } from '../errors.js';
import { u16be, u32be } from '../bytes.js';
import { DEK_SOURCE_AES_GCM_KEY, EncryptedObject } from '../proto/encrypted-object.js';
import {
  AES_KEY_SIZES,
  createAesGcmSeedTransformer,
  createAesGcmTransformer,
  HKDF_MIN_SEED_SIZE,
} from './aes-gcm.js';
import type { RandomSource } from '../random.js';
import { validateEncryptedObject, type EncryptedObjectFields } from './kms-v2-validation.js';
import type { Transformer } from './transformer.js';

/** Bytes of the seed this writer generates (type 1, HKDF_SHA256_XNONCE_AES_GCM_SEED). */
export const KMS_V2_SEED_SIZE = 32;

export type DecodedEncryptedObject = EncryptedObjectFields<Buffer>;

/** Decodes and validates a stored EncryptedObject (what follows the kms v2 prefix). */
export function decodeEncryptedObject(data: Uint8Array): DecodedEncryptedObject {
  const obj = EncryptedObject.decode(data);
  const problems = validateEncryptedObject(obj);
  if (problems.length > 0) {
    throw new FormatInvalidError(
      'ERR_FORMAT_MALFORMED',
      `invalid EncryptedObject: ${problems.join('; ')}`,
    );
  }
  return obj;
}

/**
 * The transformer for a DEK source the plugin decrypted: type 0 is an AES-GCM key, type 1 a seed the
 * per-value DEKs are derived from. A source of the wrong size is the plugin's fault, reported as such.
 */
export function transformerForSource(
  sourceType: number,
  plain: Buffer,
  random: RandomSource,
): Transformer {
  if (sourceType === DEK_SOURCE_AES_GCM_KEY) {
    if (!AES_KEY_SIZES.includes(plain.length)) {
      throw new AtrestError(
        'ERR_KMS_RESPONSE_INVALID',
        `the KMS plugin returned a DEK of ${plain.length} bytes; an AES key has 16, 24 or 32`,
      );
    }
    return createAesGcmTransformer(plain, { random });
  }
  if (plain.length < HKDF_MIN_SEED_SIZE) {
    throw new AtrestError(
      'ERR_KMS_RESPONSE_INVALID',
      `the KMS plugin returned a seed of ${plain.length} bytes; at least ${HKDF_MIN_SEED_SIZE} are required`,
    );
  }
  return createAesGcmSeedTransformer(plain, { random });
}

/**
 * The decrypt cache key, hashed with SHA-256 (all lengths big-endian):
 * u32(type) u16len(source) source u16len(keyID) keyID [u32(count) {u16len(k) k u16len(v) v} sorted by key]
 * The annotations part is present only when there are annotations.
 */
export function kmsV2CacheKey(
  sourceType: number,
  encryptedDEKSource: Uint8Array,
  keyID: string,
  annotations: Readonly<Record<string, Uint8Array>>,
): string {
  const keyIDBytes = Buffer.from(keyID, 'utf8');
  const parts: Uint8Array[] = [
    u32be(sourceType),
    u16be(encryptedDEKSource.length),
    encryptedDEKSource,
    u16be(keyIDBytes.length),
    keyIDBytes,
  ];
  const keys = Object.keys(annotations).sort(compareUtf8);
  if (keys.length > 0) {
    parts.push(u32be(keys.length));
    for (const k of keys) {
      const kb = Buffer.from(k, 'utf8');
      const v = annotations[k]!;
      parts.push(u16be(kb.length), kb, u16be(v.length), v);
    }
  }
  const hash = createHash('sha256');
  for (const p of parts) hash.update(p);
  return hash.digest('hex');
}

/** Go sorts strings by bytes; JS by UTF-16 code units. They differ outside the BMP, so compare bytes. */
function compareUtf8(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a, 'utf8'), Buffer.from(b, 'utf8'));
}
