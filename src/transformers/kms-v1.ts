// The kms v1 (envelope) format: a fresh DEK per write, wrapped by the plugin. Pure: the plugin is reached
// only through the injected KmsV1Service.
//
//   value (after `k8s:enc:kms:v1:<name>:`):  [L u16be][EDEK L][payload]
//   payload, written by >= 1.25 (and here):   [nonce 12][AES-256-GCM ct][tag 16]   AAD = etcd key
//   payload, written by 1.10–1.24:            [IV 16][AES-256-CBC(PKCS#7)]         no AAD (read as stale)

import { AtrestError, FormatInvalidError } from '../errors.js';
import { u16be } from '../bytes.js';
import { createCbcKey, CBC_IV_SIZE } from './aes-cbc.js';
import type { CbcKey } from './aes-cbc.js';
import { AES_KEY_SIZES, createGcmKey, GCM_NONCE_SIZE } from './aes-gcm.js';
import type { GcmKey } from './aes-gcm.js';
import { defaultRandom, type RandomSource } from '../random.js';
import { freshHealth, type KmsHealth } from './kms-health.js';
import { kmsCallFailed, type KmsV1Service } from './kms-services.js';
import { LruCache } from './lru.js';
import { PROVIDER_PREFIXES } from './prefix.js';
import type { PrefixEntry } from './prefix.js';
import { createSingleFlight } from './single-flight.js';
import type { FromStorageResult, TransformContext, Transformer } from './transformer.js';

export const KMS_V1_DEK_SIZE = 32;
export const KMS_V1_EDEK_MAX = 0xffff;
export const KMS_V1_DEFAULT_CACHE_SIZE = 1000;

export interface KmsV1TransformerOptions {
  readonly name: string;
  readonly service: KmsV1Service;
  /** LRU size of the DEK cache (keyed by base64 of the EDEK); negative disables it, as upstream. */
  readonly cacheSize: number;
  readonly random?: RandomSource;
  readonly now?: () => number;
  /** Write the 1.10–1.24 CBC payload instead of GCM (for compatibility tests with old readers). */
  readonly legacyCbcWrites?: boolean;
  /**
   * Fall back to the 1.10–1.24 CBC payload when GCM fails (default true, as upstream). CBC is not
   * authenticated: a damaged GCM value whose payload happens to unpad as CBC (about 1 in 256 of those
   * with a payload length that is a multiple of 16) comes back as other bytes, marked stale. Tools that
   * know no pre-1.25 data exists can turn this off.
   */
  readonly legacyCbcReads?: boolean;
}

/**
 * The raw kms v1 transformer (it reads and writes what follows its prefix) that is also its own prefix
 * entry: `{ prefix: k8s:enc:kms:v1:<name>:, transformer: itself, description }`.
 */
export interface KmsV1Transformer extends Transformer, PrefixEntry {
  readonly prefix: Buffer;
  readonly description: string;
  /** Number of DEKs currently cached. */
  cachedDEKs(): number;
  /** The upstream health check: Encrypt("ping") then Decrypt, cached 20 s / 3 s. */
  healthz(): Promise<KmsHealth>;
}

interface DekTransformers {
  readonly gcm: GcmKey;
  readonly cbc: CbcKey;
}

export function createKmsV1Transformer(options: KmsV1TransformerOptions): KmsV1Transformer {
  const { name, service } = options;
  if (typeof name !== 'string' || name.length === 0) throw new TypeError('kms v1 needs a name');
  if (!Number.isInteger(options.cacheSize) || options.cacheSize === 0) {
    throw new RangeError(
      'kms v1 cacheSize must be a non-zero integer (negative disables the cache)',
    );
  }
  const random = options.random ?? defaultRandom;
  const now = options.now ?? Date.now;
  const cache =
    options.cacheSize > 0 ? new LruCache<string, DekTransformers>(options.cacheSize) : undefined;
  const description = `kms v1 "${name}"`;
  let health: KmsHealth | undefined;

  function dekTransformers(dek: Uint8Array): DekTransformers {
    if (!AES_KEY_SIZES.includes(dek.length)) {
      throw new AtrestError(
        'ERR_KMS_RESPONSE_INVALID',
        `the KMS plugin returned a DEK of ${dek.length} bytes; an AES key has 16, 24 or 32`,
      );
    }
    return { gcm: createGcmKey(dek), cbc: createCbcKey(dek) };
  }

  const decryptOnce = createSingleFlight<DekTransformers>();

  function dekFor(edek: Buffer): Promise<DekTransformers> {
    const cacheKey = edek.toString('base64');
    const hit = cache?.get(cacheKey);
    if (hit) return Promise.resolve(hit);
    return decryptOnce(cacheKey, () => decryptDEK(edek, cacheKey));
  }

  async function decryptDEK(edek: Buffer, cacheKey: string): Promise<DekTransformers> {
    let dek: Buffer;
    try {
      dek = await service.decrypt(edek);
    } catch (cause) {
      throw kmsCallFailed('failed to decrypt DEK', cause);
    }
    const t = dekTransformers(dek);
    dek.fill(0);
    cache?.set(cacheKey, t);
    return t;
  }

  const self: KmsV1Transformer = {
    prefix: Buffer.from(`${PROVIDER_PREFIXES.kmsV1}${name}:`, 'utf8'),
    description,
    get transformer(): Transformer {
      return self;
    },

    async transformToStorage(data: Uint8Array, context: TransformContext): Promise<Buffer> {
      const dek = random(KMS_V1_DEK_SIZE);
      let edek: Buffer;
      try {
        edek = await service.encrypt(dek);
      } catch (cause) {
        throw kmsCallFailed('failed to encrypt DEK', cause);
      }
      if (edek.length > KMS_V1_EDEK_MAX) {
        throw new AtrestError(
          'ERR_KMS_RESPONSE_INVALID',
          `the KMS plugin returned an encrypted DEK of ${edek.length} bytes; at most 65535 fit`,
        );
      }
      const t = dekTransformers(dek);
      const payload = options.legacyCbcWrites
        ? t.cbc.seal(random(CBC_IV_SIZE), data)
        : t.gcm.seal(random(GCM_NONCE_SIZE), data, context.authenticatedData);
      cache?.set(Buffer.from(edek).toString('base64'), t);
      return Buffer.concat([u16be(edek.length), edek, payload]);
    },

    async transformFromStorage(
      data: Uint8Array,
      context: TransformContext,
    ): Promise<FromStorageResult> {
      const { edek, payload } = splitKmsV1(data);
      const t = await dekFor(edek);
      let gcmError: unknown;
      try {
        return { data: t.gcm.open(payload, context.authenticatedData), stale: false };
      } catch (error) {
        gcmError = error;
      }
      if (options.legacyCbcReads === false) throw gcmError;
      // Values written by 1.10–1.24 carry a CBC payload; reading one means a rewrite would change it.
      try {
        return { data: t.cbc.open(payload), stale: true };
      } catch {
        throw gcmError;
      }
    },

    cachedDEKs(): number {
      return cache?.size ?? 0;
    },

    async healthz(): Promise<KmsHealth> {
      const at = now();
      const fresh = freshHealth(health, at);
      if (fresh) return fresh;
      let error: AtrestError | undefined;
      let cipher: Buffer | undefined;
      try {
        cipher = await service.encrypt(Buffer.from('ping'));
      } catch (cause) {
        error = kmsCallFailed(
          `failed to perform encrypt section of the healthz check for KMS Provider ${name}`,
          cause,
        );
      }
      if (cipher !== undefined) {
        try {
          await service.decrypt(cipher);
        } catch (cause) {
          error = kmsCallFailed(
            `failed to perform decrypt section of the healthz check for KMS Provider ${name}`,
            cause,
          );
        }
      }
      health = error ? { ok: false, error, checkedAt: at } : { ok: true, checkedAt: at };
      return health;
    },
  };
  return self;
}

/** Splits [L u16be][EDEK L][payload]; refuses values too short for their own length prefix. */
export function splitKmsV1(data: Uint8Array): { edek: Buffer; payload: Buffer } {
  const buf = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  if (buf.length < 2) throw invalidEnvelope();
  const len = buf.readUInt16BE(0);
  if (buf.length < 2 + len) throw invalidEnvelope();
  return { edek: buf.subarray(2, 2 + len), payload: buf.subarray(2 + len) };
}

function invalidEnvelope(): FormatInvalidError {
  return new FormatInvalidError(
    'ERR_FORMAT_TRUNCATED',
    'invalid data encountered by envelope transformer: failed to read uint16 length prefixed data',
  );
}
