// The kms v2 transformer: kube-apiserver's reads and writes of the kms v2 format, composed from its
// parts — the format and cache key (kms-v2-format.ts), the write state with its seed rotation on a
// key_id change (kms-v2-write-state.ts) and Status polling (kms-v2-status.ts). This file holds the
// read path and its decrypt cache. Pure: the plugin is reached only through the injected
// KmsV2Service; time, randomness, uids and timers are injected.

import { randomUUID } from 'node:crypto';
import {
  DEK_SOURCE_HKDF_SHA256_XNONCE_AES_GCM_SEED,
  EncryptedObject,
} from '../proto/encrypted-object.js';
import { defaultRandom, type RandomSource } from '../random.js';
import type { KmsHealth } from './kms-health.js';
import { kmsCallFailed, type KmsV2Service } from './kms-services.js';
import {
  decodeEncryptedObject,
  kmsV2CacheKey,
  transformerForSource,
  type DecodedEncryptedObject,
} from './kms-v2-format.js';
import { createStatusChecks, type PollingHandle, type PollingOptions } from './kms-v2-status.js';
import {
  createWriteStateMachine,
  noWriteState,
  type KmsV2StateInfo,
} from './kms-v2-write-state.js';
import { PROVIDER_PREFIXES } from './prefix.js';
import type { PrefixEntry } from './prefix.js';
import { createSingleFlight } from './single-flight.js';
import type { FromStorageResult, TransformContext, Transformer } from './transformer.js';

// The kms v2 format's public names, from the modules that define them.
export { decodeEncryptedObject, KMS_V2_SEED_SIZE } from './kms-v2-format.js';
export type { DecodedEncryptedObject } from './kms-v2-format.js';
export {
  KMS_V2_ACCEPTED_VERSIONS,
  KMS_V2_POLL_HEALTHY_MS,
  KMS_V2_POLL_UNHEALTHY_MS,
} from './kms-v2-status.js';
export type { PollingHandle, PollingOptions, Timers } from './kms-v2-status.js';
export { KMS_V2_WRITE_STATE_TTL_MS } from './kms-v2-write-state.js';
export type { KmsV2StateInfo } from './kms-v2-write-state.js';

/** Decrypted DEKs/seeds are reused this long (cacheTTL). */
export const KMS_V2_DECRYPT_CACHE_TTL_MS = 24 * 60 * 60_000;

export interface KmsV2TransformerOptions {
  readonly name: string;
  readonly service: KmsV2Service;
  readonly now?: () => number;
  readonly random?: RandomSource;
  /** Request ids for Encrypt/Decrypt calls; UUIDv4 by default. */
  readonly uid?: () => string;
  /**
   * Read without a successful Status+Encrypt first. kube-apiserver refuses reads until then; offline tools
   * (disaster-recovery decrypt) may only be able to Decrypt. Writes always need a valid state.
   */
  readonly allowReadWithoutStatus?: boolean;
}

/**
 * The raw kms v2 transformer (it reads and writes what follows its prefix) that is also its own prefix
 * entry: `{ prefix: k8s:enc:kms:v2:<name>:, transformer: itself, description }`.
 */
export interface KmsV2Transformer extends Transformer, PrefixEntry {
  readonly prefix: Buffer;
  readonly description: string;
  /** Calls Status now, validates it and rotates the seed if the key_id changed (or there is no state). */
  refreshStatus(): Promise<KmsHealth>;
  /** refreshStatus with the upstream result cache: reused 20 s after success, 3 s after failure. */
  healthz(): Promise<KmsHealth>;
  /** Background Status polling: every healthyIntervalMs (60 s), every unhealthyIntervalMs (10 s) after a failure. */
  startPolling(options?: PollingOptions): PollingHandle;
  currentState(): KmsV2StateInfo | undefined;
  /** Number of decrypted DEKs/seeds in the read cache. */
  cachedSources(): number;
}

/** Decrypted sources by cache key, each kept KMS_V2_DECRYPT_CACHE_TTL_MS from its last insert. */
interface SourceCache {
  insert(key: string, transformer: Transformer): void;
  get(key: string): Transformer | undefined;
  readonly size: number;
}

function createSourceCache(now: () => number): SourceCache {
  const cache = new Map<string, { transformer: Transformer; expiresAt: number }>();
  return {
    insert(key, transformer) {
      const at = now();
      // Expired entries are dropped whenever something is inserted (as upstream's expiring cache does).
      for (const [k, e] of cache) if (e.expiresAt < at) cache.delete(k);
      cache.set(key, { transformer, expiresAt: at + KMS_V2_DECRYPT_CACHE_TTL_MS });
    },
    get(key) {
      const e = cache.get(key);
      if (e === undefined) return undefined;
      if (e.expiresAt < now()) {
        cache.delete(key);
        return undefined;
      }
      return e.transformer;
    },
    get size() {
      return cache.size;
    },
  };
}

export function createKmsV2Transformer(options: KmsV2TransformerOptions): KmsV2Transformer {
  const { name, service } = options;
  if (typeof name !== 'string' || name.length === 0) throw new TypeError('kms v2 needs a name');
  const now = options.now ?? Date.now;
  const random = options.random ?? defaultRandom;
  const newUID = options.uid ?? (() => randomUUID());
  const cache = createSourceCache(now);
  const writeState = createWriteStateMachine({
    name,
    service,
    now,
    random,
    onNewSeed: (key, transformer) => cache.insert(key, transformer),
  });
  const status = createStatusChecks({
    name,
    service,
    now,
    newUID,
    rotateOnKeyIDChange: writeState.rotateOnKeyIDChange,
  });
  const decryptOnce = createSingleFlight<Transformer>();

  function readTransformerFor(obj: DecodedEncryptedObject): Promise<Transformer> {
    const key = kmsV2CacheKey(
      obj.encryptedDEKSourceType,
      obj.encryptedDEKSource,
      obj.keyID,
      obj.annotations,
    );
    const hit = cache.get(key);
    if (hit) return Promise.resolve(hit);
    return decryptOnce(key, () => decryptSource(obj, key));
  }

  async function decryptSource(obj: DecodedEncryptedObject, key: string): Promise<Transformer> {
    let plain: Buffer;
    try {
      plain = await service.decrypt({
        ciphertext: obj.encryptedDEKSource,
        uid: newUID(),
        keyID: obj.keyID,
        annotations: obj.annotations,
      });
    } catch (cause) {
      throw kmsCallFailed('failed to decrypt DEK', cause);
    }
    const transformer = transformerForSource(obj.encryptedDEKSourceType, plain, random);
    plain.fill(0);
    cache.insert(key, transformer);
    return transformer;
  }

  const self: KmsV2Transformer = {
    prefix: Buffer.from(`${PROVIDER_PREFIXES.kmsV2}${name}:`, 'utf8'),
    description: `kms v2 "${name}"`,
    get transformer(): Transformer {
      return self;
    },

    async transformToStorage(data: Uint8Array, context: TransformContext): Promise<Buffer> {
      const current = writeState.forWrite();
      const encryptedData = await current.transformer.transformToStorage(data, context);
      const out = EncryptedObject.encode({
        encryptedData,
        keyID: current.keyID,
        encryptedDEKSource: current.encryptedDEKSource,
        annotations: current.annotations,
        encryptedDEKSourceType: current.sourceType,
      });
      // Keeps the current seed warm in the read cache, as upstream does on every write.
      cache.insert(current.cacheKey, current.transformer);
      return out;
    },

    async transformFromStorage(
      data: Uint8Array,
      context: TransformContext,
    ): Promise<FromStorageResult> {
      const obj = decodeEncryptedObject(data);
      const current = writeState.current();
      if (current === undefined && !options.allowReadWithoutStatus) throw noWriteState(name);
      const transformer = await readTransformerFor(obj);
      const result = await transformer.transformFromStorage(obj.encryptedData, context);
      // Without a state (offline reads) only the source type can be judged.
      const stale =
        current === undefined
          ? obj.encryptedDEKSourceType !== DEK_SOURCE_HKDF_SHA256_XNONCE_AES_GCM_SEED
          : obj.keyID !== current.keyID || obj.encryptedDEKSourceType !== current.sourceType;
      return { data: result.data, stale };
    },

    refreshStatus: status.refreshStatus,
    healthz: status.healthz,
    startPolling: status.startPolling,
    currentState: writeState.info,
    cachedSources: () => cache.size,
  };
  return self;
}
